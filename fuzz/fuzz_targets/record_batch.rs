//! Fuzzes the validation a produced record set goes through before it reaches a log
//! (`validate_produced`, which runs `validate_batch` on every batch). Whatever it accepts must
//! tile the input exactly, batch after batch.
#![no_main]

use keel_storage::batch::{first_record_at_or_after, validate_batch, validate_produced};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = validate_batch(data) {
        assert!(header.size() <= data.len());
        let batch = &data[..header.size()];
        let _ = first_record_at_or_after(batch, header.base_offset);
    }
    if let Ok(headers) = validate_produced(data) {
        let total: usize = headers.iter().map(|h| h.size()).sum();
        assert_eq!(total, data.len(), "accepted batches cover the record set exactly");
    }
});
