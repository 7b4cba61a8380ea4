//! Hostile frames from a raw TLS client: the daemon answers with an error
//! where it can and keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Duration;

use credstore::protocol::{
    Auth, ErrorKind, FrameSeal, MAX_FRAME_LEN, Operation, Request, Response, decode_payload,
    encode_frame, read_payload,
};
use credstore::tls::{self, PinnedVerifier};
use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::support::Store;

pub(crate) type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS connection offering `alpn`, trusting the store's pinned cert.
pub(crate) fn connect(store: &Store, alpn: Option<&[u8]>) -> Tls {
    let pinned = store.fingerprint.parse().unwrap();
    let mut config = tls::client_config(Arc::new(PinnedVerifier::new(Some(pinned)))).unwrap();
    config.alpn_protocols = alpn.map(|name| vec![name.to_vec()]).unwrap_or_default();
    let tcp = TcpStream::connect(("127.0.0.1", store.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let connection = ClientConnection::new(Arc::new(config), name).unwrap();
    StreamOwned::new(connection, tcp)
}

pub(crate) fn connect_ours(store: &Store) -> Tls {
    connect(store, Some(credstore::protocol::ALPN))
}

/// The frame key of a connection to our ALPN, completing its handshake.
pub(crate) fn seal(stream: &mut Tls) -> FrameSeal {
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    FrameSeal::from_tls(&stream.conn).unwrap()
}

pub(crate) fn read_response(stream: &mut Tls) -> Response {
    let seal = seal(stream);
    let mut payload = read_payload(stream).expect("the daemon answers");
    decode_payload(&mut payload, Some(&seal)).expect("the answer decodes")
}

pub(crate) fn info_frame(seal: Option<&FrameSeal>) -> Vec<u8> {
    let request = Request {
        auth: Auth::None,
        operation: Operation::Info,
    };
    encode_frame(&request, seal).unwrap().to_vec()
}

fn assert_bad_request(response: Response, mentions: &str) {
    match response {
        Response::Error {
            kind: ErrorKind::BadRequest,
            message,
        } => {
            assert!(message.contains(mentions), "{message}")
        }
        other => panic!("expected a bad request error, got {other:?}"),
    }
}

fn assert_still_serving(store: &Store) {
    store.admin(&["store", "info"], b"").ok();
}

#[test]
fn oversized_frame_is_refused_before_it_is_read() {
    let store = Store::start();
    let mut stream = connect_ours(&store);
    stream
        .write_all(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes())
        .unwrap();
    stream.flush().unwrap();
    assert_bad_request(read_response(&mut stream), "exceeds the limit");
    assert_still_serving(&store);
}

#[test]
fn truncated_frame_gets_an_error() {
    let store = Store::start();
    let mut stream = connect_ours(&store);
    let frame = info_frame(Some(&seal(&mut stream)));
    stream.write_all(&frame[..frame.len() - 1]).unwrap();
    stream.flush().unwrap();
    // Half-close: the daemon sees the end of the stream mid-frame.
    stream.conn.send_close_notify();
    stream.conn.complete_io(&mut stream.sock).unwrap();
    assert_bad_request(read_response(&mut stream), "middle of a frame");
    assert_still_serving(&store);
}

#[test]
fn undecodable_payload_gets_an_error_and_the_connection_goes_on() {
    let store = Store::start();
    let mut stream = connect_ours(&store);
    let garbage = [0u8, 1, 0xee, 0xff, 0xff, 0xff, 0xff, 0x0f];
    stream
        .write_all(&(garbage.len() as u32).to_be_bytes())
        .unwrap();
    stream.write_all(&garbage).unwrap();
    stream.flush().unwrap();
    assert_bad_request(read_response(&mut stream), "could not be decoded");

    let mut other_version = info_frame(Some(&seal(&mut stream)));
    other_version[5] = 99;
    stream.write_all(&other_version).unwrap();
    assert_bad_request(read_response(&mut stream), "version 99");

    let frame = info_frame(Some(&seal(&mut stream)));
    stream.write_all(&frame).unwrap();
    assert!(matches!(read_response(&mut stream), Response::Info(_)));
}

#[test]
fn tls_without_our_alpn_is_refused_before_any_request() {
    let store = Store::start();

    let mut missing = connect(&store, None);
    // The handshake itself completes, then the daemon hangs up unread.
    let _ = missing.write_all(&info_frame(None));
    let _ = missing.flush();
    let mut rest = Vec::new();
    let _ = missing.read_to_end(&mut rest);
    assert!(
        rest.is_empty(),
        "a client without ALPN got {} bytes back",
        rest.len()
    );

    let mut wrong = connect(&store, Some(b"h2"));
    let written = wrong
        .write_all(&info_frame(None))
        .and_then(|()| wrong.flush());
    let mut rest = Vec::new();
    let read = wrong.read_to_end(&mut rest);
    assert!(
        written.is_err() || read.is_err(),
        "a client offering h2 was served"
    );
    assert!(rest.is_empty());

    assert!(
        store
            .log()
            .contains("does not speak the credstore protocol"),
        "{}",
        store.log()
    );
    assert_still_serving(&store);
}

#[test]
fn plain_bytes_to_the_tls_port_are_dropped() {
    let store = Store::start();
    let mut tcp = TcpStream::connect(("127.0.0.1", store.port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    tcp.write_all(&info_frame(None)).unwrap();
    let mut rest = Vec::new();
    let _ = tcp.read_to_end(&mut rest);
    let mut rest = rest.get(4..).unwrap_or_default().to_vec();
    assert!(decode_payload::<Response>(&mut rest, None).is_err());
    assert_still_serving(&store);
}

#[test]
fn client_credentials_cannot_run_admin_operations() {
    let store = Store::start();
    store.unlock();
    let (_, id, secret) = store.host("host1");
    let mut stream = connect_ours(&store);
    for operation in [
        Operation::ItemList { search: None },
        Operation::ClientList,
        Operation::Lock,
    ] {
        let auth = Auth::Client {
            id: id.parse().unwrap(),
            secret: credstore::secret::SecretBytes::copy_from(secret.as_bytes()),
        };
        let seal = seal(&mut stream);
        let frame = encode_frame(&Request { auth, operation }, Some(&seal)).unwrap();
        stream.write_all(&frame).unwrap();
        match read_response(&mut stream) {
            Response::Error {
                kind: ErrorKind::Unauthorized,
                message,
            } => {
                assert!(message.contains("admin passphrase"), "{message}")
            }
            other => panic!("a client ran an admin operation: {other:?}"),
        }
    }
    let info = store.admin(&["store", "info", "--json"], b"").ok();
    assert!(info.stdout_text().contains("\"locked\": false"), "{info:?}");
}
