//! The floor for `cred item read`: connect, complete a TLS 1.3 handshake,
//! send one credstore request frame and read the reply, with nothing else.
//!
//! Usage: `rustls-one-request HOST:PORT [ALPN]`. It accepts any certificate
//! (it measures cost, not trust) and sends an `Info` request, whose frame
//! is spelled out below so that this baseline shares no code with `cred`.
//! Like every credstore frame over TLS, the body is sealed under a key
//! from the TLS exporter; the reply is read but not opened.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Protocol version 1.
const VERSION: [u8; 2] = [0, 1];
/// The postcard body of `Request { auth: Auth::None, operation: Info }`.
const INFO_BODY: [u8; 2] = [0, 0];
/// The label both ends give the TLS exporter for the frame key.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-borg-collective-frame-seal";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(address) = args.next() else {
        eprintln!("usage: rustls-one-request HOST:PORT [ALPN]");
        return ExitCode::from(2);
    };
    let alpn = args.next().unwrap_or_else(|| "borg-collective/1".into());
    match request(&address, &alpn) {
        Ok(len) if len > 0 => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("rustls-one-request: empty reply");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("rustls-one-request: {err}");
            ExitCode::FAILURE
        }
    }
}

fn request(address: &str, alpn: &str) -> Result<usize, Box<dyn std::error::Error>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCert(provider.signature_verification_algorithms));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.as_bytes().to_vec()];

    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let name = ServerName::try_from(host.to_owned())?;
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect(address)?;
    tcp.set_nodelay(true)?;
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);

    tls.flush()?;
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(tls.sock)?;
    }
    tls.write_all(&sealed_info(tls.conn)?)?;
    let mut header = [0u8; 4];
    tls.read_exact(&mut header)?;
    let mut reply = vec![0u8; u32::from_be_bytes(header) as usize];
    tls.read_exact(&mut reply)?;
    Ok(reply.len())
}

/// Length, version, then nonce, sealed body and tag.
fn sealed_info(
    connection: &rustls::ClientConnection,
) -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};

    let mut key = [0u8; 32];
    connection.export_keying_material(&mut key[..], EXPORTER_LABEL, None)?;
    // One message per connection, under a key of that connection: a fixed
    // nonce is never reused under the same key.
    let nonce = [7u8; 24];
    let mut body = INFO_BODY;
    let cipher = chacha20poly1305::XChaCha20Poly1305::new((&key).into());
    let tag = cipher
        .encrypt_in_place_detached((&nonce).into(), &VERSION, &mut body)
        .map_err(|_| "sealing failed")?;
    let len = (VERSION.len() + nonce.len() + body.len() + tag.len()) as u32;
    let mut frame = len.to_be_bytes().to_vec();
    frame.extend_from_slice(&VERSION);
    frame.extend_from_slice(&nonce);
    frame.extend_from_slice(&body);
    frame.extend_from_slice(&tag);
    Ok(frame)
}

#[derive(Debug)]
struct AnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
