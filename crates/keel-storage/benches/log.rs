//! Storage benchmarks: `cargo bench -p keel-storage` (results go in docs/benchmarks.md).
//!
//! - append throughput with flush `never`, 16 KiB and 128 KiB batches of 1 KiB records;
//! - group commit: flush `always` with 1, 2, 4, 8, 16 concurrent appenders;
//! - recovery time after an unclean stop (1 GiB log, 64 MiB unflushed);
//! - reading 1 MiB ranges.
//!
//! Sizes scale with `KEEL_BENCH_SCALE` (default 1.0); `KEEL_BENCH_DIR` picks the directory
//! (default: a temporary directory under the current one, so it lands on the project disk).
//! Each benchmark prints one line; these are measurements, not pass/fail tests.
#![allow(clippy::disallowed_methods)] // benchmarks read the clock
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
use keel_storage::backend::FileBackend;
use keel_storage::{FlushPolicy, Log, LogConfig};
use keel_types::{LeaderEpoch, Rng};

const MIB: f64 = 1024.0 * 1024.0;

fn scale() -> f64 {
    std::env::var("KEEL_BENCH_SCALE").ok().and_then(|s| s.parse().ok()).unwrap_or(1.0)
}

fn scaled(bytes: u64) -> u64 {
    ((bytes as f64) * scale()) as u64
}

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var("KEEL_BENCH_DIR").map(PathBuf::from).unwrap_or_else(|_| PathBuf::from("."));
    tempfile::Builder::new().prefix("keel-bench-").tempdir_in(base).expect("bench dir")
}

/// A producer batch of `count` records of 1 KiB random values.
fn batch(count: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let records: Vec<Record> = (0..count)
        .map(|i| {
            let mut value = vec![0u8; 1024];
            rng.fill(&mut value);
            Record {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(value)),
                headers: Default::default(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .expect("encode");
    buf.to_vec()
}

/// Writes back dirty pages left by earlier runs, so one measurement does not pay for another.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig { flush, retention_ms: None, ..LogConfig::default() }
}

fn append_never(batch_records: usize) {
    let dir = bench_dir();
    let b = batch(batch_records, 1);
    let total = scaled(2 << 30);
    let (log, _) = Log::open(Arc::new(FileBackend), dir.path().join("t-0"), config(FlushPolicy::Never), 0).unwrap();
    let appends = total / b.len() as u64;
    settle();
    let start = Instant::now();
    for _ in 0..appends {
        log.append(&b, LeaderEpoch(0), 0).unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let bytes = appends as f64 * b.len() as f64;
    println!(
        "append flush=never batch={} KiB: {:.0} MiB/s ({} MiB in {:.2} s)",
        b.len() / 1024,
        bytes / MIB / elapsed,
        (bytes / MIB) as u64,
        elapsed
    );
}

fn group_commit(appenders: usize) {
    let dir = bench_dir();
    let b = batch(16, 2);
    let (log, _) = Log::open(Arc::new(FileBackend), dir.path().join("t-0"), config(FlushPolicy::Always), 0).unwrap();
    let log = Arc::new(log);
    let seconds = 3.0 * scale().max(0.2);
    settle();
    let start = Instant::now();
    let appended: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..appenders)
            .map(|_| {
                let log = &log;
                let b = &b;
                scope.spawn(move || {
                    let mut n = 0u64;
                    while start.elapsed().as_secs_f64() < seconds {
                        log.append(b, LeaderEpoch(0), 0).unwrap();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "append flush=always appenders={appenders:>2} batch=16 KiB: {:>7.1} MiB/s, {:>6.0} appends/s",
        appended as f64 * b.len() as f64 / MIB / elapsed,
        appended as f64 / elapsed
    );
}

fn recovery() {
    let dir = bench_dir();
    let path = dir.path().join("t-0");
    let b = batch(128, 3);
    let flushed = scaled(1 << 30);
    let unflushed = scaled(64 << 20);
    {
        let (log, _) = Log::open(Arc::new(FileBackend), &path, config(FlushPolicy::Never), 0).unwrap();
        for _ in 0..flushed / b.len() as u64 {
            log.append(&b, LeaderEpoch(0), 0).unwrap();
        }
        log.flush(0).unwrap();
        log.checkpoint().unwrap();
        for _ in 0..unflushed / b.len() as u64 {
            log.append(&b, LeaderEpoch(0), 0).unwrap();
        }
        // Dropped without close: the next open sees an unclean stop.
    }
    let start = Instant::now();
    let (log, report) = Log::open(Arc::new(FileBackend), &path, config(FlushPolicy::Never), 0).unwrap();
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "recovery after unclean stop: {:.3} s for a {} MiB log with {} MiB unflushed (scanned {} MiB, {} segments)",
        elapsed,
        log.size_bytes() >> 20,
        unflushed >> 20,
        report.scanned_bytes >> 20,
        report.segments
    );
    let start = Instant::now();
    log.close(0).unwrap();
    drop(log);
    let close = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (_log, report) = Log::open(Arc::new(FileBackend), &path, config(FlushPolicy::Never), 0).unwrap();
    println!(
        "open after clean close: {:.4} s (close took {:.3} s, scanned {} bytes)",
        start.elapsed().as_secs_f64(),
        close,
        report.scanned_bytes
    );
}

fn reads() {
    let dir = bench_dir();
    let b = batch(16, 4);
    let (log, _) = Log::open(Arc::new(FileBackend), dir.path().join("t-0"), config(FlushPolicy::Never), 0).unwrap();
    let total = scaled(512 << 20);
    for _ in 0..total / b.len() as u64 {
        log.append(&b, LeaderEpoch(0), 0).unwrap();
    }
    let end = log.log_end_offset();
    let mut rng = Rng::new(5);
    let reads = 2000;
    let mut bytes = 0usize;
    let start = Instant::now();
    for _ in 0..reads {
        let from = rng.below(end as u64) as i64;
        bytes += log.read(from, 1 << 20, end).unwrap().records.len();
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "read 1 MiB ranges (random offsets, page cache): {:.0} MiB/s, {:.1} us per read",
        bytes as f64 / MIB / elapsed,
        elapsed / reads as f64 * 1e6
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a filter word selects benchmarks.
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    if wanted("append") {
        append_never(16);
        append_never(128);
    }
    if wanted("group_commit") {
        for n in [1, 2, 4, 8, 16] {
            group_commit(n);
        }
    }
    if wanted("recovery") {
        recovery();
    }
    if wanted("read") {
        reads();
    }
}
