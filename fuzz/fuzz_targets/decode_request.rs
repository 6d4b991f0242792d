//! Fuzzes request decoding (`bash fuzz/run.sh`, see fuzz/README.md).
//! Any input must decode to a request or a typed error, never panic; a decoded request must
//! survive an encode/decode round trip.
#![no_main]

use bytes::{BufMut, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = keel_kafka::decode_request(Bytes::copy_from_slice(data)) else { return };
    let mut again = BytesMut::new();
    again.put_i16(request.header.api_key);
    again.put_i16(request.header.api_version);
    again.put_i32(request.header.correlation_id);
    if request.header.header_version >= 1 {
        match &request.header.client_id {
            Some(id) => {
                again.put_i16(id.len() as i16);
                again.put_slice(id.as_bytes());
            }
            None => again.put_i16(-1),
        }
    }
    if request.header.header_version >= 2 {
        again.put_u8(0);
    }
    if request.body.encode(&mut again, request.header.api_version).is_err() {
        return; // e.g. tagged fields the codec keeps but cannot re-emit at this version
    }
    let decoded = keel_kafka::decode_request(again.freeze()).expect("re-encoded request decodes");
    assert_eq!(decoded.body, request.body);
});
