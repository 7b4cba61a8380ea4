//! A byte stream as a peer sends it, read frame after frame by the
//! daemon's own reader and by the client's, each payload decoded as a
//! request and as a response, unsealed and sealed. Any input must end in a
//! value or an error, never a panic.

#![no_main]

use std::io::Cursor;
use std::sync::LazyLock;

use credstore::protocol::{FrameSeal, Request, Response, decode_payload, read_payload};
use credstore::server::read_payload_for_fuzzing;
use libfuzzer_sys::fuzz_target;

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fuzz_target!(|data: &[u8]| {
    let seal = FrameSeal::from_key([7; 32]);
    let mut daemon_side = data;
    RUNTIME.block_on(async {
        while let Ok(Some(payload)) = read_payload_for_fuzzing(&mut daemon_side).await {
            decode_all(&payload, &seal);
        }
    });

    let mut client_side = Cursor::new(data);
    while let Ok(payload) = read_payload(&mut client_side) {
        decode_all(&payload, &seal);
    }
});

fn decode_all(payload: &[u8], seal: &FrameSeal) {
    for seal in [None, Some(seal)] {
        let _ = decode_payload::<Request>(&mut payload.to_vec(), seal);
        let _ = decode_payload::<Response>(&mut payload.to_vec(), seal);
    }
}
