//! Behaviour of the partition log through its public API, on the memory and file backends.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{batch, decode, encode, idempotent_batch, read_all, split_batches, TestRecord, CODECS};
use kafka_protocol::records::Compression;
use keel_storage::backend::{Backend, FileBackend, MemoryBackend};
use keel_storage::{AppendError, FlushPolicy, Log, LogConfig, ReadError};
use keel_types::{ErrorCode, LeaderEpoch};

const E0: LeaderEpoch = LeaderEpoch(0);

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 256,
        flush: FlushPolicy::Never,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(backend: &Arc<dyn Backend>, config: LogConfig) -> Log {
    Log::open(backend.clone(), "/data/t-0", config, 1_000).expect("open").0
}

fn memory() -> Arc<dyn Backend> {
    Arc::new(MemoryBackend::new())
}

#[test]
fn producer_batches_round_trip_with_every_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(FileBackend);
    let (log, _) = Log::open(backend, tmp.path().join("t-0"), LogConfig::default(), 0).unwrap();
    let mut expected = Vec::new();
    for (i, codec) in CODECS.iter().enumerate() {
        let records: Vec<TestRecord> = (0..50)
            .map(|j| TestRecord {
                offset: 0,
                timestamp: 1_700_000_000_000 + j,
                key: (j % 3 != 0).then(|| format!("k{i}-{j}").into_bytes()),
                value: (j % 7 != 0).then(|| vec![(i * j as usize) as u8; 100 + j as usize]),
                headers: vec![("a".into(), Some(b"1".to_vec())), ("b".into(), None)],
            })
            .collect();
        let info = log.append(&encode(&records, *codec), E0, 0).unwrap();
        assert_eq!(info.base_offset, i as i64 * 50);
        assert_eq!(info.last_offset, i as i64 * 50 + 49);
        for (j, mut r) in records.into_iter().enumerate() {
            r.offset = info.base_offset + j as i64;
            r.headers.sort();
            expected.push(r);
        }
    }
    let result = log.read(0, 10 << 20, log.log_end_offset()).unwrap();
    assert_eq!(result.next_offset, 250);
    assert_eq!(decode(result.records), expected);
    log.close(0).unwrap();
}

#[test]
fn stored_bytes_are_the_producers_bytes_but_offset_and_epoch() {
    let backend = memory();
    let log = open(&backend, small_config());
    log.append(&batch(3, 10, 5, Compression::None, 1), E0, 0).unwrap();
    let sent = batch(4, 10, 5, Compression::Lz4, 2);
    log.append(&sent, LeaderEpoch(3), 0).unwrap();
    let stored = log.read(3, 1 << 20, 100).unwrap();
    let stored = stored.records.to_vec();
    assert_eq!(stored.len(), sent.len());
    assert_eq!(i64::from_be_bytes(stored[0..8].try_into().unwrap()), 3);
    assert_eq!(i32::from_be_bytes(stored[12..16].try_into().unwrap()), 3);
    assert_eq!(&stored[8..12], &sent[8..12]);
    assert_eq!(&stored[16..], &sent[16..], "everything under the CRC is untouched");
}

#[test]
fn read_returns_whole_batches_within_limits() {
    let backend = memory();
    let log = open(&backend, LogConfig { segment_bytes: 1 << 20, ..small_config() });
    let one = batch(10, 20, 0, Compression::None, 0);
    for _ in 0..5 {
        log.append(&one, E0, 0).unwrap();
    }
    // From the middle of the second batch: the whole second batch comes back.
    let r = log.read(15, 1 << 20, 50).unwrap();
    assert_eq!(split_batches(&r.records).first().unwrap().0, 10);
    assert_eq!((r.next_offset, r.log_start_offset, r.log_end_offset), (50, 0, 50));
    // max_bytes smaller than a batch still returns one whole batch (KIP-74).
    let r = log.read(0, 10, 50).unwrap();
    assert_eq!(r.records.len(), one.len());
    assert_eq!(r.next_offset, 10);
    // max_bytes cuts at batch boundaries.
    let r = log.read(0, one.len() * 2 + 5, 50).unwrap();
    assert_eq!(split_batches(&r.records).len(), 2);
    // upto (the high watermark) holds back batches that end at or past it.
    let r = log.read(0, 1 << 20, 25).unwrap();
    assert_eq!(r.next_offset, 20);
    let r = log.read(20, 1 << 20, 25).unwrap();
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 20);
    // At the log end: empty; past it: out of range.
    assert!(log.read(50, 1 << 20, 50).unwrap().records.is_empty());
    let error = log.read(51, 1 << 20, 50).unwrap_err();
    assert!(matches!(error, ReadError::OffsetOutOfRange { requested: 51, .. }));
    assert_eq!(error.error_code(), ErrorCode::OffsetOutOfRange);
}

#[test]
fn segments_roll_by_size_and_age_and_reads_cross_them() {
    let backend = memory();
    let config = LogConfig { segment_ms: 60_000, ..small_config() };
    let log = open(&backend, config.clone());
    let b = batch(5, 100, 0, Compression::None, 0); // ~700 bytes
    for _ in 0..20 {
        log.append(&b, E0, 1_000).unwrap();
    }
    let by_size = log.segment_count();
    assert!(by_size >= 4, "20 x 700 bytes in 4 KiB segments rolled only to {by_size}");
    log.append(&b, E0, 1_000 + 60_000).unwrap();
    assert_eq!(log.segment_count(), by_size + 1, "segment.ms rolls an old segment");
    let all = read_all(&log);
    assert_eq!(all.len(), 21);
    for (i, (base, _)) in all.iter().enumerate() {
        assert_eq!(*base, i as i64 * 5);
    }
    // Reopening (cleanly and not) gives the same log.
    log.close(0).unwrap();
    let (log, report) = Log::open(backend.clone(), "/data/t-0", config.clone(), 0).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.scanned_bytes, 0, "a clean open scans nothing");
    assert_eq!(read_all(&log), all);
    drop(log);
    let (log, report) = Log::open(backend, "/data/t-0", config, 0).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(read_all(&log), all);
}

#[test]
fn malformed_batches_are_rejected_and_change_nothing() {
    let backend = memory();
    let log = open(&backend, small_config());
    let good = batch(3, 10, 0, Compression::None, 0);
    log.append(&good, E0, 0).unwrap();
    let before = read_all(&log);

    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    let mut wrong_magic = good.clone();
    wrong_magic[16] = 1;
    let mut absurd = good.clone();
    absurd[8..12].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
    let mut good_then_bad = good.clone();
    good_then_bad.extend_from_slice(&bad_crc);
    let cases: Vec<(&str, Vec<u8>, ErrorCode)> = vec![
        ("bad crc", bad_crc, ErrorCode::CorruptMessage),
        ("truncated", good[..good.len() - 3].to_vec(), ErrorCode::CorruptMessage),
        ("header only", good[..30].to_vec(), ErrorCode::CorruptMessage),
        ("wrong magic", wrong_magic, ErrorCode::CorruptMessage),
        ("absurd length", absurd, ErrorCode::CorruptMessage),
        ("empty", Vec::new(), ErrorCode::CorruptMessage),
        ("second batch bad", good_then_bad, ErrorCode::CorruptMessage),
    ];
    for (name, bytes, code) in cases {
        let error = log.append(&bytes, E0, 0).unwrap_err();
        assert!(matches!(error, AppendError::InvalidBatch { .. }), "{name}: {error}");
        assert_eq!(error.error_code(), code, "{name}");
        assert_eq!(read_all(&log), before, "{name} changed the log");
        assert_eq!(log.log_end_offset(), 3);
    }
    let big = LogConfig { max_message_bytes: 100, ..small_config() };
    let log = Log::open(memory(), "/x", big, 0).unwrap().0;
    let error = log.append(&good, E0, 0).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::MessageTooLarge);
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    for codec in CODECS {
        let backend = memory();
        let log = open(&backend, small_config());
        // Batches of 10 records, timestamps 1000 + 10*i .. ; records step by 1 ms.
        for i in 0..30 {
            log.append(&batch(10, 30, 1000 + i * 10, codec, i as u8), E0, 0).unwrap();
        }
        assert!(log.segment_count() > 1);
        for target in [0, 1000, 1001, 1055, 1159, 1299] {
            let expected = (target.max(1000), target.max(1000) - 1000);
            assert_eq!(log.offset_for_timestamp(target).unwrap(), Some(expected), "{codec:?} target {target}");
        }
        assert_eq!(log.offset_for_timestamp(1300).unwrap(), None);
    }
}

#[test]
fn time_lookup_handles_out_of_order_timestamps() {
    let backend = memory();
    let log = open(&backend, small_config());
    for (i, ts) in [5000, 1000, 3000, 2000, 4000, 6000].into_iter().enumerate() {
        log.append(&batch(1, 200, ts, Compression::None, i as u8), E0, 0).unwrap();
    }
    assert_eq!(log.offset_for_timestamp(2500).unwrap(), Some((5000, 0)));
    assert_eq!(log.offset_for_timestamp(5500).unwrap(), Some((6000, 5)));
}

#[test]
fn retention_by_time_and_size_deletes_whole_front_segments() {
    let backend = memory();
    let config = LogConfig { retention_ms: Some(10_000), ..small_config() };
    let log = open(&backend, config);
    for i in 0..40 {
        log.append(&batch(5, 100, i * 1000, Compression::None, 0), E0, 0).unwrap();
    }
    let segments = log.segment_count();
    let deleted = log.enforce_retention(40_000, i64::MAX).unwrap();
    assert!(!deleted.is_empty());
    assert_eq!(log.segment_count(), segments - deleted.len());
    let start = log.log_start_offset();
    assert_eq!(start, deleted.last().unwrap().next_offset);
    // Every remaining segment except possibly the first holds a record newer than the cutoff.
    assert!(log.offset_for_timestamp(30_000).unwrap().is_some());
    assert!(matches!(log.read(0, 100, 1000), Err(ReadError::OffsetOutOfRange { .. })));
    assert_eq!(read_all(&log).first().unwrap().0, start);

    // Everything expired: the active segment rolls and goes too; the log end stays.
    let end = log.log_end_offset();
    log.enforce_retention(1_000_000, end).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (end, end, 0));
    log.append(&batch(1, 10, 2_000_000, Compression::None, 0), E0, 0).unwrap();
    assert_eq!(log.log_end_offset(), end + 1);

    let config = LogConfig { retention_bytes: Some(8192), ..small_config() };
    let log = Log::open(memory(), "/b", config, 0).unwrap().0;
    for i in 0..40 {
        log.append(&batch(5, 100, i, Compression::None, 0), E0, 0).unwrap();
    }
    log.enforce_retention(0, log.log_end_offset()).unwrap();
    let size = log.size_bytes();
    assert!(size <= 8192 + 4096 && size > 8192 - 4096, "size {size}");
}

#[test]
fn delete_records_moves_the_log_start_and_survives_restart() {
    let backend = memory();
    let log = open(&backend, small_config());
    for _ in 0..30 {
        log.append(&batch(5, 100, 0, Compression::None, 0), E0, 0).unwrap();
    }
    let segments = log.segment_count();
    assert_eq!(log.delete_records_before(77).unwrap(), 77);
    assert!(log.segment_count() < segments);
    assert!(matches!(log.read(76, 100, 150), Err(ReadError::OffsetOutOfRange { .. })));
    // The batch holding 77 starts at 75; it is returned whole and the consumer skips.
    let r = log.read(77, 100, 150).unwrap();
    assert_eq!(split_batches(&r.records)[0].0, 75);
    assert!(log.delete_records_before(151).is_err());
    drop(log);
    let log = open(&backend, small_config());
    assert_eq!(log.log_start_offset(), 77);
}

#[test]
fn truncation_cuts_whole_batches_and_the_epoch_cache() {
    let backend = memory();
    let log = open(&backend, small_config());
    let b = batch(4, 200, 0, Compression::None, 0);
    for epoch in [0, 0, 0, 2, 2, 2, 2, 5, 5, 5, 5, 5, 5, 5] {
        log.append(&b, LeaderEpoch(epoch), 0).unwrap();
    }
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(0)), (LeaderEpoch(0), 12));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(1)), (LeaderEpoch(0), 12));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(2), 28));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(5)), (LeaderEpoch(5), 56));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(6)), (LeaderEpoch::UNDEFINED, -1));
    let stale = log.append(&b, LeaderEpoch(4), 0).unwrap_err();
    assert_eq!(stale.error_code(), ErrorCode::FencedLeaderEpoch);

    let segments = log.segment_count();
    // Mid-batch: the batch holding offset 30 (28..=31) goes entirely.
    assert_eq!(log.truncate_to(30, 0).unwrap(), 28);
    assert!(log.segment_count() < segments);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(5)), (LeaderEpoch::UNDEFINED, -1));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(2), 28));
    let all = read_all(&log);
    assert_eq!(all.len(), 7);
    assert_eq!(all.last().unwrap().0, 24);
    // New appends continue at the new end, in a new epoch, and survive a reopen.
    let info = log.append(&b, LeaderEpoch(7), 0).unwrap();
    assert_eq!(info.base_offset, 28);
    drop(log);
    let log = open(&backend, small_config());
    assert_eq!(log.log_end_offset(), 32);
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(2)), (LeaderEpoch(2), 28));
    assert_eq!(log.end_offset_for_epoch(LeaderEpoch(7)), (LeaderEpoch(7), 32));
    assert_eq!(read_all(&log).len(), 8);
    // Truncating below the start empties the log and restarts it there.
    assert_eq!(log.truncate_to(0, 0).unwrap(), 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert!(log.epoch_entries().is_empty());
}

#[test]
fn follower_appends_keep_offsets_and_epochs() {
    let leader_backend = memory();
    let leader = open(&leader_backend, small_config());
    for epoch in [1, 1, 3] {
        leader.append(&batch(3, 50, 0, Compression::None, 0), LeaderEpoch(epoch), 0).unwrap();
    }
    let fetched = leader.read(0, 1 << 20, leader.log_end_offset()).unwrap();
    let follower = Log::open(memory(), "/f", small_config(), 0).unwrap().0;
    follower.append_replicated(&fetched.records, 0).unwrap();
    assert_eq!(read_all(&follower), read_all(&leader));
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    let again = follower.append_replicated(&fetched.records, 0).unwrap_err();
    assert_eq!(again.error_code(), ErrorCode::OffsetOutOfRange);
}

#[test]
fn flush_policies_report_the_flushed_offset() {
    let b = batch(2, 10, 0, Compression::None, 0);
    let log = Log::open(memory(), "/a", LogConfig { flush: FlushPolicy::Always, ..small_config() }, 0).unwrap().0;
    log.append(&b, E0, 0).unwrap();
    assert_eq!(log.flushed_offset(), 2, "always: synced before append returns");

    let interval = FlushPolicy::Interval { messages: 5, ms: 100 };
    let log = Log::open(memory(), "/i", LogConfig { flush: interval, ..small_config() }, 0).unwrap().0;
    log.append(&b, E0, 0).unwrap();
    log.append(&b, E0, 0).unwrap();
    assert_eq!(log.flushed_offset(), 0);
    log.append(&b, E0, 0).unwrap();
    assert_eq!(log.flushed_offset(), 6, "5 unflushed messages trigger a flush");
    log.append(&b, E0, 10).unwrap();
    assert!(!log.flush_if_due(50).unwrap());
    assert!(log.flush_if_due(100).unwrap());
    assert_eq!(log.flushed_offset(), 8);

    let log = Log::open(memory(), "/n", small_config(), 0).unwrap().0;
    log.append(&b, E0, 0).unwrap();
    assert_eq!(log.flushed_offset(), 0);
    log.flush(0).unwrap();
    assert_eq!(log.flushed_offset(), 2);
}

#[test]
fn an_unflushed_append_is_synced_by_its_completion_and_one_sync_covers_earlier_ones() {
    let b = batch(2, 10, 0, Compression::None, 0);
    let log = Log::open(memory(), "/u", LogConfig { flush: FlushPolicy::Always, ..small_config() }, 0).unwrap().0;
    let first = log.append_unflushed(&b, E0, 0).unwrap();
    let second = log.append_unflushed(&b, E0, 0).unwrap();
    assert_eq!((log.log_end_offset(), log.flushed_offset()), (4, 0), "written, not synced");
    assert_eq!(read_all(&log).len(), 2, "readable before the sync");
    log.complete_append(second.last_offset + 1, 0).unwrap();
    assert_eq!(log.flushed_offset(), 4);
    log.complete_append(first.last_offset + 1, 0).unwrap();
    assert_eq!(log.flushed_offset(), 4, "already covered");
    // A retry of an idempotent batch is a duplicate answered only once its original is synced.
    let idempotent = idempotent_batch(7, 0, 0, 1);
    let original = log.append_unflushed(&idempotent, E0, 0).unwrap();
    let retry = log.append_unflushed(&idempotent, E0, 0).unwrap();
    assert!(retry.duplicate && retry.last_offset == original.last_offset);
    assert_eq!(log.flushed_offset(), 4);
    log.complete_append(retry.last_offset + 1, 0).unwrap();
    assert_eq!(log.flushed_offset(), 5);
}

#[test]
fn group_commit_serves_concurrent_appenders() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig { flush: FlushPolicy::Always, ..LogConfig::default() };
    let (log, _) = Log::open(Arc::new(FileBackend), tmp.path().join("g-0"), config, 0).unwrap();
    let log = Arc::new(log);
    let b = batch(4, 100, 0, Compression::None, 0);
    std::thread::scope(|scope| {
        for _ in 0..8 {
            let log = &log;
            let b = &b;
            scope.spawn(move || {
                for _ in 0..50 {
                    let info = log.append(b, E0, 0).unwrap();
                    assert!(log.flushed_offset() > info.last_offset, "acked before synced");
                }
            });
        }
    });
    assert_eq!(log.log_end_offset(), 8 * 50 * 4);
    let batches = read_all(&log);
    assert_eq!(batches.len(), 400);
    assert_eq!(log.verify().unwrap(), 400);
}

#[test]
fn idempotent_producers_get_exactly_once_appends_across_restarts() {
    let backend = memory();
    let log = open(&backend, small_config());
    let first = log.append(&idempotent_batch(7, 0, 0, 3), E0, 0).unwrap();
    assert_eq!((first.base_offset, first.duplicate), (0, false));
    log.append(&batch(2, 10, 0, Compression::None, 1), E0, 0).unwrap(); // a plain producer in between
    let second = log.append(&idempotent_batch(7, 0, 3, 2), E0, 0).unwrap();
    assert_eq!(second.base_offset, 5);
    // A retry of the first batch: success with the original offsets, nothing written.
    let retry = log.append(&idempotent_batch(7, 0, 0, 3), E0, 0).unwrap();
    assert_eq!((retry.base_offset, retry.last_offset, retry.duplicate), (0, 2, true));
    assert_eq!(log.log_end_offset(), 7);
    // A gap and a stale epoch are refused with Kafka's codes.
    let gap = log.append(&idempotent_batch(7, 0, 9, 1), E0, 0).unwrap_err();
    assert_eq!(gap.error_code(), ErrorCode::OutOfOrderSequenceNumber);
    log.append(&idempotent_batch(7, 1, 0, 1), E0, 0).unwrap();
    let stale = log.append(&idempotent_batch(7, 0, 5, 1), E0, 0).unwrap_err();
    assert_eq!(stale.error_code(), ErrorCode::InvalidProducerEpoch);
    let unknown = log.append(&idempotent_batch(8, 0, 4, 1), E0, 0).unwrap_err();
    assert_eq!(unknown.error_code(), ErrorCode::UnknownProducerId);

    // State survives an unclean reopen (replayed from the log) and a clean one (snapshot).
    drop(log);
    let log = open(&backend, small_config());
    assert!(log.append(&idempotent_batch(7, 1, 0, 1), E0, 0).unwrap().duplicate);
    log.append(&idempotent_batch(7, 1, 1, 1), E0, 0).unwrap();
    log.close(0).unwrap();
    let log = open(&backend, small_config());
    assert_eq!(log.producer_count(), 1);
    assert!(log.append(&idempotent_batch(7, 1, 1, 1), E0, 0).unwrap().duplicate);
    assert_eq!(log.append(&idempotent_batch(7, 1, 2, 1), E0, 0).unwrap().base_offset, 9);
    // Idle producers expire (batch timestamps are 1000 here).
    assert_eq!(log.expire_producers(1_000 + 60_000, 30_000), 1);
    assert_eq!(
        log.append(&idempotent_batch(7, 1, 3, 1), E0, 0).unwrap_err().error_code(),
        ErrorCode::UnknownProducerId
    );
}

#[test]
fn closed_log_refuses_writes() {
    let log = Log::open(memory(), "/c", small_config(), 0).unwrap().0;
    log.close(0).unwrap();
    let error = log.append(&batch(1, 1, 0, Compression::None, 0), E0, 0).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::KafkaStorageError);
    let r = log.read(0, 10, 0).unwrap();
    assert_eq!(r.records, Bytes::new());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// After any appends and truncations, a read at every offset returns the batch that
        /// holds it, offset_for_timestamp agrees with a linear scan, and a reopen (clean or
        /// not) gives the same log.
        #[test]
        fn reads_and_truncation_agree_with_a_model(
            ops in prop::collection::vec((1usize..8, 0usize..400, 0u8..10), 1..60),
            index_interval in prop::sample::select(vec![1u64, 100, 4096]),
        ) {
            let config = LogConfig { segment_bytes: 3000, index_interval_bytes: index_interval, ..small_config() };
            let backend = memory();
            let log = open(&backend, config.clone());
            // model: (base, last, timestamps of records)
            let mut model: Vec<(i64, i64, Vec<i64>)> = Vec::new();
            let mut epoch = 0;
            for (i, &(count, value_bytes, action)) in ops.iter().enumerate() {
                if action == 0 && !model.is_empty() {
                    let end = log.log_end_offset();
                    let cut = end - (value_bytes as i64 % 20).min(end);
                    log.truncate_to(cut, 0).unwrap();
                    model.retain(|&(_, last, _)| last < cut);
                    epoch += 1;
                } else {
                    // Timestamps wander so the time index sees non-monotonic batches.
                    let ts = 10_000 + ((i as i64 * 7919) % 50) * 100;
                    let info = log.append(&batch(count, value_bytes, ts, Compression::None, i as u8), LeaderEpoch(epoch), 0).unwrap();
                    model.push((info.base_offset, info.last_offset, (0..count as i64).map(|j| ts + j).collect()));
                }
                prop_assert_eq!(log.log_end_offset(), model.last().map_or(0, |m| m.1 + 1));
            }
            for reopen in 0..3 {
                let end = log_end(&model);
                let reopened = match reopen {
                    0 => None,
                    1 => { log.checkpoint().unwrap(); Some(open(&backend, config.clone())) }
                    _ => Some(open(&backend, config.clone())),
                };
                let log = reopened.as_ref().unwrap_or(&log);
                prop_assert_eq!(log.log_end_offset(), end);
                for &(base, last, _) in &model {
                    for offset in [base, (base + last) / 2, last] {
                        let r = log.read(offset, 1, end).unwrap();
                        let first = split_batches(&r.records)[0].0;
                        prop_assert_eq!(first, base, "read at {} of batch {}..={}", offset, base, last);
                    }
                }
                for target in [0, 10_000, 10_050, 12_345, 14_900, 20_000] {
                    let expected = model.iter().flat_map(|(base, _, ts)| ts.iter().enumerate().map(move |(j, &t)| (t, base + j as i64)))
                        .filter(|&(t, _)| t >= target).min_by_key(|&(_, o)| o);
                    prop_assert_eq!(log.offset_for_timestamp(target).unwrap(), expected, "target {} reopen {}", target, reopen);
                }
            }
        }
    }

    fn log_end(model: &[(i64, i64, Vec<i64>)]) -> i64 {
        model.last().map_or(0, |m| m.1 + 1)
    }
}

#[test]
fn truncate_fully_and_start_at_moves_an_empty_log_past_its_end() {
    let tmp = tempfile::tempdir().unwrap();
    let backend: Arc<dyn Backend> = Arc::new(FileBackend);
    let dir = tmp.path().join("t-0");
    let (log, _) = Log::open(backend.clone(), &dir, small_config(), 0).unwrap();
    let record = |i: i64| TestRecord { offset: 0, timestamp: i, key: None, value: Some(vec![1; 10]), headers: vec![] };
    for i in 0..5 {
        log.append(&encode(&[record(i)], Compression::None), LeaderEpoch(3), 0).unwrap();
    }
    log.truncate_fully_and_start_at(100, 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.flushed_offset()), (100, 100, 100));
    assert_eq!(log.latest_epoch(), None, "the epochs of removed records are forgotten");
    assert!(matches!(log.read(0, 1 << 20, 100), Err(ReadError::OffsetOutOfRange { .. })));
    // A follower's next append lands at the new start, and all of it survives a crash.
    let mut fetched = encode(&[record(7)], Compression::None);
    keel_storage::batch::assign_offset_and_epoch(&mut fetched, 100, 4);
    log.append_replicated(&fetched, 0).unwrap();
    assert_eq!(log.log_end_offset(), 101);
    drop(log);
    let (log, _) = Log::open(backend, &dir, small_config(), 0).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 101));
    assert_eq!(log.latest_epoch(), Some(LeaderEpoch(4)));
    assert_eq!(decode(log.read(100, 1 << 20, 101).unwrap().records)[0].value, Some(vec![1; 10]));
}

/// Retention deletes only records every in-sync replica holds (issue 17, F6): no segment
/// reaching the high watermark goes, by time or by size, and an expired active segment rolls
/// and goes only once the whole log lies below it.
#[test]
fn retention_never_deletes_records_at_or_above_the_high_watermark() {
    let fill = |log: &Log| {
        for i in 0..40 {
            log.append(&batch(5, 100, i * 1000, Compression::None, 0), E0, 0).unwrap();
        }
    };
    let kept = |log: &Log, high_watermark: i64| {
        let start = log.log_start_offset();
        assert!(
            start <= high_watermark,
            "retention deleted records at or above the high watermark {high_watermark}: log start {start}"
        );
        assert_eq!(log.log_end_offset(), 200);
        let batches = read_all(log);
        assert!(batches.first().unwrap().0 <= high_watermark, "the batch holding the high watermark is gone");
        assert_eq!(batches.last().unwrap().0, 195);
    };

    // By time: every record is expired, but only segments wholly below the high watermark go.
    let config = LogConfig { retention_ms: Some(10_000), ..small_config() };
    let log = open(&memory(), config);
    fill(&log);
    let segments = log.segment_count();
    let deleted = log.enforce_retention(1_000_000, 57).unwrap();
    kept(&log, 57);
    assert!(!deleted.is_empty(), "segments wholly below the high watermark expire");
    assert!(deleted.iter().all(|d| d.next_offset <= 57), "{deleted:?}");
    assert_eq!(log.segment_count(), segments - deleted.len());
    // The active segment's last batch is not yet replicated: it stays, unrolled.
    log.enforce_retention(1_000_000, 199).unwrap();
    kept(&log, 199);
    assert_eq!(log.segment_count(), 1);
    // Once everything is replicated, the active segment rolls and goes too.
    log.enforce_retention(1_000_000, 200).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.size_bytes()), (200, 200, 0));

    // By size: the log stays over retention.bytes rather than lose unreplicated records.
    let config = LogConfig { retention_bytes: Some(8192), ..small_config() };
    let log = open(&memory(), config);
    fill(&log);
    let size = log.size_bytes();
    log.enforce_retention(0, 30).unwrap();
    kept(&log, 30);
    assert!(log.size_bytes() > size - 8192, "only the segments below offset 30 may go");
    log.enforce_retention(0, 200).unwrap();
    let size = log.size_bytes();
    assert!(size <= 8192 + 4096 && size > 8192 - 4096, "size {size}");
}

/// After a follower cuts a divergent tail, each idempotent producer is remembered as a replay
/// of the kept log gives it (issue 17, F7): its last five kept batches and their epoch, also
/// across an unclean reopen. Before, a producer whose remembered batches all lay above the cut
/// was forgotten, and its retry got UNKNOWN_PRODUCER_ID.
#[test]
fn truncation_remembers_producers_as_a_replay_of_the_kept_log() {
    // With the snapshots taken at segment rolls, and without them (a replay from the start).
    for snapshots in [false, true] {
        let backend = memory();
        let log = open(&backend, small_config());
        let mut offsets = std::collections::BTreeMap::new();
        let mut append = |log: &Log, producer: i64, epoch: i16, sequence: i32| {
            let info = log.append(&idempotent_batch(producer, epoch, sequence, 1), E0, 0).unwrap();
            assert!(!info.duplicate);
            offsets.insert((producer, epoch, sequence), info.base_offset);
        };
        // Kept: producer 7 sequences 0..=4, producer 8 0..=6, producer 9 (epoch 0) 0..=2,
        // with plain batches between them, over several segments.
        for sequence in 0..7 {
            append(&log, 8, 0, sequence);
            if sequence < 5 {
                append(&log, 7, 0, sequence);
            }
            if sequence < 3 {
                append(&log, 9, 0, sequence);
            }
            log.append(&batch(1, 900, 0, Compression::None, 1), E0, 0).unwrap();
        }
        let cut = log.log_end_offset();
        assert!(log.segment_count() > 1);
        // Cut: producer 7 5..=9 (all five remembered batches), producer 8 7..=8, producer 9 in
        // epoch 1, and another roll.
        for sequence in 5..10 {
            append(&log, 7, 0, sequence);
            if sequence < 7 {
                append(&log, 8, 0, sequence + 2);
            }
            append(&log, 9, 1, sequence - 5);
            log.append(&batch(1, 900, 0, Compression::None, 2), E0, 0).unwrap();
        }
        let snapshot_files = || {
            let names = backend.list(std::path::Path::new("/data/t-0")).unwrap();
            names.into_iter().filter(|n| n.ends_with(".snapshot")).collect::<Vec<_>>()
        };
        if snapshots {
            assert!(!snapshot_files().is_empty(), "every roll leaves a producer snapshot");
        } else {
            for name in snapshot_files() {
                backend.remove_file(&std::path::Path::new("/data/t-0").join(name)).unwrap();
            }
        }
        log.checkpoint().unwrap();
        assert_eq!(log.truncate_to(cut, 0).unwrap(), cut);

        let expect_kept = |log: &Log, context: &str| {
            for (producer, epoch, sequence) in [(7, 0, 4), (7, 0, 0), (8, 0, 6), (8, 0, 2), (9, 0, 2)] {
                let retry = log.append(&idempotent_batch(producer, epoch, sequence, 1), E0, 0);
                let offset = offsets[&(producer, epoch, sequence)];
                match retry {
                    Ok(info) => assert!(
                        info.duplicate && info.base_offset == offset,
                        "{context}: producer {producer} sequence {sequence}: {info:?}, expected a duplicate at {offset}"
                    ),
                    Err(e) => panic!(
                        "{context}: producer {producer} retried sequence {sequence} (kept at offset {offset}): {e}"
                    ),
                }
            }
            // Producer 8's batch of sequence 1 is the sixth newest: no longer remembered.
            let old = log.append(&idempotent_batch(8, 0, 1, 1), E0, 0).unwrap_err();
            assert_eq!(old.error_code(), ErrorCode::OutOfOrderSequenceNumber, "{context}");
            assert_eq!(log.producer_count(), 3, "{context}");
        };
        expect_kept(&log, &format!("after the cut (snapshots {snapshots})"));
        // Plain records past the old end, then an unclean reopen: the snapshot written before
        // the cut must not come back.
        for _ in 0..20 {
            log.append(&batch(1, 10, 0, Compression::None, 3), E0, 0).unwrap();
        }
        drop(log);
        let log = open(&backend, small_config());
        expect_kept(&log, &format!("after an unclean reopen (snapshots {snapshots})"));
        // The next sequences are accepted, and producer 9 may still bump its epoch.
        for (producer, epoch, sequence) in [(7, 0, 5), (8, 0, 7), (9, 0, 3), (9, 1, 0)] {
            let info = log.append(&idempotent_batch(producer, epoch, sequence, 1), E0, 0).unwrap();
            assert!(!info.duplicate, "producer {producer} epoch {epoch} sequence {sequence}");
        }

        // A full reset forgets every producer: none of their records is left.
        log.truncate_fully_and_start_at(1_000, 0).unwrap();
        assert_eq!(log.producer_count(), 0);
        let unknown = log.append(&idempotent_batch(7, 0, 6, 1), E0, 0).unwrap_err();
        assert_eq!(unknown.error_code(), ErrorCode::UnknownProducerId);
        assert_eq!(log.append(&idempotent_batch(7, 0, 0, 1), E0, 0).unwrap().base_offset, 1_000);
    }
}
