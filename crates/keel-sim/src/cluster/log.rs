//! A replica's partition log in the simulation: keel-storage's real [`Log`] (segments of
//! RecordBatch v2 bytes, indexes, the leader-epoch cache, idempotent producer state, recovery)
//! over its broker's crash-simulating backend, and a cache of what each stored batch says.
//!
//! Every batch the simulation writes holds one record, and a record's identity is read from
//! the batch the log stores: the leader epoch from the header's `partitionLeaderEpoch` (which
//! the log assigns) and the producer's value, unique over the run, from the record's value
//! (its timestamp is the producer's CreateTime, which retention.ms judges). The cache
//! (`records`) holds that identity per offset, so the
//! oracle reads a log by offset without going to storage; it is kept in step with every
//! change through the log's answers, checked against the log's offsets after each one, and
//! rebuilt from a full read of the log whenever it is opened (checked against what it held
//! before: all of it after a clean close, a prefix after a crash).

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use keel_replication::{LocalLog, ReplicaLog};
use keel_storage::backend::CrashBackend;
use keel_storage::batch::{validate_batch, BatchBuilder, BatchHeader, BATCH_HEADER_BYTES};
use keel_storage::{
    AppendError, AppendInfo, DeletedSegment, FlushPolicy, Log, LogConfig, ReadError, ReadResult, RecoveryReport,
    PRODUCER_ID_EXPIRATION_MS,
};
use keel_types::LeaderEpoch;

/// A record as the simulator knows it: the leader epoch that wrote it and a value unique over
/// the whole run, so two copies of a record are recognised anywhere.
pub(crate) type Record = (LeaderEpoch, u64);

/// Most bytes one read of a whole log takes at a time (when a log is opened or verified).
const READ_ALL_BYTES: usize = 1 << 20;

/// The log configuration every simulated replica uses: `flush.policy=never` (the simulated OS
/// writes back), the run's retention, small segments and checkpoints so that rolls, segment
/// producer snapshots, retention and recovery from a checkpoint happen within a run.
pub(crate) fn log_config(
    segment_bytes: u64,
    recovery_checkpoint_bytes: u64,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
) -> LogConfig {
    LogConfig {
        segment_bytes,
        segment_ms: u64::MAX / 4,
        retention_ms,
        retention_bytes,
        index_interval_bytes: 512,
        flush: FlushPolicy::Never,
        recovery_checkpoint_bytes,
        ..LogConfig::default()
    }
}

/// The batch an idempotent producer sends for `value` at CreateTime `timestamp_ms`: one
/// record holding the value.
pub(crate) fn producer_batch(
    value: u64,
    timestamp_ms: i64,
    producer_id: i64,
    producer_epoch: i16,
    sequence: i32,
) -> Bytes {
    let mut builder = BatchBuilder::new(timestamp_ms);
    builder.idempotent(producer_id, producer_epoch, sequence).record(None, Some(&value.to_be_bytes()));
    Bytes::from(builder.build())
}

/// Reads a zig-zag varint (Kafka's varint and varlong) at `*at`, moving past it.
fn varint(bytes: &[u8], at: &mut usize) -> Option<i64> {
    let mut zigzag = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        zigzag |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some((zigzag >> 1) as i64 ^ -((zigzag & 1) as i64));
        }
    }
    None
}

/// The value of the one record in `batch` (whose header is `header`), decoded as a consumer
/// decodes an uncompressed record: length, attributes, timestamp delta, offset delta, key,
/// then the value.
fn value_of(header: &BatchHeader, batch: &[u8]) -> Option<u64> {
    let record = batch.get(BATCH_HEADER_BYTES..header.size())?;
    let mut at = 0;
    varint(record, &mut at)?;
    at += 1;
    varint(record, &mut at)?;
    varint(record, &mut at)?;
    let key_bytes = varint(record, &mut at)?;
    at += usize::try_from(key_bytes).unwrap_or(0);
    if varint(record, &mut at)? != 8 {
        return None;
    }
    Some(u64::from_be_bytes(record.get(at..at + 8)?.try_into().ok()?))
}

/// The record a stored batch holds.
fn record_of(header: &BatchHeader, batch: &[u8]) -> Result<Record, String> {
    if header.record_count != 1 || header.last_offset_delta != 0 {
        return Err(format!("a batch at offset {} holds {} records, not one", header.base_offset, header.record_count));
    }
    let value = value_of(header, batch)
        .ok_or_else(|| format!("the record of the batch at offset {} holds no 8-byte value", header.base_offset))?;
    Ok((LeaderEpoch(header.partition_leader_epoch), value))
}

/// The records of whole batches as a log returned them, each batch's CRC checked (as a
/// consumer checks what it fetched): `(base offset, record)`.
pub(crate) fn records_in(mut bytes: &[u8]) -> Result<Vec<(i64, Record)>, String> {
    let mut records = Vec::new();
    while !bytes.is_empty() {
        let header = validate_batch(bytes).map_err(|e| format!("a fetched batch is invalid: {e}"))?;
        records.push((header.base_offset, record_of(&header, bytes)?));
        bytes = &bytes[header.size()..];
    }
    Ok(records)
}

#[derive(Debug)]
pub(crate) struct SimLog {
    log: Log,
    /// The identity of every record from `start` on, as the stored batches give it.
    start: i64,
    records: Vec<Record>,
    /// `close` was called: the log takes no more writes until it is opened again.
    closed: bool,
}

impl SimLog {
    /// Opens (and recovers) the log in `dir` on `disk`, reading every batch it holds.
    pub(crate) fn open(
        disk: &CrashBackend,
        dir: PathBuf,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(SimLog, RecoveryReport), String> {
        let (log, report) = Log::open(Arc::new(disk.clone()), dir.clone(), config, now_ms)
            .map_err(|e| format!("opening the log in {} failed: {e}", dir.display()))?;
        let start = log.log_start_offset();
        let records = read_records(&log)?;
        let sim_log = SimLog { log, start, records, closed: false };
        sim_log.check_offsets("open")?;
        Ok((sim_log, report))
    }

    /// This log as found on `disk` (a crash image, or the disk after a clean close) and
    /// recovered: it must hold a prefix of what this log holds, and at least everything this
    /// log had flushed (all of it after a close).
    pub(crate) fn reopen(&self, disk: &CrashBackend, now_ms: i64) -> Result<(SimLog, RecoveryReport), String> {
        let (flushed, dir) = (self.flushed(), self.log.dir().to_path_buf());
        let (reopened, report) = SimLog::open(disk, dir, (*self.log.config()).clone(), now_ms)?;
        let dir = self.log.dir().display();
        if reopened.log_end() < flushed {
            return Err(format!(
                "storage: {dir} recovered to log end {} below its flushed offset {flushed}",
                reopened.log_end()
            ));
        }
        // A crash may leave a log that had just moved its start (following its leader's)
        // with none of its unflushed records: it is empty, and starts at its end.
        let emptied = reopened.records.is_empty() && reopened.start < self.start;
        if !emptied && (reopened.start != self.start || !self.records.starts_with(&reopened.records)) {
            let first_difference = reopened.records.iter().zip(&self.records).position(|(a, b)| a != b);
            return Err(format!(
                "storage: {dir} recovered records [{}, {}) that are not a prefix of the [{}, {}) it held \
                 (first difference at index {first_difference:?})",
                reopened.start,
                reopened.log_end(),
                self.start,
                self.log_end()
            ));
        }
        Ok((reopened, report))
    }

    pub(crate) fn log_end(&self) -> i64 {
        self.start + self.records.len() as i64
    }

    pub(crate) fn flushed(&self) -> i64 {
        self.log.flushed_offset()
    }

    /// The record at `offset`, if the log holds it.
    pub(crate) fn get(&self, offset: i64) -> Option<Record> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.records.get(index).copied()
    }

    /// Records in `from..to`, clamped to the log.
    pub(crate) fn slice(&self, from: i64, to: i64) -> &[Record] {
        let from = (from.max(self.start) - self.start) as usize;
        let to = (to.min(self.log_end()) - self.start).max(0) as usize;
        self.records.get(from..to.max(from)).unwrap_or(&[])
    }

    /// Appends a producer's batch as leader in `epoch` (keel-storage validates it and checks
    /// the producer's sequence; a retry of a batch it holds is answered as a duplicate).
    pub(crate) fn append(&mut self, batch: &[u8], epoch: LeaderEpoch, now_ms: i64) -> Result<AppendInfo, AppendError> {
        assert!(!self.closed, "an append to a closed log");
        let end = self.log_end();
        let info = self.log.append(batch, epoch, now_ms)?;
        if !info.duplicate {
            assert_eq!((info.base_offset, info.last_offset), (end, end), "one record appended at the log end");
            let header = BatchHeader::parse(batch).expect("the log validated it");
            let (_, value) = record_of(&header, batch).unwrap_or_else(|e| panic!("a produced batch: {e}"));
            self.records.push((epoch, value));
        }
        if let Err(bug) = self.check_offsets("append") {
            panic!("{bug}");
        }
        Ok(info)
    }

    /// Whole batches from `from_offset`, up to `max_bytes` (at least one) and below `upto`.
    pub(crate) fn read(&self, from_offset: i64, max_bytes: usize, upto: i64) -> Result<ReadResult, ReadError> {
        self.log.read(from_offset, max_bytes, upto)
    }

    /// The simulated OS wrote the log back: everything written so far is synced.
    pub(crate) fn flush(&self, now_ms: i64) -> Result<(), String> {
        if self.closed {
            return Ok(());
        }
        self.log.flush(now_ms).map_err(|e| format!("flushing {} failed: {e}", self.log.dir().display()))
    }

    /// A clean shutdown: flush, indexes and a clean checkpoint.
    pub(crate) fn close(&mut self, now_ms: i64) -> Result<(), String> {
        self.closed = true;
        self.log.close(now_ms).map_err(|e| format!("closing {} failed: {e}", self.log.dir().display()))
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// The broker's periodic upkeep of this log ([`Log::maintain`], the call the broker makes):
    /// retention below `retention_bound`, then a recovery checkpoint.
    pub(crate) fn maintain(&mut self, now_ms: i64, retention_bound: i64) -> Result<Vec<DeletedSegment>, String> {
        assert!(!self.closed, "maintenance of a closed log");
        let deleted = self
            .log
            .maintain(now_ms, retention_bound, PRODUCER_ID_EXPIRATION_MS)
            .map_err(|e| format!("maintenance of {} failed: {e}", self.log.dir().display()))?;
        self.refit("retention")?;
        Ok(deleted)
    }

    /// The log as the replication engine changes it, at `now_ms`.
    pub(crate) fn at(&mut self, now_ms: i64) -> Writer<'_> {
        assert!(!self.closed, "the replica engine writes to a closed log");
        Writer { log: self, now_ms }
    }

    /// Checks the cache against every batch the log holds, CRCs included.
    pub(crate) fn verify(&self) -> Result<(), String> {
        let dir = self.log.dir().display();
        self.log.verify().map_err(|e| format!("storage: {dir} fails verification: {e}"))?;
        let stored = read_records(&self.log)?;
        if stored != self.records || self.log.log_start_offset() != self.start {
            return Err(format!("storage: {dir} holds other records than its writes left (cache out of step)"));
        }
        Ok(())
    }

    /// After a change: the cache covers exactly the log's offsets.
    fn check_offsets(&self, after: &str) -> Result<(), String> {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if (start, end) != (self.start, self.log_end()) {
            return Err(format!(
                "simulator bug: after {after}, {} spans [{start}, {end}) but its cache [{}, {})",
                self.log.dir().display(),
                self.start,
                self.log_end()
            ));
        }
        Ok(())
    }

    /// Fits the cache to the log's offsets after a cut at either end.
    fn refit(&mut self, after: &str) -> Result<(), String> {
        let (start, end) = (self.log.log_start_offset(), self.log.log_end_offset());
        if start != self.start {
            let drop_front = usize::try_from(start - self.start).unwrap_or(usize::MAX);
            if drop_front <= self.records.len() {
                self.records.drain(..drop_front);
            } else {
                self.records.clear();
            }
            self.start = start;
        }
        let keep = usize::try_from(end - self.start).unwrap_or(0);
        self.records.truncate(keep);
        self.check_offsets(after)
    }
}

/// Reads every record a log holds, from its start to its end.
fn read_records(log: &Log) -> Result<Vec<Record>, String> {
    let (mut from, end) = (log.log_start_offset(), log.log_end_offset());
    let mut records = Vec::with_capacity((end - from).max(0) as usize);
    while from < end {
        let read = log.read(from, READ_ALL_BYTES, end).map_err(|e| format!("storage: reading {from}: {e}"))?;
        if read.next_offset <= from {
            return Err(format!("storage: a read at {from} below the log end {end} returned nothing"));
        }
        for (offset, record) in records_in(&read.records)? {
            if offset != log.log_start_offset() + records.len() as i64 {
                return Err(format!("storage: batch at offset {offset} where {} was due", from));
            }
            records.push(record);
        }
        from = read.next_offset;
    }
    Ok(records)
}

impl LocalLog for SimLog {
    fn log_start_offset(&self) -> i64 {
        self.start
    }

    fn log_end_offset(&self) -> i64 {
        self.log_end()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.log.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        let (found, end) = self.log.end_offset_for_epoch(epoch);
        (found.is_defined() && end >= 0).then_some((found, end))
    }
}

/// A [`SimLog`] as keel-replication changes it: the log calls take the time, as the broker's
/// `LogView` takes it from its clock.
#[derive(Debug)]
pub(crate) struct Writer<'a> {
    log: &'a mut SimLog,
    now_ms: i64,
}

impl LocalLog for Writer<'_> {
    fn log_start_offset(&self) -> i64 {
        self.log.log_start_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.log.log_end_offset()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.log.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        self.log.end_offset_for_epoch(epoch)
    }
}

impl ReplicaLog for Writer<'_> {
    /// Whole batches as the leader's log returned them.
    type Records = [u8];
    type Error = String;

    fn append_replicated(&mut self, records: &[u8]) -> Result<(), String> {
        let batches = records_in(records)?;
        let end = self.log.log_end();
        for (i, (offset, _)) in batches.iter().enumerate() {
            if *offset != end + i as i64 {
                return Err(format!("fetched batch at offset {offset} does not follow the log end {end}"));
            }
        }
        self.log.log.append_replicated(records, self.now_ms).map_err(|e| e.to_string())?;
        self.log.records.extend(batches.iter().map(|(_, record)| *record));
        self.log.check_offsets("a replicated append")
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), String> {
        self.log.log.truncate_to(offset, self.now_ms).map_err(|e| e.to_string())?;
        self.log.refit("a truncation")
    }

    fn start_over_at(&mut self, offset: i64) -> Result<(), String> {
        self.log.log.truncate_fully_and_start_at(offset, self.now_ms).map_err(|e| e.to_string())?;
        self.log.start = offset;
        self.log.records.clear();
        self.log.check_offsets("starting over")
    }

    fn delete_before(&mut self, offset: i64) -> Result<(), String> {
        self.log.log.delete_records_before(offset).map_err(|e| e.to_string())?;
        self.log.refit("a deletion")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(disk: &CrashBackend) -> SimLog {
        SimLog::open(disk, PathBuf::from("/data/t-0"), log_config(1024, 2048, None, None), 0).unwrap().0
    }

    #[test]
    fn records_are_read_back_from_storage_and_a_crash_keeps_a_prefix() {
        let disk = CrashBackend::new();
        let mut log = open(&disk);
        for value in 0..40 {
            let info = log.append(&producer_batch(value, 0, 7, 0, value as i32), LeaderEpoch(1), 0).unwrap();
            assert_eq!(info.base_offset, value as i64);
            if value == 20 {
                log.flush(0).unwrap();
            }
        }
        let retry = log.append(&producer_batch(39, 0, 7, 0, 39), LeaderEpoch(1), 0).unwrap();
        assert!(retry.duplicate && retry.base_offset == 39, "{retry:?}");
        assert_eq!((log.log_end(), log.get(5), log.slice(38, 50).len()), (40, Some((LeaderEpoch(1), 5)), 2));
        log.verify().unwrap();
        let image = disk.crash(&mut keel_types::Rng::new(3));
        let (recovered, _) = log.reopen(&image, 0).unwrap();
        assert!(recovered.log_end() >= 21 && recovered.log_end() <= 40, "{}", recovered.log_end());
        recovered.verify().unwrap();

        let mut writer = log.at(0);
        writer.truncate_to(10).unwrap();
        assert_eq!(log.log_end(), 10);
        log.close(0).unwrap();
        let (reopened, report) = log.reopen(&disk, 0).unwrap();
        assert!(report.clean_shutdown);
        assert_eq!(reopened.slice(0, 10), log.slice(0, 10));
    }

    /// The broker's maintenance deletes expired segments wholly below the bound it is given
    /// and nothing else, the cache follows, and a crash keeps the new log start.
    #[test]
    fn maintenance_deletes_only_below_the_bound_and_a_crash_keeps_it() {
        let disk = CrashBackend::new();
        let config = log_config(1024, 2048, Some(1_000), None);
        let mut log = SimLog::open(&disk, PathBuf::from("/data/t-0"), config, 0).unwrap().0;
        for value in 0..60 {
            log.append(&producer_batch(value, 0, 7, 0, value as i32), LeaderEpoch(1), 0).unwrap();
        }
        assert!(log.maintain(500, 60).unwrap().is_empty(), "nothing has expired yet");
        let deleted = log.maintain(10_000, 30).unwrap();
        let start = log.log_start_offset();
        assert!(!deleted.is_empty() && start > 0 && start <= 30, "log start {start} after deleting {deleted:?}");
        assert_eq!((log.get(start - 1), log.get(start)), (None, Some((LeaderEpoch(1), start as u64))));
        log.verify().unwrap();
        let (recovered, _) = log.reopen(&disk.crash(&mut keel_types::Rng::new(5)), 10_000).unwrap();
        assert_eq!(recovered.log_start_offset(), start);
    }
}
