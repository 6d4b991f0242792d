//! Kafka RecordBatch v2 headers: parsing, validation and the two fields the log rewrites.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  baseOffset int64          | 12 partitionLeaderEpoch int32 | 17 crc uint32 (CRC-32C of 21..)
//! 8  batchLength int32         | 16 magic int8                 | 21 attributes int16
//! 23 lastOffsetDelta int32     | 27 baseTimestamp int64        | 35 maxTimestamp int64
//! 43 producerId int64          | 51 producerEpoch int16        | 53 baseSequence int32
//! 57 recordCount int32         | 61 records...
//! ```
//!
//! Base offset and partition leader epoch lie before the CRC'd region, so the log can assign
//! them without touching the producer's checksum.

use thiserror::Error;

/// Bytes in a v2 batch header, before the records.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes of `baseOffset` + `batchLength`; `batchLength` counts everything after them.
pub const LOG_OVERHEAD: usize = 12;
const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - LOG_OVERHEAD) as i32;
const CRC_START: usize = 21;
const RECORD_BYTES_MIN: usize = 7;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

/// Why a batch was rejected. Nothing of a rejected record set is written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("{available} bytes left, too few for a batch header of {BATCH_HEADER_BYTES} bytes")]
    Truncated { available: usize },
    #[error("batch length {declared} is out of range (at least {BATCH_LENGTH_MIN}, at most {limit} bytes available)")]
    BadLength { declared: i32, limit: usize },
    #[error("magic byte {0}; keel stores only RecordBatch v2 (magic 2)")]
    BadMagic(i8),
    #[error("CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    CrcMismatch { expected: u32, actual: u32 },
    #[error("batch declares {0} records; a batch must hold at least one")]
    NoRecords(i32),
    #[error("record count {count} does not match last offset delta {last_offset_delta}")]
    CountMismatch { count: i32, last_offset_delta: i32 },
    #[error("unknown compression codec {0}")]
    BadCompression(i16),
    #[error("producer fields inconsistent: id {producer_id}, epoch {producer_epoch}, base sequence {base_sequence}")]
    BadProducerFields { producer_id: i64, producer_epoch: i16, base_sequence: i32 },
    #[error("batch offsets {base}..={last} do not follow the previous batch's last offset {previous}")]
    OffsetsNotIncreasing { base: i64, last: i64, previous: i64 },
}

impl BatchError {
    /// The Kafka error a producer gets for this batch: corruption of bytes is CORRUPT_MESSAGE,
    /// well-formed bytes with impossible contents are INVALID_RECORD.
    pub fn error_code(&self) -> keel_types::ErrorCode {
        use keel_types::ErrorCode;
        match self {
            BatchError::Truncated { .. }
            | BatchError::BadLength { .. }
            | BatchError::BadMagic(_)
            | BatchError::CrcMismatch { .. } => ErrorCode::CorruptMessage,
            BatchError::NoRecords(_)
            | BatchError::CountMismatch { .. }
            | BatchError::BadCompression(_)
            | BatchError::BadProducerFields { .. }
            | BatchError::OffsetsNotIncreasing { .. } => ErrorCode::InvalidRecord,
        }
    }
}

/// The decoded header of one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the first 12 (`baseOffset` and `batchLength`).
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Total bytes of the batch, header included.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> i16 {
        self.attributes & ATTR_COMPRESSION_MASK
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }

    /// Parses the fixed header without checking anything but that the bytes exist.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated { available: bytes.len() });
        }
        Ok(BatchHeader {
            base_offset: i64_at(bytes, 0),
            batch_length: i32_at(bytes, 8),
            partition_leader_epoch: i32_at(bytes, 12),
            magic: bytes[16] as i8,
            crc: u32::from_be_bytes(bytes[17..21].try_into().expect("4 bytes")),
            attributes: i16_at(bytes, 21),
            last_offset_delta: i32_at(bytes, 23),
            base_timestamp: i64_at(bytes, 27),
            max_timestamp: i64_at(bytes, 35),
            producer_id: i64_at(bytes, 43),
            producer_epoch: i16_at(bytes, 51),
            base_sequence: i32_at(bytes, 53),
            record_count: i32_at(bytes, 57),
        })
    }

    /// Checks the structural fields that do not need the record bytes: magic, length against
    /// `available` bytes. Used when walking stored data, where the CRC is not recomputed.
    pub fn check_frame(&self, available: usize) -> Result<(), BatchError> {
        if self.magic != 2 {
            return Err(BatchError::BadMagic(self.magic));
        }
        let limit = available.saturating_sub(LOG_OVERHEAD);
        if self.batch_length < BATCH_LENGTH_MIN || self.batch_length as usize > limit {
            return Err(BatchError::BadLength { declared: self.batch_length, limit });
        }
        Ok(())
    }
}

/// Parses and fully validates the first batch in `bytes` (frame, CRC, counts, producer fields).
/// Returns the header; the batch occupies `bytes[..header.size()]`.
pub fn validate_batch(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    header.check_frame(bytes.len())?;
    let actual = crc32c::crc32c(&bytes[CRC_START..header.size()]);
    if actual != header.crc {
        return Err(BatchError::CrcMismatch { expected: header.crc, actual });
    }
    if header.record_count <= 0 {
        return Err(BatchError::NoRecords(header.record_count));
    }
    if header.last_offset_delta < 0 || header.record_count - 1 > header.last_offset_delta {
        return Err(BatchError::CountMismatch {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    // Every record takes at least 7 bytes (length, attributes, timestamp and offset deltas,
    // key and value lengths, header count), so an uncompressed batch cannot hold more.
    let record_bytes = header.size() - BATCH_HEADER_BYTES;
    if header.compression() == 0 && header.record_count as usize > record_bytes / RECORD_BYTES_MIN {
        return Err(BatchError::CountMismatch {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    if header.compression() > 4 {
        return Err(BatchError::BadCompression(header.compression()));
    }
    let idempotent = header.producer_id >= 0;
    let producer_ok = if idempotent {
        header.producer_epoch >= 0 && header.base_sequence >= 0
    } else {
        header.producer_id == -1 && !header.is_transactional()
    };
    if !producer_ok {
        return Err(BatchError::BadProducerFields {
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
        });
    }
    Ok(header)
}

/// Validates every batch of a record set as a producer sent it. Producers number records from
/// zero inside each batch, so the record count must equal `lastOffsetDelta + 1` exactly.
pub fn validate_produced(records: &[u8]) -> Result<Vec<BatchHeader>, (usize, BatchError)> {
    let mut headers = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let header = validate_batch(&records[position..]).map_err(|e| (position, e))?;
        if header.record_count != header.last_offset_delta + 1 {
            let error =
                BatchError::CountMismatch { count: header.record_count, last_offset_delta: header.last_offset_delta };
            return Err((position, error));
        }
        position += header.size();
        headers.push(header);
    }
    if headers.is_empty() {
        return Err((0, BatchError::Truncated { available: 0 }));
    }
    Ok(headers)
}

/// Writes the two fields the log owns into a batch's header bytes.
pub fn assign_offset_and_epoch(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Builds an uncompressed RecordBatch v2 as a producer sends it: base offset 0 and partition
/// leader epoch -1 (the log assigns both), records numbered from 0, every record at the base
/// timestamp, the CRC-32C sealed. Brokers never build batches; tools and the simulator do,
/// and need batches [`validate_produced`] accepts.
///
/// ```
/// use keel_storage::batch::{validate_produced, BatchBuilder};
///
/// let mut builder = BatchBuilder::new(1_700_000_000_000);
/// builder.idempotent(4000, 0, 7).record(Some(b"key"), Some(b"value"));
/// let batch = builder.build();
/// let header = validate_produced(&batch).unwrap()[0];
/// assert_eq!((header.producer_id, header.base_sequence, header.record_count), (4000, 7, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchBuilder {
    base_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    count: i32,
    /// The encoded records so far.
    records: Vec<u8>,
}

impl BatchBuilder {
    /// An empty batch from a producer without idempotence (producer id, epoch and base
    /// sequence -1).
    pub fn new(base_timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            base_timestamp,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            count: 0,
            records: Vec::new(),
        }
    }

    /// Makes the batch an idempotent producer's: its id and epoch, and the sequence of the
    /// batch's first record (the others follow it).
    pub fn idempotent(&mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> &mut BatchBuilder {
        assert!(
            producer_id >= 0 && producer_epoch >= 0 && base_sequence >= 0,
            "idempotent producer fields must not be negative: id {producer_id}, epoch {producer_epoch}, sequence {base_sequence}"
        );
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Adds a record (`None` is a null key or value) without headers.
    pub fn record(&mut self, key: Option<&[u8]>, value: Option<&[u8]>) -> &mut BatchBuilder {
        let mut body = vec![0u8]; // attributes
        put_varint(&mut body, 0); // timestamp delta
        put_varint(&mut body, i64::from(self.count)); // offset delta
        for field in [key, value] {
            match field {
                Some(bytes) => {
                    put_varint(&mut body, bytes.len() as i64);
                    body.extend_from_slice(bytes);
                }
                None => put_varint(&mut body, -1),
            }
        }
        put_varint(&mut body, 0); // header count
        put_varint(&mut self.records, body.len() as i64);
        self.records.extend_from_slice(&body);
        self.count += 1;
        self
    }

    /// The batch's bytes. Panics if it has no record: such a batch is invalid.
    pub fn build(&self) -> Vec<u8> {
        assert!(self.count > 0, "a batch must hold at least one record");
        let mut b = Vec::with_capacity(BATCH_HEADER_BYTES + self.records.len());
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_BYTES - LOG_OVERHEAD + self.records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(self.count - 1).to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.base_timestamp.to_be_bytes());
        b.extend_from_slice(&self.producer_id.to_be_bytes());
        b.extend_from_slice(&self.producer_epoch.to_be_bytes());
        b.extend_from_slice(&self.base_sequence.to_be_bytes());
        b.extend_from_slice(&self.count.to_be_bytes());
        b.extend_from_slice(&self.records);
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

/// Appends `value` as a zig-zag varint (Kafka's varint and varlong).
fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

/// Finds the first record in a batch whose timestamp is at least `target`, returning its
/// `(timestamp, offset)`. Compressed batches are decompressed; this is the one place the log
/// looks inside records, and only ListOffsets-by-time calls it.
pub fn first_record_at_or_after(batch: &[u8], target: i64) -> Option<(i64, i64)> {
    let mut buf = bytes::Bytes::copy_from_slice(batch);
    let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).ok()?;
    set.records.iter().find(|r| r.timestamp >= target).map(|r| (r.timestamp, r.offset))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal valid uncompressed batch with `count` empty records, built by hand so these
    /// tests do not depend on an encoder.
    pub(crate) fn raw_batch(count: i32, timestamp: i64) -> Vec<u8> {
        let mut records = Vec::new();
        for i in 0..count {
            // length, attributes, timestampDelta, offsetDelta, keyLen -1, valueLen 0, headers 0
            let body = [0u8, zigzag(i), zigzag(i), 1, 0, 0];
            records.push(zigzag(body.len() as i32));
            records.extend_from_slice(&body);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&0i64.to_be_bytes());
        b.extend_from_slice(&((BATCH_HEADER_BYTES - LOG_OVERHEAD + records.len()) as i32).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.push(2);
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&(count - 1).to_be_bytes());
        b.extend_from_slice(&timestamp.to_be_bytes());
        b.extend_from_slice(&(timestamp + i64::from(count) - 1).to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        b.extend_from_slice(&records);
        reseal(&mut b);
        b
    }

    fn zigzag(v: i32) -> u8 {
        let z = ((v << 1) ^ (v >> 31)) as u32;
        assert!(z < 128, "test helper only encodes one-byte varints");
        z as u8
    }

    /// Recomputes the CRC after a test edits CRC-covered bytes.
    pub(crate) fn reseal(b: &mut [u8]) {
        let crc = crc32c::crc32c(&b[CRC_START..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn valid_batch_parses() {
        let b = raw_batch(3, 1000);
        let h = validate_batch(&b).unwrap();
        assert_eq!(h.record_count, 3);
        assert_eq!(h.size(), b.len());
        assert_eq!(h.last_offset(), 2);
        assert_eq!(validate_produced(&b).unwrap().len(), 1);
    }

    #[test]
    fn offset_and_epoch_rewrite_keeps_crc_valid() {
        let mut b = raw_batch(2, 5);
        assign_offset_and_epoch(&mut b, 1234, 7);
        let h = validate_batch(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (1234, 7));
    }

    #[test]
    fn malformed_batches_are_rejected_with_the_right_code() {
        use keel_types::ErrorCode;
        let good = raw_batch(2, 5);

        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 0xff;
        assert!(matches!(validate_batch(&bad_crc), Err(BatchError::CrcMismatch { .. })));

        let truncated = &good[..good.len() - 1];
        assert!(matches!(validate_batch(truncated), Err(BatchError::BadLength { .. })));
        assert!(matches!(validate_batch(&good[..20]), Err(BatchError::Truncated { .. })));

        let mut magic = good.clone();
        magic[16] = 1;
        assert_eq!(validate_batch(&magic), Err(BatchError::BadMagic(1)));

        let mut absurd = good.clone();
        absurd[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(validate_batch(&absurd), Err(BatchError::BadLength { .. })));
        let mut negative = good.clone();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(validate_batch(&negative), Err(BatchError::BadLength { .. })));

        let mut zero = good.clone();
        zero[57..61].copy_from_slice(&0i32.to_be_bytes());
        reseal(&mut zero);
        assert_eq!(validate_batch(&zero), Err(BatchError::NoRecords(0)));
        assert_eq!(validate_batch(&zero).unwrap_err().error_code(), ErrorCode::InvalidRecord);

        let mut count = good.clone();
        count[23..27].copy_from_slice(&5i32.to_be_bytes());
        reseal(&mut count);
        assert!(validate_batch(&count).is_ok(), "gaps are legal in stored (compacted) batches");
        assert!(matches!(validate_produced(&count), Err((0, BatchError::CountMismatch { .. }))));

        let mut inflated = good.clone();
        inflated[23..27].copy_from_slice(&999i32.to_be_bytes());
        inflated[57..61].copy_from_slice(&1000i32.to_be_bytes());
        reseal(&mut inflated);
        assert!(
            matches!(validate_batch(&inflated), Err(BatchError::CountMismatch { count: 1000, .. })),
            "more records than bytes"
        );

        let mut producer = good.clone();
        producer[43..51].copy_from_slice(&5i64.to_be_bytes()); // id 5 with epoch -1
        reseal(&mut producer);
        assert!(matches!(validate_batch(&producer), Err(BatchError::BadProducerFields { .. })));
        assert_eq!(bad_crc_code(&bad_crc), ErrorCode::CorruptMessage);

        let mut two = good.clone();
        two.extend_from_slice(&bad_crc);
        assert!(matches!(validate_produced(&two), Err((p, BatchError::CrcMismatch { .. })) if p == good.len()));
        assert!(validate_produced(&[]).is_err());
    }

    fn bad_crc_code(b: &[u8]) -> keel_types::ErrorCode {
        validate_batch(b).unwrap_err().error_code()
    }

    #[test]
    fn the_builder_makes_batches_a_producer_would_send() {
        let long_value = vec![7u8; 300]; // a length that takes a two-byte varint
        let mut builder = BatchBuilder::new(1_000);
        builder.idempotent(42, 3, i32::MAX - 1).record(None, Some(b"v0")).record(Some(b"k1"), Some(&long_value));
        let mut batch = builder.build();
        let header = validate_produced(&batch).unwrap()[0];
        assert_eq!(header.size(), batch.len());
        assert_eq!((header.record_count, header.last_offset_delta), (2, 1));
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (42, 3, i32::MAX - 1));
        assert_eq!((header.base_timestamp, header.max_timestamp), (1_000, 1_000));
        assert_eq!((header.base_offset, header.partition_leader_epoch), (0, -1));

        // A real decoder reads the records back, after the log assigned offset and epoch.
        assign_offset_and_epoch(&mut batch, 100, 5);
        let mut bytes = bytes::Bytes::from(batch);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
        let records: Vec<_> = set
            .records
            .iter()
            .map(|r| {
                (r.offset, r.sequence, r.timestamp, r.key.as_deref(), r.value.as_deref(), r.partition_leader_epoch)
            })
            .collect();
        assert_eq!(
            records,
            [
                (100, i32::MAX - 1, 1_000, None, Some(&b"v0"[..]), 5),
                (101, i32::MAX, 1_000, Some(&b"k1"[..]), Some(&long_value[..]), 5),
            ]
        );
        assert!(set.records.iter().all(|r| r.producer_id == 42 && r.producer_epoch == 3));

        let plain = BatchBuilder::new(5).record(None, None).build();
        let header = validate_produced(&plain).unwrap()[0];
        assert_eq!((header.producer_id, header.producer_epoch, header.base_sequence), (-1, -1, -1));
    }

    #[test]
    #[should_panic(expected = "at least one record")]
    fn the_builder_refuses_an_empty_batch() {
        BatchBuilder::new(0).build();
    }

    /// Found by `fuzz/run.sh` (record_batch): a valid batch (base offset i64::MIN) whose record
    /// offset delta is negative made kafka-protocol's record decoder panic (debug builds)
    /// when ListOffsets looked inside it; the vendored decoder now refuses it.
    #[test]
    fn a_record_whose_offset_overflows_is_not_found_and_does_not_panic() {
        let crash: &[u8] = &[
            0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x47, 0xff, 0xff, 0xff, 0xff, 0x02, 0x79,
            0x4d, 0x22, 0x8a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0x00,
            0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x02, 0x1c, 0x00, 0x00, 0x00, 0x06, 0x6b, 0x65, 0x79, 0x0a, 0x76, 0x61,
            0x6c, 0x75, 0x65, 0x00, 0x06, 0x6b, 0x65, 0x79, 0x0a, 0x76, 0x61, 0x6c, 0x65, 0x00, 0x00,
        ];
        let header = validate_batch(crash).expect("the fuzzer's batch passes validation");
        assert_eq!(first_record_at_or_after(&crash[..header.size()], 0), None);
    }

    #[test]
    fn record_scan_finds_first_record_at_or_after_target() {
        let mut b = raw_batch(4, 100); // records at 100, 101, 102, 103
        assign_offset_and_epoch(&mut b, 50, 0);
        assert_eq!(first_record_at_or_after(&b, 0), Some((100, 50)));
        assert_eq!(first_record_at_or_after(&b, 102), Some((102, 52)));
        assert_eq!(first_record_at_or_after(&b, 104), None);
    }
}
