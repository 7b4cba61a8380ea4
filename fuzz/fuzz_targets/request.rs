//! The body of a frame decoded as a request and as a response. What
//! decodes must encode again, plain and sealed, into a frame that decodes;
//! a sealed frame with any one byte changed must not; and its Debug form
//! must be printable (it is what reaches the logs).

#![no_main]

use credstore::protocol::{FrameSeal, Request, Response, decode_payload, encode_frame};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = postcard::from_bytes::<Request>(body) {
        let _ = format!("{request:?}");
        round_trip::<Request>(&request, body);
    }
    if let Ok(response) = postcard::from_bytes::<Response>(body) {
        let _ = format!("{response:?}");
        round_trip::<Response>(&response, body);
    }
});

fn round_trip<T: Serialize + DeserializeOwned>(message: &T, body: &[u8]) {
    let seal = FrameSeal::from_key([7; 32]);
    for seal in [None, Some(&seal)] {
        let Ok(frame) = encode_frame(message, seal) else {
            continue;
        };
        let mut payload = frame[4..].to_vec();
        decode_payload::<T>(&mut payload, seal).expect("an encoded message decodes");

        if seal.is_some() {
            let mut tampered = frame[4..].to_vec();
            let at = body.len() % tampered.len();
            tampered[at] ^= 1;
            assert!(
                decode_payload::<T>(&mut tampered, seal).is_err(),
                "a sealed frame with byte {at} changed was accepted"
            );
        }
    }
}
