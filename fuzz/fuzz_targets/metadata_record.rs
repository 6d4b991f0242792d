//! Fuzzes the metadata log's decoders: one record, a batch of records, and a snapshot image.
//! What decodes re-encodes to an equal value, and a decoded image's invariant check returns
//! (`Ok` or `Err`) without panicking.
#![no_main]

use keel_metadata::{MetadataImage, MetadataRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = MetadataRecord::decode(data) {
        assert_eq!(MetadataRecord::decode(&record.encode()).as_ref(), Ok(&record));
    }
    if let Ok(records) = MetadataRecord::decode_batch(data) {
        assert_eq!(MetadataRecord::decode_batch(&MetadataRecord::encode_batch(&records)).as_ref(), Ok(&records));
    }
    if let Ok(image) = MetadataImage::decode(data) {
        let _ = image.check_invariants();
        assert_eq!(MetadataImage::decode(&image.encode()).as_ref(), Ok(&image));
    }
});
