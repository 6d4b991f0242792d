//! Fuzzes gossip datagram decoding: any datagram decodes or is refused with a typed error,
//! and what decodes re-encodes to the same bytes.
#![no_main]

use keel_gossip::{Message, MESSAGE_BYTES_MAX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data, MESSAGE_BYTES_MAX) else { return };
    let bytes = message.encode();
    assert_eq!(bytes.len(), message.encoded_len());
    assert_eq!(Message::decode(&bytes, MESSAGE_BYTES_MAX).as_ref(), Ok(&message), "re-encoded datagram decodes");
});
