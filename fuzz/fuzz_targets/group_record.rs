//! Fuzzes the group coordinator's `__consumer_offsets` record decoding.
//!
//! Input: a flag byte (bit 0 set: a tombstone, no value), a big-endian u16 key length, the
//! key, then the value (the rest). What decodes re-encodes to an equal record.
#![no_main]

use bytes::Bytes;
use keel_groups::Record;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [flags, high, low, rest @ ..] = data else { return };
    let key_len = usize::from(u16::from_be_bytes([*high, *low])).min(rest.len());
    let (key, value) = rest.split_at(key_len);
    let value = (flags & 1 == 0).then(|| Bytes::copy_from_slice(value));
    let Ok(record) = Record::decode(Bytes::copy_from_slice(key), value) else { return };
    let (key, value) = record.encode();
    assert_eq!(Record::decode(key, value).as_ref(), Ok(&record), "re-encoded record decodes");
});
