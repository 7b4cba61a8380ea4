//! The body of a frame decoded as a request and as a response. What
//! decodes must encode again into a frame that decodes, and its Debug form
//! must be printable (it is what reaches the logs).

#![no_main]

use credstore::protocol::{Request, Response, decode_payload, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    if let Ok(request) = postcard::from_bytes::<Request>(body) {
        let _ = format!("{request:?}");
        let frame = encode_frame(&request, None).expect("a decoded request encodes");
        let mut payload = frame[4..].to_vec();
        decode_payload::<Request>(&mut payload, None).expect("an encoded request decodes");
    }
    if let Ok(response) = postcard::from_bytes::<Response>(body) {
        let _ = format!("{response:?}");
        if let Ok(frame) = encode_frame(&response, None) {
            let mut payload = frame[4..].to_vec();
            decode_payload::<Response>(&mut payload, None).expect("an encoded response decodes");
        }
    }
});
