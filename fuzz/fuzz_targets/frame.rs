//! A byte stream as a peer could send it: frame after frame, each read with
//! the length check and decoded as a request and as a response. Any input
//! must end in a value or an error, never a panic or an allocation beyond
//! the frame limit.

#![no_main]

use std::io::Cursor;

use credstore::protocol::{Request, Response, decode_payload, read_payload};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut stream = Cursor::new(data);
    while let Ok(payload) = read_payload(&mut stream) {
        let mut request = payload.clone();
        let _ = decode_payload::<Request>(&mut request, None);
        let mut response = payload;
        let _ = decode_payload::<Response>(&mut response, None);
    }
});
