//! Fuzzes cluster-port frame bodies (what follows the length): a version byte, then a
//! postcard `Frame` (Raft message or `Request`) or `Response`. Anything decodes or is an
//! `InvalidData` error; what decodes re-encodes and decodes again.
#![no_main]

use keel_broker::cluster::protocol::{Frame, Response};
use keel_broker::cluster::transport::{decode_frame, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = decode_frame::<Frame>(data) {
        let bytes = encode_frame(&frame).expect("a decoded frame encodes");
        decode_frame::<Frame>(&bytes[4..]).expect("a re-encoded frame decodes");
    }
    if let Ok(response) = decode_frame::<Response>(data) {
        let bytes = encode_frame(&response).expect("a decoded response encodes");
        decode_frame::<Response>(&bytes[4..]).expect("a re-encoded response decodes");
    }
});
