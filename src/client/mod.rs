//! The blocking client: one connection to a credstore, over TLS or, for a
//! development store, plain TCP.
//!
//! Blocking I/O keeps `cred item read` a single thread with nothing to
//! start up but the TCP connection and one TLS handshake.

pub mod config;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};
use thiserror::Error;

pub use config::{ClientConfig, ClientCredentials, ServerEntry, Trust};

use crate::protocol::{
    ALPN, Auth, ErrorKind, FrameError, FrameSeal, Operation, Request, Response, decode_payload,
    read_payload, write_message,
};
use crate::tls::{self, Fingerprint, PinnedVerifier};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Long enough for an unlock, whose KDF takes a deliberate fraction of a
/// second, on a slow and busy host.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call failed. Variants map to `cred`'s exit codes.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {address}: {why}")]
    Connect { address: String, why: String },
    #[error("TLS with {address} failed: {why}")]
    Tls { address: String, why: String },
    #[error(
        "the server's certificate fingerprint {actual} does not match the pinned {pinned}; \
         if the certificate was replaced on purpose, run cred configure again"
    )]
    FingerprintMismatch {
        pinned: Fingerprint,
        actual: Fingerprint,
    },
    #[error("talking to the store failed")]
    Protocol(#[source] FrameError),
    #[error("the store at {address} did not answer in time")]
    Timeout { address: String },
    #[error("{message}")]
    Server { kind: ErrorKind, message: String },
    #[error("the store sent an answer that does not fit the request")]
    UnexpectedResponse,
}

impl ClientError {
    /// The server-reported kind, if the server answered with an error.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self {
            Self::Server { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// An open connection to the store.
pub struct Connection {
    stream: Box<dyn Stream>,
    /// Seals frame bodies under a key from the TLS session; none on plain TCP.
    seal: Option<FrameSeal>,
    address: String,
    /// Set for plain TCP, to explain the garbage a TLS store answers with.
    plain_to: Option<String>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects and, unless the entry says plain TCP, completes the TLS
    /// handshake and checks that the server speaks our protocol.
    pub fn open(server: &ServerEntry, trust: &Trust) -> Result<Self, ClientError> {
        Self::open_within(server, trust, IO_TIMEOUT)
    }

    /// Like [`Connection::open`], with every connect, read and write
    /// bounded by `timeout`.
    pub fn open_within(
        server: &ServerEntry,
        trust: &Trust,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let address = format!("{}:{}", server.host, server.port);
        let tcp = connect_tcp(&address, &server.host, server.port, timeout)?;
        let (stream, seal): (Box<dyn Stream>, _) = match trust {
            Trust::PlainTcp => (Box::new(tcp), None),
            Trust::Fingerprint(pinned) => {
                let verifier = Arc::new(PinnedVerifier::new(Some(*pinned)));
                let result = handshake(tcp, &server.host, &address, verifier.clone());
                match (result, verifier.seen()) {
                    (Err(_), Some(actual)) if actual != *pinned => {
                        return Err(ClientError::FingerprintMismatch {
                            pinned: *pinned,
                            actual,
                        });
                    }
                    (result, _) => {
                        let (stream, seal) = result?;
                        (Box::new(stream), Some(seal))
                    }
                }
            }
            Trust::CaFile(path) => {
                let verifier = tls::ca_verifier(path).map_err(|err| ClientError::Tls {
                    address: address.clone(),
                    why: err.to_string(),
                })?;
                let (stream, seal) = handshake(tcp, &server.host, &address, verifier)?;
                (Box::new(stream), Some(seal))
            }
        };
        let plain_to = matches!(trust, Trust::PlainTcp).then(|| address.clone());
        Ok(Self {
            stream,
            seal,
            address,
            plain_to,
        })
    }

    /// Connects trusting any certificate, only to learn its fingerprint and
    /// the store's info before the administrator decides to pin it.
    pub fn probe(server: &ServerEntry) -> Result<(Option<Fingerprint>, Response), ClientError> {
        let address = format!("{}:{}", server.host, server.port);
        let verifier = Arc::new(PinnedVerifier::new(None));
        let tcp = connect_tcp(&address, &server.host, server.port, IO_TIMEOUT)?;
        let (stream, seal) = handshake(tcp, &server.host, &address, verifier.clone())?;
        let mut connection = Self {
            stream: Box::new(stream),
            seal: Some(seal),
            address,
            plain_to: None,
        };
        let info = connection.call(&Request {
            auth: Auth::None,
            operation: Operation::Info,
        })?;
        Ok((verifier.seen(), info))
    }

    /// Sends one request and reads its response; an error response becomes
    /// [`ClientError::Server`].
    pub fn call(&mut self, request: &Request) -> Result<Response, ClientError> {
        write_message(&mut self.stream, request, self.seal.as_ref())
            .map_err(|err| self.frame_error(err))?;
        let payload = match (read_payload(&mut self.stream), &self.plain_to) {
            // A TLS alert or record header read as a length is enormous.
            (Err(FrameError::TooLarge { .. }), Some(address)) => {
                return Err(ClientError::Tls {
                    address: address.clone(),
                    why: "the store speaks TLS; configure it with --fingerprint or --ca-file"
                        .into(),
                });
            }
            (payload, _) => payload.map_err(|err| self.frame_error(err))?,
        };
        let mut payload = payload;
        match decode_payload(&mut payload, self.seal.as_ref()).map_err(ClientError::Protocol)? {
            Response::Error { kind, message } => Err(ClientError::Server { kind, message }),
            response => Ok(response),
        }
    }
}

impl Connection {
    /// A socket timeout becomes [`ClientError::Timeout`], anything else a
    /// protocol failure.
    fn frame_error(&self, err: FrameError) -> ClientError {
        match err {
            FrameError::Io(io) if is_timeout(&io) => ClientError::Timeout {
                address: self.address.clone(),
            },
            other => ClientError::Protocol(other),
        }
    }
}

fn is_timeout(err: &std::io::Error) -> bool {
    matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn connect_tcp(
    address: &str,
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<TcpStream, ClientError> {
    let failed = |why: String| ClientError::Connect {
        address: address.to_owned(),
        why,
    };
    let candidates = (host, port)
        .to_socket_addrs()
        .map_err(|err| failed(err.to_string()))?;
    let mut last = "the name resolves to no address".to_owned();
    for candidate in candidates {
        match TcpStream::connect_timeout(&candidate, CONNECT_TIMEOUT.min(timeout)) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                stream
                    .set_read_timeout(Some(timeout))
                    .map_err(|err| failed(err.to_string()))?;
                stream
                    .set_write_timeout(Some(timeout))
                    .map_err(|err| failed(err.to_string()))?;
                return Ok(stream);
            }
            Err(err) => last = err.to_string(),
        }
    }
    Err(failed(last))
}

fn handshake(
    mut tcp: TcpStream,
    host: &str,
    address: &str,
    verifier: Arc<dyn rustls::client::danger::ServerCertVerifier>,
) -> Result<(StreamOwned<ClientConnection, TcpStream>, FrameSeal), ClientError> {
    let failed = |why: String| ClientError::Tls {
        address: address.to_owned(),
        why,
    };
    let config = tls::client_config(verifier).map_err(|err| failed(err.to_string()))?;
    let name = ServerName::try_from(host.to_owned())
        .map_err(|_| failed(format!("{host} is not a valid server name")))?;
    let mut connection =
        ClientConnection::new(Arc::new(config), name).map_err(|err| failed(err.to_string()))?;

    while connection.is_handshaking() {
        connection
            .complete_io(&mut tcp)
            .map_err(|err| match is_timeout(&err) {
                true => ClientError::Timeout {
                    address: address.to_owned(),
                },
                false => failed(err.to_string()),
            })?;
    }
    if connection.alpn_protocol() != Some(ALPN) {
        return Err(failed(
            "the server does not speak the credstore protocol".into(),
        ));
    }
    let seal = FrameSeal::from_tls(&connection).map_err(|err| failed(err.to_string()))?;
    Ok((StreamOwned::new(connection, tcp), seal))
}
