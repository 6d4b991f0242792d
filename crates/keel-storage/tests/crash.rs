//! Crash tests on the crash-simulating backend: for every flush policy and many seeded crash
//! points, after power loss and reopen the log holds a prefix of what was appended, every
//! batch in it is valid, and everything the log reported flushed is there.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{batch, read_all};
use kafka_protocol::records::Compression;
use keel_storage::backend::{Backend, CrashBackend};
use keel_storage::{FlushPolicy, Log, LogConfig, OpenError, PRODUCER_ID_EXPIRATION_MS};
use keel_types::{LeaderEpoch, Rng};

const DIR: &str = "/data/topic-0";

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_ms: 500,
        index_interval_bytes: 128,
        recovery_checkpoint_bytes: 1024,
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// What the test knows the log should hold.
#[derive(Debug, Default)]
struct Model {
    /// Every batch the log may hold, as stored (offset and epoch assigned), in offset order.
    batches: Vec<(i64, Vec<u8>)>,
    /// Offsets below this were reported flushed and must survive.
    durable_end: i64,
}

fn stored(bytes: &[u8], base_offset: i64, epoch: i32) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b[12..16].copy_from_slice(&epoch.to_be_bytes());
    b
}

fn last_offset(bytes: &[u8]) -> i64 {
    i64::from_be_bytes(bytes[0..8].try_into().unwrap())
        + i64::from(i32::from_be_bytes(bytes[23..27].try_into().unwrap()))
}

/// Runs a seeded workload until it ends or an operation fails (the power went out).
fn workload(log: &Log, seed: u64, model: &mut Model) {
    let mut rng = Rng::new(seed);
    let codecs = [Compression::None, Compression::None, Compression::Lz4, Compression::Zstd];
    let pool: Vec<Vec<u8>> = (0..6)
        .map(|i| {
            let count = rng.range_inclusive(1, 6) as usize;
            let value_bytes = rng.below(300) as usize;
            batch(count, value_bytes, 1_000 + i * 10, codecs[rng.below(4) as usize], i as u8)
        })
        .collect();
    let mut now_ms = 1_000;
    let mut epoch = 0;
    for _ in 0..120 {
        let ok = match rng.below(100) {
            0..=74 => {
                let bytes = &pool[rng.below(pool.len() as u64) as usize];
                let base = log.log_end_offset();
                // Whether or not the append succeeds, its batch may be on disk afterwards.
                model.batches.push((base, stored(bytes, base, epoch)));
                log.append(bytes, LeaderEpoch(epoch), now_ms).is_ok()
            }
            75..=79 => log.flush(now_ms).is_ok(),
            80..=84 => log.checkpoint().is_ok(),
            85..=89 => {
                let end = log.log_end_offset();
                let offset = end - rng.below(15).min(end as u64) as i64;
                let result = log.truncate_to(offset, now_ms);
                // A truncation that failed may or may not have happened; either log is fine,
                // but nothing from the batch holding `offset` on may be claimed durable.
                let cut =
                    model.batches.iter().find(|(_, b)| last_offset(b) >= offset).map_or(offset, |(base, _)| *base);
                model.durable_end = model.durable_end.min(cut);
                if let Ok(end) = result {
                    model.durable_end = model.durable_end.min(end);
                    model.batches.retain(|(_, b)| last_offset(b) < offset);
                    epoch += 1;
                }
                result.is_ok()
            }
            _ => {
                now_ms += rng.below(300) as i64;
                log.flush_if_due(now_ms).is_ok()
            }
        };
        if !ok {
            return;
        }
        model.durable_end = model.durable_end.max(log.flushed_offset());
    }
}

/// offset_for_timestamp agrees with a scan of every record.
fn check_time_lookups(log: &Log, context: &str) {
    let records: Vec<(i64, i64)> = read_all(log)
        .into_iter()
        .flat_map(|(_, bytes)| common::decode(bytes::Bytes::from(bytes)))
        .map(|r| (r.timestamp, r.offset))
        .collect();
    for target in [0, 1_000, 1_013, 1_025, 1_049, 1_051, 10_000] {
        let expected = records.iter().filter(|(t, _)| *t >= target).min_by_key(|(_, o)| *o).copied();
        assert_eq!(log.offset_for_timestamp(target).unwrap(), expected, "{context}: time lookup {target}");
    }
}

struct Outcome {
    truncated_bytes: u64,
}

/// One run: workload with power lost at mutation `crash_at` (or never), crash, reopen, check.
fn run(flush: FlushPolicy, seed: u64, crash_at: Option<u64>) -> (u64, Outcome) {
    let backend = CrashBackend::new();
    let shared: Arc<dyn Backend> = Arc::new(backend.clone());
    let mut model = Model::default();
    let (log, _) = Log::open(shared, DIR, config(flush), 1_000).expect("fresh open");
    if let Some(limit) = crash_at {
        backend.fail_after(limit);
    }
    workload(&log, seed, &mut model);
    let mutations = backend.mutations();
    drop(log);

    let mut after = backend.crash(&mut Rng::new(seed ^ 0xC0FFEE));
    let context = format!("policy {} seed {seed} crash at {crash_at:?}", flush.name());
    if crash_at.is_some() && seed % 2 == 0 {
        // Lose power again, this time during recovery itself.
        let during_recovery = after.mutations() + Rng::new(seed).below(12);
        after.fail_after(during_recovery);
        let _ = Log::open(Arc::new(after.clone()), DIR, config(flush), 1_500);
        after = after.crash(&mut Rng::new(seed ^ 0xBEEF));
    }
    let (log, report) = match Log::open(Arc::new(after.clone()), DIR, config(flush), 2_000) {
        Ok(opened) => opened,
        Err(e) => panic!("{context}: reopen failed: {e}"),
    };
    let recovered = read_all(&log);
    assert!(recovered.len() <= model.batches.len(), "{context}: more batches than appended");
    for (i, (got, want)) in recovered.iter().zip(&model.batches).enumerate() {
        assert_eq!(got.0, want.0, "{context}: batch {i} offset");
        assert!(got.1 == want.1, "{context}: batch {i} at offset {} differs", got.0);
    }
    assert!(
        log.log_end_offset() >= model.durable_end,
        "{context}: flushed data lost: log end {} < flushed {}",
        log.log_end_offset(),
        model.durable_end
    );
    assert_eq!(log.verify().expect("every batch valid") as usize, recovered.len());
    check_time_lookups(&log, &context);
    // The recovered log keeps working: append, close cleanly, reopen without scanning.
    let epoch = log.latest_epoch().map_or(0, |e| e.0);
    log.append(&batch(2, 10, 5, Compression::None, 9), LeaderEpoch(epoch), 3_000).expect("append after recovery");
    log.close(3_000).expect("close");
    let (log, clean) = Log::open(Arc::new(after), DIR, config(flush), 4_000).expect("clean reopen");
    assert!(clean.clean_shutdown && clean.scanned_bytes == 0, "{context}: {clean:?}");
    assert_eq!(read_all(&log).len(), recovered.len() + 1);
    check_time_lookups(&log, &context);
    (mutations, Outcome { truncated_bytes: report.truncated_bytes })
}

fn sweep(flush: FlushPolicy, seeds: u64) {
    let mut torn = 0;
    for seed in 0..seeds {
        let (mutations, _) = run(flush, seed, None);
        let crash_at = Rng::new(seed.wrapping_mul(7919)).below(mutations + 1);
        let (_, outcome) = run(flush, seed, Some(crash_at));
        torn += u64::from(outcome.truncated_bytes > 0);
    }
    // The sweep must actually exercise torn tails, or it proves little.
    if flush != FlushPolicy::Always {
        assert!(torn > 0, "no crash point left a torn tail for policy {}", flush.name());
    }
}

#[test]
fn crash_recovery_with_flush_always() {
    sweep(FlushPolicy::Always, 300);
}

#[test]
fn crash_recovery_with_flush_interval() {
    sweep(FlushPolicy::Interval { messages: 8, ms: 200 }, 300);
}

#[test]
fn crash_recovery_with_flush_never() {
    sweep(FlushPolicy::Never, 300);
}

/// Data the checkpoint says was flushed is never dropped silently: damage there fails the
/// open with the file and byte position.
#[test]
fn corruption_in_flushed_data_is_reported_not_skipped() {
    let backend = CrashBackend::new();
    // One index entry per segment, so recovery verifies the whole segment holding the
    // recovery point.
    let config = LogConfig { index_interval_bytes: 1 << 20, segment_bytes: 1 << 20, ..config(FlushPolicy::Always) };
    let (log, _) = Log::open(Arc::new(backend.clone()), DIR, config.clone(), 0).unwrap();
    for i in 0..10 {
        log.append(&batch(3, 100, i, Compression::None, i as u8), LeaderEpoch(0), 0).unwrap();
    }
    log.checkpoint().unwrap();
    let flushed_size = log.size_bytes();
    drop(log); // unclean: no clean checkpoint
    let file = Path::new(DIR).join("00000000000000000000.log");
    backend.corrupt_byte(&file, flushed_size / 2);
    let after = backend.crash(&mut Rng::new(1));
    match Log::open(Arc::new(after), DIR, config.clone(), 0) {
        Err(OpenError::Corrupt { file: f, position, reason }) => {
            assert_eq!(f, file);
            assert!(position <= flushed_size / 2, "position {position}");
            // A flipped byte under the CRC fails the checksum; one in the base offset (outside
            // it) breaks the offset sequence.
            assert!(reason.contains("CRC") || reason.contains("offsets"), "{reason}");
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("corrupt flushed data was accepted"),
    }
}

/// Old segments are trusted at open (nothing is scanned), so silent damage there is found by
/// `verify`, and reads report a damaged frame with its file and position.
#[test]
fn corruption_in_old_segments_is_found_by_verify_and_reads() {
    let backend = CrashBackend::new();
    let config = config(FlushPolicy::Always);
    let (log, _) = Log::open(Arc::new(backend.clone()), DIR, config.clone(), 0).unwrap();
    for i in 0..40 {
        log.append(&batch(3, 100, i, Compression::None, i as u8), LeaderEpoch(0), 0).unwrap();
    }
    log.close(0).unwrap();
    let file = Path::new(DIR).join("00000000000000000000.log");
    backend.corrupt_byte(&file, 200);
    let (log, _) = Log::open(Arc::new(backend.clone()), DIR, config.clone(), 0).unwrap();
    let error = log.verify().unwrap_err().to_string();
    assert!(error.contains("00000000000000000000.log") && error.contains("CRC"), "{error}");

    // Damage a frame (the batch length of the first batch): the read says where.
    backend.corrupt_byte(&file, 9);
    let (log, _) = Log::open(Arc::new(backend), DIR, config, 0).unwrap();
    let error = log.read(0, 1 << 20, log.log_end_offset()).unwrap_err().to_string();
    assert!(error.contains("00000000000000000000.log") && error.contains("byte 0"), "{error}");
}

/// Appends from three idempotent producers (with epoch bumps), plain batches that roll
/// segments, checkpoints and truncations, until the work ends or the power goes out.
fn producer_workload(log: &Log, seed: u64) {
    let mut rng = Rng::new(seed);
    // (base offset, producer, producer epoch, last sequence) of every idempotent batch written.
    let mut written: Vec<(i64, i64, i16, i32)> = Vec::new();
    let mut now_ms = 1_000;
    for _ in 0..150 {
        now_ms += rng.below(20) as i64;
        let ok = match rng.below(100) {
            0..=59 => {
                let producer = rng.range_inclusive(1, 3) as i64;
                let last = written.iter().rev().find(|w| w.1 == producer);
                let (epoch, sequence) = match last {
                    Some(&(_, _, epoch, _)) if rng.chance(1, 20) => (epoch + 1, 0),
                    Some(&(_, _, epoch, sequence)) => (epoch, sequence + 1),
                    None => (0, 0),
                };
                let count = rng.range_inclusive(1, 3) as usize;
                let base = log.log_end_offset();
                written.push((base, producer, epoch, sequence + count as i32 - 1));
                log.append(&common::idempotent_batch(producer, epoch, sequence, count), LeaderEpoch(0), now_ms).is_ok()
            }
            60..=79 => {
                let plain = batch(1, rng.below(400) as usize, now_ms, Compression::None, 1);
                log.append(&plain, LeaderEpoch(0), now_ms).is_ok()
            }
            80..=87 => log.checkpoint().is_ok(),
            88..=95 => {
                let end = log.log_end_offset();
                let result = log.truncate_to(end - rng.below(12).min(end as u64) as i64, now_ms);
                if let Ok(new_end) = result {
                    written.retain(|w| w.0 < new_end);
                }
                result.is_ok()
            }
            _ => log.flush(now_ms).is_ok(),
        };
        if !ok {
            return;
        }
    }
}

/// Every producer's answer to retries and next batches (base offset and whether it was a
/// duplicate, or the error code), asked in a fixed order. Accepted probes are appended.
fn probe_producers(log: &Log) -> Vec<String> {
    let mut answers = Vec::new();
    for producer in 1..=3 {
        for epoch in 0..=3 {
            for sequence in 0..30 {
                let answer =
                    match log.append(&common::idempotent_batch(producer, epoch, sequence, 1), LeaderEpoch(0), 5_000) {
                        Ok(info) => format!("offset {} duplicate {}", info.base_offset, info.duplicate),
                        Err(e) => format!("{:?}", e.error_code()),
                    };
                answers.push(format!("producer {producer} epoch {epoch} sequence {sequence}: {answer}"));
            }
        }
    }
    answers
}

/// After power loss, reopen and a truncation, idempotent producers are remembered exactly as
/// a replay of the recovered log from its start gives them (issue 17, F7). The snapshots
/// (unsynced ones at rolls, atomic ones at checkpoints) may be lost, torn or older than a
/// truncation; that may cost a longer replay, never a wrong answer. Checked against the same
/// disk image with every snapshot removed.
#[test]
fn producer_state_after_power_loss_is_a_replay_of_the_kept_log() {
    let config = config(FlushPolicy::Interval { messages: 8, ms: 200 });
    let image_dir = Path::new(DIR);
    for seed in 0..150 {
        let dry = CrashBackend::new();
        producer_workload(&Log::open(Arc::new(dry.clone()), DIR, config.clone(), 1_000).unwrap().0, seed);
        let backend = CrashBackend::new();
        let (log, _) = Log::open(Arc::new(backend.clone()), DIR, config.clone(), 1_000).unwrap();
        backend.fail_after(Rng::new(seed.wrapping_mul(7919)).below(dry.mutations() + 1));
        producer_workload(&log, seed);
        drop(log);

        let image = backend.crash(&mut Rng::new(seed ^ 0xFACE));
        let replayed = backend.crash(&mut Rng::new(seed ^ 0xFACE));
        for name in replayed.list(image_dir).unwrap() {
            if name.ends_with(".snapshot") || name == "producer-snapshot" {
                replayed.remove_file(&image_dir.join(name)).unwrap();
            }
        }
        let (log, _) = Log::open(Arc::new(image), DIR, config.clone(), 2_000).unwrap();
        let (reference, _) = Log::open(Arc::new(replayed), DIR, config.clone(), 2_000).unwrap();
        assert_eq!(read_all(&log), read_all(&reference), "seed {seed}: the same image recovers to the same log");
        let cut = log.log_end_offset() - Rng::new(seed).below(25).min(log.log_end_offset() as u64) as i64;
        for (when, truncate) in [("after reopen", false), ("after a truncation", true)] {
            if truncate {
                assert_eq!(log.truncate_to(cut, 3_000).unwrap(), reference.truncate_to(cut, 3_000).unwrap());
            }
            let (got, want) = (probe_producers(&log), probe_producers(&reference));
            if let Some(i) = (0..got.len()).find(|&i| got[i] != want[i]) {
                panic!("seed {seed} {when}: {}, but a replay of the log answers {}", got[i], want[i]);
            }
        }
    }
}

/// Retention's deletions survive power loss once [`Log::maintain`] returns: its checkpoint's
/// directory sync makes them durable, so a crash brings no deleted segment back (nor its
/// unflushed, possibly torn bytes) and the log start stays where retention moved it.
#[test]
fn maintenance_makes_retention_durable() {
    let disk = CrashBackend::new();
    let config = LogConfig { retention_ms: Some(1_000), segment_ms: i64::MAX as u64 / 4, ..config(FlushPolicy::Never) };
    let (log, _) = Log::open(Arc::new(disk.clone()), DIR, config.clone(), 0).unwrap();
    for i in 0..40 {
        log.append(&batch(2, 100, 1_000, Compression::None, i), LeaderEpoch(0), 0).unwrap();
    }
    assert!(log.segment_count() > 3);
    // Only segments wholly below the bound go, whatever retention.ms says.
    let deleted = log.maintain(1_000_000, 30, PRODUCER_ID_EXPIRATION_MS).unwrap();
    let start = log.log_start_offset();
    assert!(!deleted.is_empty() && start > 0 && start <= 30, "log start {start} after deleting {deleted:?}");
    for seed in 0..20 {
        let image = disk.crash(&mut Rng::new(seed));
        let (reopened, _) = Log::open(Arc::new(image), DIR, config.clone(), 1_000_000).unwrap();
        assert_eq!(reopened.log_start_offset(), start, "seed {seed}: the log start moved back after a crash");
    }
}
