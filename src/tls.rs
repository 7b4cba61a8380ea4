//! TLS set-up shared by the daemon and the client: certificates, their
//! SHA-256 fingerprints, and rustls configurations limited to TLS 1.3 with
//! the protocol's ALPN name.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::protocol::ALPN;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("{what} {path} holds no usable PEM data: {why}")]
    Pem {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("cannot write {path}: {source}")]
    Write { path: String, source: io::Error },
    #[error("{path} already exists; remove it or pass --force to replace it")]
    Exists { path: String },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("invalid TLS configuration: {0}")]
    Config(String),
}

/// The SHA-256 fingerprint of a DER certificate, as pinned by clients.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(certificate: &[u8]) -> Self {
        Self(Sha256::digest(certificate).into())
    }
}

/// Colon-separated upper-case hex, as `openssl x509 -fingerprint -sha256`
/// prints it, so that the two can be compared by eye.
impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// Accepts hex with or without colons, in either case, with an optional
/// `sha256:` or `SHA256 Fingerprint=` prefix.
impl FromStr for Fingerprint {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let text = text.rsplit_once('=').map_or(text, |(_, hex)| hex);
        let text = text
            .strip_prefix("sha256:")
            .or(text.strip_prefix("SHA256:"))
            .unwrap_or(text);
        let hex: String = text.chars().filter(|c| *c != ':').collect();
        let bytes = hex::decode(&hex).map_err(|_| format!("fingerprint {text:?} is not hex"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            format!("fingerprint {text:?} is not 32 bytes long; give the SHA-256 fingerprint")
        })?;
        Ok(Self(bytes))
    }
}

/// A self-signed certificate and its key, in PEM.
pub struct GeneratedCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: Fingerprint,
}

/// Makes a self-signed certificate for `hosts` (names or IP addresses).
pub fn generate_cert(hosts: &[String]) -> Result<GeneratedCert, TlsError> {
    let certified = rcgen::generate_simple_self_signed(hosts.to_vec())
        .map_err(|err| TlsError::Generate(err.to_string()))?;
    Ok(GeneratedCert {
        cert_pem: certified.cert.pem(),
        key_pem: certified.key_pair.serialize_pem(),
        fingerprint: Fingerprint::of(certified.cert.der()),
    })
}

/// Writes `cert.pem` (0644) and `key.pem` (0600) into `dir`.
pub fn write_cert(dir: &Path, generated: &GeneratedCert, force: bool) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.display().to_string(),
        source,
    })?;
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    for path in [&cert, &key] {
        if !force && path.exists() {
            return Err(TlsError::Exists {
                path: path.display().to_string(),
            });
        }
    }
    write_file(&key, generated.key_pem.as_bytes(), 0o600)?;
    write_file(&cert, generated.cert_pem.as_bytes(), 0o644)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let failed = |source| TlsError::Write {
        path: path.display().to_string(),
        source,
    };
    let _ = fs::remove_file(path);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(failed)?;
    io::Write::write_all(&mut file, bytes).map_err(failed)?;
    file.sync_all().map_err(failed)
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let what = "certificate file";
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(what, path, err))?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            what,
            path: path.display().to_string(),
            why: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Reads the private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "key file";
    let bytes = zeroize::Zeroizing::new(read(what, path)?);
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| pem_error(what, path, err))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.display().to_string(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, err: impl fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.display().to_string(),
        why: err.to_string(),
    }
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The daemon's certificate, which can be replaced while it runs (on
/// SIGHUP): handshakes from then on use the new one, connections already
/// open keep theirs.
#[derive(Debug)]
pub struct ReloadableCert {
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
    current: std::sync::RwLock<Arc<rustls::sign::CertifiedKey>>,
}

impl ReloadableCert {
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Self, TlsError> {
        let current = std::sync::RwLock::new(Arc::new(certified_key(cert_file, key_file)?));
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current,
        })
    }

    /// Reads the certificate and key files again and takes them into use;
    /// on any error the old certificate stays. Answers the new fingerprint.
    pub fn reload(&self) -> Result<Fingerprint, TlsError> {
        let key = certified_key(&self.cert_file, &self.key_file)?;
        let fingerprint = Fingerprint::of(&key.cert[0]);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(key);
        Ok(fingerprint)
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Fingerprint::of(&current.cert[0])
    }
}

impl rustls::server::ResolvesServerCert for ReloadableCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

fn certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<rustls::sign::CertifiedKey, TlsError> {
    let certs = load_certs(cert_file)?;
    let key = load_key(key_file)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|err| TlsError::Config(format!("{}: {err}", key_file.display())))?;
    let certified = rustls::sign::CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|_| {
        TlsError::Config(format!(
            "{} does not hold the key of {}",
            key_file.display(),
            cert_file.display()
        ))
    })?;
    Ok(certified)
}

/// The daemon's TLS configuration: TLS 1.3 only, our ALPN name only.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| TlsError::Config(err.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN.to_vec()];
    // Clients open one connection per command and never resume.
    config.send_tls13_tickets = 0;
    Ok(config)
}

/// The client's TLS configuration for a given way of trusting the server.
pub fn client_config(
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|err| TlsError::Config(err.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// Trusts the server by the CA certificates in `path`.
pub fn ca_verifier(path: &Path) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|err| TlsError::Config(err.to_string()))?;
    }
    let verifier =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|err| TlsError::Config(err.to_string()))?;
    Ok(verifier)
}

/// Trusts exactly the certificate with a pinned fingerprint, whatever its
/// name or issuer, and records the fingerprint it was shown. With no pin it
/// trusts any certificate: that is only for showing a new server's
/// fingerprint to the administrator before pinning it.
#[derive(Debug)]
pub struct PinnedVerifier {
    pinned: Option<Fingerprint>,
    seen: Mutex<Option<Fingerprint>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedVerifier {
    pub fn new(pinned: Option<Fingerprint>) -> Self {
        Self {
            pinned,
            seen: Mutex::new(None),
            algorithms: provider().signature_verification_algorithms,
        }
    }

    /// The fingerprint of the certificate the server presented, if any.
    pub fn seen(&self) -> Option<Fingerprint> {
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = Fingerprint::of(end_entity);
        *self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(fingerprint);
        match self.pinned {
            Some(pinned) if pinned != fingerprint => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_parses_what_it_prints_and_openssl_forms() {
        let fingerprint = Fingerprint::of(b"certificate");
        let printed = fingerprint.to_string();
        assert_eq!(printed.parse::<Fingerprint>().unwrap(), fingerprint);
        let plain = printed.replace(':', "").to_lowercase();
        assert_eq!(plain.parse::<Fingerprint>().unwrap(), fingerprint);
        let openssl = format!("sha256 Fingerprint={printed}");
        assert_eq!(openssl.parse::<Fingerprint>().unwrap(), fingerprint);
        assert!("abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn generated_cert_loads_back() {
        let generated = generate_cert(&["localhost".into(), "127.0.0.1".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        write_cert(dir.path(), &generated, false).unwrap();
        assert!(write_cert(dir.path(), &generated, false).is_err());

        let certs = load_certs(&dir.path().join("cert.pem")).unwrap();
        assert_eq!(Fingerprint::of(&certs[0]), generated.fingerprint);
        load_key(&dir.path().join("key.pem")).unwrap();
        let cert = ReloadableCert::load(&dir.path().join("cert.pem"), &dir.path().join("key.pem"));
        let cert = Arc::new(cert.unwrap());
        assert_eq!(cert.fingerprint(), generated.fingerprint);
        server_config(cert.clone()).unwrap();

        let replaced = generate_cert(&["localhost".into()]).unwrap();
        write_cert(dir.path(), &replaced, true).unwrap();
        assert_eq!(cert.reload().unwrap(), replaced.fingerprint);
        std::fs::write(dir.path().join("key.pem"), "not a key").unwrap();
        assert!(cert.reload().is_err());
        assert_eq!(
            cert.fingerprint(),
            replaced.fingerprint,
            "a failed reload keeps the old one"
        );
    }
}
