//! The `credstore` daemon: accepts TLS connections, reads framed requests
//! and answers them from the vault.

mod config;
mod handler;
mod limits;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, error, info, warn};
use zeroize::Zeroizing;

pub use config::{ServerConfig, TlsFiles};
pub use handler::State;

use limits::{ConnectionLimiter, LogLimiter};

use crate::protocol::{
    self, ALPN, ErrorKind, FrameError, FrameSeal, Request, Response, decode_payload, encode_frame,
};
use crate::tls::{self, ReloadableCert};
use crate::vault::Vault;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may sit between or inside requests.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections served at once; further ones wait in the accept queue.
const MAX_CONNECTIONS: usize = 512;

/// A daemon ready to serve: vault opened and locked, socket bound.
pub struct Server {
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
    connections: ConnectionLimiter,
    refusals: LogLimiter,
    cert: Option<Arc<ReloadableCert>>,
}

impl Server {
    /// Opens the vault, loads the certificate and binds the socket, so that
    /// every start-up error shows before the daemon says it is listening.
    pub async fn bind(config: &ServerConfig, production: bool) -> Result<Self> {
        if production && config.tls.is_none() {
            bail!("production mode needs TLS; add a [tls] table with cert_file and key_file");
        }
        let cert = match &config.tls {
            Some(files) => Some(Arc::new(ReloadableCert::load(
                &files.cert_file,
                &files.key_file,
            )?)),
            None => None,
        };
        let acceptor = cert.as_ref().map(load_acceptor).transpose()?;
        let vault = Vault::open(&config.storage_path).context("cannot open the vault")?;
        let listener = TcpListener::bind(config.listen_address)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen_address))?;
        let state = Arc::new(State::new(vault, production));
        let connections = ConnectionLimiter::new(config.max_connections_per_peer);
        Ok(Self {
            listener,
            acceptor,
            state,
            connections,
            refusals: LogLimiter::default(),
            cert,
        })
    }

    /// The certificate, to reload on SIGHUP; `None` for plain TCP.
    pub fn certificate(&self) -> Option<Arc<ReloadableCert>> {
        self.cert.clone()
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        Ok(self.listener.local_addr()?)
    }

    /// Serves until `shutdown` completes, then locks the vault.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let address = self.local_addr()?;
        if self.acceptor.is_none() {
            warn!(
                "serving WITHOUT TLS: passphrases and secrets cross the network in the clear; \
                 use this only for local development"
            );
        }
        let (tls, production) = (self.acceptor.is_some(), self.state.production);
        info!(%address, tls, production, "listening");

        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                () = &mut shutdown => break,
                permit = permits.clone().acquire_owned() => permit?,
            };
            let (stream, peer) = tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        warn!(error = %err, "cannot accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Some(slot) = self.connections.admit(peer.ip()) else {
                debug!(%peer, "refused a connection: this address has too many open");
                continue;
            };
            if self.state.production && is_same_host(peer.ip()) {
                if self
                    .refusals
                    .should_log(peer.ip(), std::time::Instant::now())
                {
                    warn!(%peer, "refused a connection from this host (production mode)");
                }
                continue;
            }
            let acceptor = self.acceptor.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                serve_connection(stream, peer, acceptor, state).await;
                drop((slot, permit));
            });
        }

        info!("shutting down");
        self.state
            .vault
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .lock();
        Ok(())
    }
}

/// Whether `peer` is this host: a loopback address or the address of any
/// local interface, IPv4-mapped IPv6 included. When the interfaces cannot
/// be listed it answers yes: production mode fails closed.
fn is_same_host(peer: IpAddr) -> bool {
    let peer = peer.to_canonical();
    if peer.is_loopback() || peer.is_unspecified() {
        return true;
    }
    match if_addrs::get_if_addrs() {
        Ok(interfaces) => interfaces
            .iter()
            .any(|interface| interface.ip().to_canonical() == peer),
        Err(err) => {
            warn!(error = %err, "cannot list the local interfaces; refusing the connection");
            true
        }
    }
}

fn load_acceptor(cert: &Arc<ReloadableCert>) -> Result<TlsAcceptor> {
    let config = tls::server_config(cert.clone())?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    state: Arc<State>,
) {
    let _ = stream.set_nodelay(true);
    let Some(acceptor) = acceptor else {
        return serve_requests(stream, peer, state, None).await;
    };

    let stream = match timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return debug!(%peer, error = %err, "TLS handshake failed"),
        Err(_) => return debug!(%peer, "TLS handshake timed out"),
    };
    if stream.get_ref().1.alpn_protocol() != Some(ALPN) {
        return warn!(%peer, "refused a TLS client that does not speak the credstore protocol");
    }
    let seal = match FrameSeal::from_tls(stream.get_ref().1) {
        Ok(seal) => seal,
        Err(err) => return warn!(%peer, error = %err, "cannot take a frame key from TLS"),
    };
    serve_requests(stream, peer, state, Some(seal)).await;
}

/// Answers requests on one connection until the peer closes it, sends a
/// frame that cannot be read, or stays silent too long.
async fn serve_requests<S>(
    mut stream: S,
    peer: SocketAddr,
    state: Arc<State>,
    seal: Option<FrameSeal>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let payload = match timeout(IDLE_TIMEOUT, read_payload(&mut stream)).await {
            Err(_) => return debug!(%peer, "closing an idle connection"),
            Ok(Ok(None)) => return,
            Ok(Ok(Some(payload))) => payload,
            Ok(Err(err)) => {
                // The peer gets the reason when it can still read; the
                // connection is beyond use either way.
                debug!(%peer, error = %err, "unreadable frame");
                let _ = write_response(&mut stream, &frame_error(&err), seal.as_ref()).await;
                let _ = stream.shutdown().await;
                return;
            }
        };

        let mut payload = payload;
        let response = match decode_payload::<Request>(&mut payload, seal.as_ref()) {
            Ok(request) => answer(&state, peer, request).await,
            Err(err) => {
                debug!(%peer, error = %err, "undecodable request");
                frame_error(&err)
            }
        };
        drop(payload);

        let written = write_response(&mut stream, &response, seal.as_ref()).await;
        drop(response);
        // Decoding the request and encoding the response ran on this
        // thread's stack; clear what they left before the next request.
        protect::scrub_stack();
        if let Err(err) = written {
            return debug!(%peer, error = %err, "cannot send a response");
        }
    }
}

async fn answer(state: &Arc<State>, peer: SocketAddr, request: Request) -> Response {
    let state = state.clone();
    on_blocking_pool(move || state.handle(peer, request)).await
}

/// Runs a request's vault work on the blocking pool, where the KDF and
/// file reads may take their time. A panic there is answered as an
/// internal error: it ends neither the connection nor the daemon.
async fn on_blocking_pool(work: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(move || {
        let response = work();
        protect::scrub_stack();
        response
    })
    .await
    .unwrap_or_else(|_| {
        error!("a request failed on an internal error; the daemon goes on");
        Response::error(
            ErrorKind::Internal,
            "internal error in credstore; its log has the details",
        )
    })
}

fn frame_error(err: &FrameError) -> Response {
    Response::error(ErrorKind::BadRequest, format!("bad request: {err}"))
}

/// The daemon's frame reader, reachable only from the fuzz targets.
#[cfg(fuzzing)]
pub async fn read_payload_for_fuzzing<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    read_payload(stream).await
}

/// Reads one payload; `None` when the peer closed between frames.
async fn read_payload<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<Zeroizing<Vec<u8>>>, FrameError> {
    let mut header = [0u8; 4];
    let mut filled = 0;
    while filled < header.len() {
        match stream.read(&mut header[filled..]).await? {
            0 if filled == 0 => return Ok(None),
            0 => return Err(FrameError::Truncated),
            read => filled += read,
        }
    }
    let len = protocol::payload_len(header)?;
    read_growing(stream, len).await.map(Some)
}

/// The first allocation for a payload; it doubles as bytes arrive, so a
/// peer that only announces a large frame costs no more than this.
const INITIAL_PAYLOAD: usize = 16 * 1024;

/// Reads exactly `len` bytes into a buffer that grows as they arrive.
/// Each outgrown buffer is zeroed as it is dropped.
async fn read_growing<S: AsyncRead + Unpin>(
    stream: &mut S,
    len: usize,
) -> Result<Zeroizing<Vec<u8>>, FrameError> {
    let mut buffer = Zeroizing::new(vec![0u8; len.min(INITIAL_PAYLOAD)]);
    let mut filled = 0;
    while filled < len {
        if filled == buffer.len() {
            let mut bigger = Zeroizing::new(vec![0u8; (buffer.len() * 2).min(len)]);
            bigger[..filled].copy_from_slice(&buffer[..filled]);
            buffer = bigger;
        }
        match stream.read(&mut buffer[filled..]).await? {
            0 => return Err(FrameError::Truncated),
            read => filled += read,
        }
    }
    Ok(buffer)
}

async fn write_response<S: AsyncWrite + Unpin>(
    stream: &mut S,
    response: &Response,
    seal: Option<&FrameSeal>,
) -> Result<(), FrameError> {
    let frame = encode_frame(response, seal)?;
    stream.write_all(&frame).await?;
    stream.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_is_answered_and_the_next_one_served() {
        let failed = on_blocking_pool(|| panic!("a bug in a handler")).await;
        assert!(
            matches!(
                failed,
                Response::Error {
                    kind: ErrorKind::Internal,
                    ..
                }
            ),
            "{failed:?}"
        );

        let next = on_blocking_pool(|| Response::Done).await;
        assert!(matches!(next, Response::Done), "{next:?}");
    }

    #[test]
    fn same_host_covers_loopback_mapped_and_local_interfaces() {
        for local in [
            "127.0.0.1",
            "127.8.9.10",
            "::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_same_host(local.parse().unwrap()), "{local}");
        }
        for interface in if_addrs::get_if_addrs().unwrap() {
            assert!(is_same_host(interface.ip()), "{interface:?}");
            if let IpAddr::V4(v4) = interface.ip() {
                assert!(is_same_host(IpAddr::V6(v4.to_ipv6_mapped())), "{v4} mapped");
            }
        }
        // TEST-NET-1 documentation addresses are on no interface here.
        assert!(!is_same_host("192.0.2.77".parse().unwrap()));
        assert!(!is_same_host("2001:db8::77".parse().unwrap()));
    }
}
