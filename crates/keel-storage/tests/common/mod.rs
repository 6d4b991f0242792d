//! Real producer batches for tests, made with the kafka-protocol crate's encoder (the same
//! record format librdkafka and the Java client produce).
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub const CODECS: [Compression; 5] =
    [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

/// One record as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// A producer batch of `records` (offsets from 0, as producers send them).
pub fn encode(records: &[TestRecord], compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, r)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // The encoder groups records whose offset - sequence is constant into one batch;
            // starting at -1 gives the base sequence -1 of a non-idempotent producer.
            sequence: i as i32 - 1,
            timestamp: r.timestamp,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect::<IndexMap<_, _>>(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression })
        .expect("encode batch");
    buf.to_vec()
}

/// A batch from an idempotent producer: `count` records with sequences from `base_sequence`.
pub fn idempotent_batch(producer_id: i64, epoch: i16, base_sequence: i32, count: usize) -> Vec<u8> {
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: base_sequence + i as i32,
            timestamp: 1_000,
            key: None,
            value: Some(Bytes::from(format!("{producer_id}-{}", base_sequence + i as i32))),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode batch");
    buf.to_vec()
}

/// A batch of `count` records with `value_bytes` values, timestamps from `timestamp`.
pub fn batch(count: usize, value_bytes: usize, timestamp: i64, compression: Compression, seed: u8) -> Vec<u8> {
    let records: Vec<TestRecord> = (0..count)
        .map(|i| TestRecord {
            offset: 0,
            timestamp: timestamp + i as i64,
            key: Some(format!("key-{seed}-{i}").into_bytes()),
            value: Some((0..value_bytes).map(|j| (j as u8).wrapping_mul(31).wrapping_add(seed ^ i as u8)).collect()),
            headers: vec![("h".to_string(), Some(vec![seed, i as u8])), ("none".to_string(), None)],
        })
        .collect();
    encode(&records, compression)
}

/// Decodes stored bytes back into records, as a consumer would.
pub fn decode(mut bytes: Bytes) -> Vec<TestRecord> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let set = RecordBatchDecoder::decode(&mut bytes).expect("stored batches decode");
        for r in set.records {
            let mut headers: Vec<_> =
                r.headers.iter().map(|(k, v)| (k.to_string(), v.as_ref().map(|v| v.to_vec()))).collect();
            headers.sort();
            out.push(TestRecord {
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
                headers,
            });
        }
    }
    out
}

/// Splits stored bytes into (base offset, whole batch bytes).
pub fn split_batches(bytes: &[u8]) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let base = i64::from_be_bytes(bytes[at..at + 8].try_into().unwrap());
        let len = i32::from_be_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize + 12;
        out.push((base, bytes[at..at + len].to_vec()));
        at += len;
    }
    out
}

/// Everything from the log start up to the log end, batch by batch.
pub fn read_all(log: &keel_storage::Log) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let result = log.read(offset, 1 << 20, end).expect("read");
        assert!(result.next_offset > offset, "read made no progress at {offset}");
        out.extend(split_batches(&result.records));
        offset = result.next_offset;
    }
    out
}
