//! The partition log: a directory of segments with one writer lock, lock-free readers of its
//! offsets, and group commit for fsync.
//!
//! Locks, always taken in this order: `maintenance` (checkpoints and structural changes:
//! truncation, retention, record deletion), then `state` (segments and offsets), then `flush`
//! (group-commit coordination). No lock is held across an fsync of log data, so appends go on
//! while a group commit syncs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use keel_types::LeaderEpoch;

use crate::backend::{read_all, write_atomically, Backend, StorageFile};
use crate::batch::{assign_offset_and_epoch, first_record_at_or_after, validate_batch, validate_produced, BatchError};
use crate::checkpoint::Checkpoint;
use crate::config::{FlushPolicy, LogConfig};
use crate::epoch_cache::{self, EpochCache, EpochEntry};
use crate::error::{AppendError, IoContext, IoError, LogError, OpenError, ReadError};
use crate::producer_state::{ProducerStates, SequenceCheck, SNAPSHOT_FILE};
use crate::segment::{
    file_name, parse_file_name, write_index, BatchScanner, ScanError, Segment, INDEX_SUFFIX, LOG_SUFFIX,
    PRODUCER_SNAPSHOT_SUFFIX, SCAN_WINDOW_BYTES, SEEK_WINDOW_BYTES, TIME_INDEX_SUFFIX,
};

/// Kafka's default `producer.id.expiration.ms` (one day): how long a log remembers an
/// idempotent producer that stopped writing, passed to [`Log::maintain`].
pub const PRODUCER_ID_EXPIRATION_MS: i64 = 24 * 3600 * 1000;

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The largest record timestamp in the appended batches.
    pub max_timestamp: i64,
    pub batches: usize,
    pub bytes: usize,
    pub log_start_offset: i64,
    /// An idempotent producer's retry of a batch already in the log: nothing was written and
    /// the offsets are the original batch's.
    pub duplicate: bool,
}

/// Whole batches read from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadResult {
    /// RecordBatch v2 bytes exactly as stored; empty if nothing is readable yet.
    pub records: Bytes,
    /// The offset after the last returned batch (`from_offset` if none was returned).
    pub next_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The previous close wrote a clean checkpoint.
    pub clean_shutdown: bool,
    /// The offset scanning (and CRC verification) started from.
    pub recovery_point: i64,
    pub segments: usize,
    /// Bytes read and verified during recovery.
    pub scanned_bytes: u64,
    /// Bytes of torn or corrupt tail removed (across all segments).
    pub truncated_bytes: u64,
    /// Where the first removed byte was, and why it was removed.
    pub truncated_at: Option<(PathBuf, u64, String)>,
    pub log_end_offset: i64,
}

/// A segment deleted by retention or record deletion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedSegment {
    pub base_offset: i64,
    pub next_offset: i64,
    pub bytes: u64,
}

/// A partition log. Share it as `Arc<Log>`: every method takes `&self`.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    config: std::sync::RwLock<Arc<LogConfig>>,
    maintenance: Mutex<()>,
    state: Mutex<LogState>,
    flush: Mutex<FlushState>,
    flush_done: Condvar,
    /// Set once by the first IO failure on the write path (fail-stop) or by `close`.
    offline: OnceLock<String>,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    flushed_offset: AtomicI64,
}

#[derive(Debug)]
struct LogState {
    /// Sorted by base offset; never empty; the last one is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    epochs: EpochCache,
    /// Rolled segments with writes not yet synced.
    rolled_unsynced: Vec<(PathBuf, Arc<dyn StorageFile>)>,
    /// The active segment has writes not yet synced.
    active_dirty: bool,
    /// A segment file was created or removed since the last directory sync.
    dir_dirty: bool,
    /// Records appended ever, and as of the last completed sync.
    messages_appended: u64,
    messages_synced: u64,
    /// Bytes appended since the recovery checkpoint was last written.
    bytes_since_checkpoint: u64,
    last_flush_ms: i64,
    /// Bumped by every truncation, so an fsync that raced one does not claim truncated data.
    generation: u64,
    producers: ProducerStates,
}

#[derive(Debug)]
struct FlushState {
    flushed_offset: i64,
    syncing: bool,
}

impl LogState {
    fn active(&self) -> &Segment {
        self.segments.last().expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments.last_mut().expect("a log always has an active segment")
    }

    fn log_end_offset(&self) -> i64 {
        self.active().next_offset
    }

    /// The segment holding `offset`: the last one whose base is at or below it.
    fn segment_for(&self, offset: i64) -> usize {
        self.segments.partition_point(|s| s.base_offset <= offset).saturating_sub(1)
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
}

impl Log {
    /// Opens the log in `dir` (creating it if needed), recovering from an unclean stop: the
    /// data after the last recovery checkpoint is verified batch by batch, a torn or corrupt
    /// tail is truncated (and reported), and indexes are rebuilt. Damage before the
    /// checkpoint, in data that was flushed, is an error naming the file and position.
    ///
    /// `now_ms` is wall-clock milliseconds (segment age for `segment.ms`).
    pub fn open(
        backend: Arc<dyn Backend>,
        dir: impl Into<PathBuf>,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport), OpenError> {
        config.validate().map_err(OpenError::Config)?;
        let dir = dir.into();
        backend.create_dir_all(&dir).io_context("create", &dir)?;
        let names = backend.list(&dir).io_context("list", &dir)?;
        let mut bases = Vec::new();
        for name in &names {
            let path = dir.join(name);
            if let Some(base) = parse_file_name(name, LOG_SUFFIX) {
                bases.push(base);
            } else if name.ends_with(".tmp") {
                backend.remove_file(&path).io_context("remove", &path)?;
            }
        }
        bases.sort_unstable();
        // Index and snapshot files without their log file are leftovers of an interrupted
        // deletion.
        for name in &names {
            let orphan = [INDEX_SUFFIX, TIME_INDEX_SUFFIX, PRODUCER_SNAPSHOT_SUFFIX]
                .iter()
                .find_map(|suffix| parse_file_name(name, suffix))
                .is_some_and(|base| bases.binary_search(&base).is_err());
            if orphan {
                let path = dir.join(name);
                backend.remove_file(&path).io_context("remove", &path)?;
            }
        }

        let checkpoint = Checkpoint::load(&*backend, &dir)?;
        let mut epochs = EpochCache::load(&*backend, &dir.join(epoch_cache::FILE_NAME))?;
        let recovery_point = checkpoint.map_or(i64::MIN, |c| c.recovery_point);
        let mut report = RecoveryReport {
            clean_shutdown: checkpoint.is_some_and(|c| c.clean),
            recovery_point: recovery_point.max(bases.first().copied().unwrap_or(0)),
            ..RecoveryReport::default()
        };

        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
        let mut truncated = false;
        for (i, &base) in bases.iter().enumerate() {
            let path = dir.join(file_name(base, LOG_SUFFIX));
            if truncated {
                // Everything after a torn tail is unflushed too and cannot follow it.
                let size = backend.open(&path, false).and_then(|f| f.len()).io_context("stat", &path)?;
                report.truncated_bytes += size;
                remove_segment_files(&*backend, &dir, base)?;
                continue;
            }
            let known_end = match (bases.get(i + 1), checkpoint) {
                (Some(&next), _) if next <= recovery_point => Some(next),
                (None, Some(c)) if c.clean && c.recovery_point == c.log_end_offset => Some(c.log_end_offset),
                _ => None,
            };
            let segment = if let Some(next_offset) = known_end {
                Segment::load_flushed(&*backend, path, base, next_offset, config.index_interval_bytes, now_ms)?
            } else {
                let (segment, tail) =
                    recover_segment(&*backend, path, base, recovery_point, &config, now_ms, &mut epochs, &mut report)?;
                truncated = tail;
                // Segments roll at the log end, so the next one starts exactly where this one
                // ends. If this one ends early, its unflushed tail never reached the disk and
                // whatever the later segments hold cannot follow it.
                if let Some(&next) = bases.get(i + 1) {
                    if segment.next_offset < next && !truncated {
                        if segment.next_offset < recovery_point {
                            return Err(OpenError::Corrupt {
                                file: segment.log_path.clone(),
                                position: segment.size,
                                reason: format!(
                                    "segment ends at offset {} but data up to {recovery_point} was flushed",
                                    segment.next_offset
                                ),
                            });
                        }
                        truncated = true;
                        if report.truncated_at.is_none() {
                            let reason = format!("unflushed tail lost: segment ends at offset {}", segment.next_offset);
                            report.truncated_at = Some((segment.log_path.clone(), segment.size, reason));
                        }
                    }
                }
                segment
            };
            if let Some(previous) = segments.last() {
                if segment.base_offset < previous.next_offset {
                    return Err(OpenError::Corrupt {
                        file: segment.log_path.clone(),
                        position: 0,
                        reason: format!(
                            "segment starts at offset {} but the previous one ends at {}",
                            segment.base_offset, previous.next_offset
                        ),
                    });
                }
            }
            segments.push(segment);
        }

        // Recovered segments that are no longer active get their final time index entry, as a
        // roll would have given them, so later opens can trust their indexes.
        if let Some((_, rolled)) = segments.split_last_mut() {
            rolled.iter_mut().for_each(Segment::seal);
        }
        let mut log_start_offset = checkpoint.map_or(0, |c| c.log_start_offset);
        if let Some(first) = segments.first() {
            log_start_offset = log_start_offset.max(first.base_offset);
        }
        if segments.is_empty() {
            segments.push(Segment::create(&*backend, &dir, log_start_offset, now_ms)?);
        }
        let log_end_offset = segments.last().expect("non-empty").next_offset;
        log_start_offset = log_start_offset.min(log_end_offset);
        let epochs_changed = epochs.truncate_from_end(log_end_offset) | epochs.truncate_from_start(log_start_offset);
        if epochs_changed {
            let path = dir.join(epoch_cache::FILE_NAME);
            epochs.persist(&*backend, &path).io_context("write", &path)?;
        }
        report.segments = segments.len();
        report.log_end_offset = log_end_offset;

        // What recovery read back is now synced and becomes the new recovery point; the
        // checkpoint written below is marked unclean until the next clean close.
        for segment in &segments {
            if segment.next_offset > recovery_point {
                segment.log.sync_data().io_context("sync", &segment.log_path)?;
            }
        }
        backend.sync_dir(&dir).io_context("sync", &dir)?;

        let producers = load_producers(&*backend, &dir, &segments, log_start_offset, log_end_offset)?;
        let log = Log {
            dir,
            backend,
            config: std::sync::RwLock::new(Arc::new(config)),
            maintenance: Mutex::new(()),
            state: Mutex::new(LogState {
                segments,
                log_start_offset,
                epochs,
                rolled_unsynced: Vec::new(),
                active_dirty: false,
                dir_dirty: false,
                messages_appended: 0,
                messages_synced: 0,
                bytes_since_checkpoint: 0,
                last_flush_ms: now_ms,
                generation: 0,
                producers,
            }),
            flush: Mutex::new(FlushState { flushed_offset: log_end_offset, syncing: false }),
            flush_done: Condvar::new(),
            offline: OnceLock::new(),
            log_start_offset: AtomicI64::new(log_start_offset),
            log_end_offset: AtomicI64::new(log_end_offset),
            flushed_offset: AtomicI64::new(log_end_offset),
        };
        log.write_checkpoint(false).map_err(|e| match e {
            LogError::Io(io) => OpenError::Io(io),
            other => OpenError::Corrupt { file: log.dir.clone(), position: 0, reason: other.to_string() },
        })?;
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force (it can change while the log is open).
    pub fn config(&self) -> Arc<LogConfig> {
        self.config.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Applies a new configuration to the open log: retention, segment size and age, flush
    /// policy and the rest take effect from the next operation on.
    pub fn set_config(&self, config: LogConfig) -> Result<(), String> {
        config.validate()?;
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        Ok(())
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// One past the last offset written.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// Every offset below this is on stable storage.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset.load(Ordering::Acquire)
    }

    /// Why the log went offline, if it did.
    pub fn offline_reason(&self) -> Option<&str> {
        self.offline.get().map(String::as_str)
    }

    pub fn size_bytes(&self) -> u64 {
        self.lock_state().size_bytes()
    }

    pub fn segment_count(&self) -> usize {
        self.lock_state().segments.len()
    }

    pub fn epoch_entries(&self) -> Vec<EpochEntry> {
        self.lock_state().epochs.entries().to_vec()
    }

    /// The latest leader epoch that wrote to this log.
    pub fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.lock_state().epochs.latest().map(|e| e.epoch)
    }

    /// Kafka's OffsetForLeaderEpoch answer for `epoch`: the largest epoch at or below it that
    /// this log knows, and where that epoch ends.
    pub fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> (LeaderEpoch, i64) {
        let state = self.lock_state();
        state.epochs.end_offset_for(epoch, state.log_end_offset())
    }

    fn lock_state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_flush(&self) -> MutexGuard<'_, FlushState> {
        self.flush.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_maintenance(&self) -> MutexGuard<'_, ()> {
        self.maintenance.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_online(&self) -> Result<(), LogError> {
        match self.offline.get() {
            Some(reason) => Err(LogError::Offline(reason.clone())),
            None => Ok(()),
        }
    }

    /// Takes the log offline after a write-path IO failure: after a failed write or fsync the
    /// log cannot know what reached the disk, so it stops rather than guess.
    fn fail(&self, error: IoError) -> IoError {
        let _ = self.offline.set(error.to_string());
        tracing::error!(dir = %self.dir.display(), %error, "log taken offline after IO failure");
        error
    }

    /// Appends a producer's record set as leader in `leader_epoch`: validates every batch,
    /// assigns offsets and the epoch, writes, and flushes as the flush policy says. With
    /// [`FlushPolicy::Always`] it returns only once the data is synced.
    pub fn append(&self, records: &[u8], leader_epoch: LeaderEpoch, now_ms: i64) -> Result<AppendInfo, AppendError> {
        let info = self.append_unflushed(records, leader_epoch, now_ms)?;
        self.complete_append(info.last_offset + 1, now_ms)?;
        Ok(info)
    }

    /// [`Log::append`] without the flush its policy asks for: the caller calls
    /// [`Log::complete_append`] with `last_offset + 1` before it answers the producer. A
    /// replicated leader appends under its replica lock and completes after releasing it, so
    /// concurrent producers of one partition share a group commit. Until then the records may
    /// be read and replicated, but are not yet durable here.
    pub fn append_unflushed(
        &self,
        records: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if records.len() as u64 > self.config().max_message_bytes {
            return Err(AppendError::TooLarge { size: records.len(), max: self.config().max_message_bytes });
        }
        let headers =
            validate_produced(records).map_err(|(position, error)| AppendError::InvalidBatch { position, error })?;
        let count: i64 = headers.iter().map(|h| i64::from(h.last_offset_delta) + 1).sum();
        let mut state = self.lock_state();
        self.check_online()?;
        if let Some(latest) = state.epochs.latest() {
            if leader_epoch.is_defined() && leader_epoch < latest.epoch {
                return Err(AppendError::StaleLeaderEpoch { epoch: leader_epoch.0, latest: latest.epoch.0 });
            }
        }
        if let Some(idempotent) = headers.iter().find(|h| h.producer_id >= 0) {
            // Producers send one batch per partition per request; sequence checks assume it.
            if headers.len() > 1 {
                let error = BatchError::BadProducerFields {
                    producer_id: idempotent.producer_id,
                    producer_epoch: idempotent.producer_epoch,
                    base_sequence: idempotent.base_sequence,
                };
                return Err(AppendError::InvalidBatch { position: 0, error });
            }
            match state.producers.check(idempotent) {
                Ok(SequenceCheck::Append) => {}
                Ok(SequenceCheck::Duplicate { base_offset, last_offset }) => {
                    let info = AppendInfo {
                        base_offset,
                        last_offset,
                        max_timestamp: idempotent.max_timestamp,
                        batches: 1,
                        bytes: 0,
                        log_start_offset: state.log_start_offset,
                        duplicate: true,
                    };
                    // The original may still be on its way to disk: the caller's
                    // `complete_append` acks the retry no sooner.
                    return Ok(info);
                }
                Err(error) => return Err(AppendError::Producer { producer_id: idempotent.producer_id, error }),
            }
        }
        let base_offset = state.log_end_offset();
        self.maybe_roll(&mut state, records.len() as u64, base_offset + count - 1, now_ms)?;
        if state.epochs.assign(leader_epoch, base_offset) {
            let path = self.dir.join(epoch_cache::FILE_NAME);
            state.epochs.persist(&*self.backend, &path).io_context("write", &path).map_err(|e| self.fail(e))?;
        }

        // A fresh buffer per append: keeping one per log would pin the largest record set
        // ever seen in memory for every partition.
        let mut buffer = records.to_vec();
        let mut position = 0;
        let mut next = base_offset;
        for header in &headers {
            assign_offset_and_epoch(&mut buffer[position..], next, leader_epoch.0);
            position += header.size();
            next += i64::from(header.last_offset_delta) + 1;
        }
        self.write_batches(&mut state, &buffer)
    }

    /// Flushes what an append below `end_offset` wrote as the flush policy says (group commit
    /// with concurrent appends), and writes a recovery checkpoint when one is due. With
    /// [`FlushPolicy::Always`] it returns once everything below `end_offset` is synced.
    pub fn complete_append(&self, end_offset: i64, now_ms: i64) -> Result<(), AppendError> {
        self.after_append(end_offset, now_ms)
    }

    /// Appends batches fetched from a leader, keeping their offsets and epochs (a follower's
    /// append). The first batch must start at or after the log end.
    pub fn append_replicated(&self, records: &[u8], now_ms: i64) -> Result<AppendInfo, AppendError> {
        let mut position = 0;
        let mut headers = Vec::new();
        while position < records.len() {
            let header =
                validate_batch(&records[position..]).map_err(|error| AppendError::InvalidBatch { position, error })?;
            if let Some(previous) = headers.last().map(|h: &crate::batch::BatchHeader| h.last_offset()) {
                if header.base_offset <= previous {
                    let error = BatchError::OffsetsNotIncreasing {
                        base: header.base_offset,
                        last: header.last_offset(),
                        previous,
                    };
                    return Err(AppendError::InvalidBatch { position, error });
                }
            }
            position += header.size();
            headers.push(header);
        }
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(AppendError::InvalidBatch { position: 0, error: BatchError::Truncated { available: 0 } });
        };
        let mut state = self.lock_state();
        self.check_online()?;
        let log_end_offset = state.log_end_offset();
        if first.base_offset < log_end_offset {
            return Err(AppendError::OffsetMismatch { first: first.base_offset, log_end_offset });
        }
        self.maybe_roll(&mut state, records.len() as u64, last.last_offset(), now_ms)?;
        if state.active().size == 0 && state.active().base_offset != first.base_offset {
            // A gap at the start of a fresh segment: re-base the empty segment on the batch.
            let base = first.base_offset;
            let removed = state.segments.pop().expect("active segment");
            remove_segment_files(&*self.backend, &self.dir, removed.base_offset).map_err(|e| self.fail(e))?;
            let segment = self.create_segment(&state.producers, base, now_ms).map_err(|e| self.fail(e))?;
            state.segments.push(segment);
            state.dir_dirty = true;
        }
        let mut epochs_changed = false;
        for header in &headers {
            epochs_changed |= state.epochs.assign(LeaderEpoch(header.partition_leader_epoch), header.base_offset);
        }
        if epochs_changed {
            let path = self.dir.join(epoch_cache::FILE_NAME);
            state.epochs.persist(&*self.backend, &path).io_context("write", &path).map_err(|e| self.fail(e))?;
        }
        let info = self.write_batches(&mut state, records)?;
        drop(state);
        self.after_append(info.last_offset + 1, now_ms)?;
        Ok(info)
    }

    /// Writes validated batches (offsets final) at the end of the active segment in one write.
    fn write_batches(&self, state: &mut LogState, bytes: &[u8]) -> Result<AppendInfo, AppendError> {
        let segment = state.active_mut();
        let start = segment.size;
        segment.log.write_all_at(bytes, start).io_context("write", &segment.log_path).map_err(|e| self.fail(e))?;
        let mut position = 0;
        let mut info = AppendInfo {
            base_offset: -1,
            last_offset: -1,
            max_timestamp: -1,
            batches: 0,
            bytes: bytes.len(),
            log_start_offset: 0,
            duplicate: false,
        };
        let mut records = 0u64;
        let mut idempotent = Vec::new();
        while position < bytes.len() {
            let header = crate::batch::BatchHeader::parse(&bytes[position..]).expect("validated before writing");
            segment.on_batch_written(&header, start + position as u64, self.config().index_interval_bytes);
            idempotent.push(header);
            if info.batches == 0 {
                info.base_offset = header.base_offset;
            }
            info.last_offset = header.last_offset();
            info.max_timestamp = info.max_timestamp.max(header.max_timestamp);
            info.batches += 1;
            records += header.record_count as u64;
            position += header.size();
        }
        let log_end_offset = segment.next_offset;
        for header in &idempotent {
            state.producers.apply(header);
        }
        state.active_dirty = true;
        state.messages_appended += records;
        state.bytes_since_checkpoint += bytes.len() as u64;
        info.log_start_offset = state.log_start_offset;
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        Ok(info)
    }

    /// Applies the flush policy after an append that ended at `end_offset`.
    fn after_append(&self, end_offset: i64, now_ms: i64) -> Result<(), AppendError> {
        match self.config().flush {
            FlushPolicy::Always => self.sync_to(end_offset, now_ms)?,
            FlushPolicy::Interval { messages, .. } => {
                let unflushed = {
                    let state = self.lock_state();
                    state.messages_appended - state.messages_synced
                };
                if unflushed >= messages {
                    self.sync_to(end_offset, now_ms)?;
                }
            }
            FlushPolicy::Never => {}
        }
        self.maybe_checkpoint()?;
        Ok(())
    }

    /// Rolls to a new segment if the next `bytes` ending at `last_offset` should not go into
    /// the active one.
    fn maybe_roll(&self, state: &mut LogState, bytes: u64, last_offset: i64, now_ms: i64) -> Result<(), AppendError> {
        let active = state.active();
        let full = active.size + bytes > self.config().segment_bytes;
        let old = now_ms.saturating_sub(active.created_ms) >= self.config().segment_ms as i64;
        if active.size == 0 || !(full || old || !active.can_hold(last_offset)) {
            return Ok(());
        }
        self.roll(state, now_ms).map_err(AppendError::Io)
    }

    fn roll(&self, state: &mut LogState, now_ms: i64) -> Result<(), IoError> {
        let base = state.log_end_offset();
        let segment = self.create_segment(&state.producers, base, now_ms).map_err(|e| self.fail(e))?;
        let active = state.active_mut();
        active.seal();
        let rolled = (active.log_path.clone(), active.log.clone());
        if std::mem::replace(&mut state.active_dirty, false) {
            state.rolled_unsynced.push(rolled);
        }
        state.segments.push(segment);
        state.dir_dirty = true;
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        Ok(())
    }

    /// Creates the segment that starts at `base_offset`, at the log end, with its producer
    /// snapshot: `producers` as every batch below the base left them, so a truncation into
    /// this segment replays only from its base (Kafka snapshots at every roll too). The
    /// snapshot is a cache written without fsync: a lost or torn one (its checksum fails)
    /// costs a longer replay, nothing else.
    fn create_segment(&self, producers: &ProducerStates, base_offset: i64, now_ms: i64) -> Result<Segment, IoError> {
        let segment = Segment::create(&*self.backend, &self.dir, base_offset, now_ms)?;
        let path = self.dir.join(file_name(base_offset, PRODUCER_SNAPSHOT_SUFFIX));
        let file = self.backend.open(&path, true).io_context("create", &path)?;
        file.write_all_at(&producers.encode(base_offset), 0).io_context("write", &path)?;
        Ok(segment)
    }

    /// Group commit: returns once everything below `target` is synced. One caller at a time
    /// runs an fsync covering everything written so far; callers arriving meanwhile wait for
    /// it and, if it did not cover them, one of them runs the next.
    pub fn sync_to(&self, target: i64, now_ms: i64) -> Result<(), LogError> {
        let mut flush = self.lock_flush();
        loop {
            self.check_online()?;
            let reachable = target.min(self.log_end_offset());
            if flush.flushed_offset >= reachable {
                return Ok(());
            }
            if flush.syncing {
                flush = self.flush_done.wait(flush).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            flush.syncing = true;
            drop(flush);
            let result = self.sync_once(now_ms);
            flush = self.lock_flush();
            flush.syncing = false;
            match result {
                Ok(Some(offset)) if offset > flush.flushed_offset => {
                    flush.flushed_offset = offset;
                    self.flushed_offset.store(offset, Ordering::Release);
                }
                Ok(_) => {}
                Err(error) => {
                    self.flush_done.notify_all();
                    return Err(LogError::Io(self.fail(error)));
                }
            }
            self.flush_done.notify_all();
        }
    }

    /// Syncs every file written so far. Returns the offset now durable, or `None` if a
    /// truncation raced the sync.
    fn sync_once(&self, now_ms: i64) -> Result<Option<i64>, IoError> {
        let (mut files, sync_dir, end, generation, appended) = {
            let mut state = self.lock_state();
            let mut files = std::mem::take(&mut state.rolled_unsynced);
            if std::mem::replace(&mut state.active_dirty, false) {
                let active = state.active();
                files.push((active.log_path.clone(), active.log.clone()));
            }
            let sync_dir = std::mem::replace(&mut state.dir_dirty, false);
            (files, sync_dir, state.log_end_offset(), state.generation, state.messages_appended)
        };
        for (path, file) in files.drain(..) {
            file.sync_data().io_context("sync", &path)?;
        }
        if sync_dir {
            self.backend.sync_dir(&self.dir).io_context("sync", &self.dir)?;
        }
        let mut state = self.lock_state();
        state.messages_synced = state.messages_synced.max(appended);
        state.last_flush_ms = now_ms;
        Ok((state.generation == generation).then_some(end))
    }

    /// Syncs everything appended so far.
    pub fn flush(&self, now_ms: i64) -> Result<(), LogError> {
        self.sync_to(self.log_end_offset(), now_ms)
    }

    /// For the interval policy: flushes if `flush.ms` passed since the last flush and
    /// something is unflushed. The broker calls this on a timer; it is cheap otherwise.
    pub fn flush_if_due(&self, now_ms: i64) -> Result<bool, LogError> {
        let FlushPolicy::Interval { ms, .. } = self.config().flush else { return Ok(false) };
        let due = {
            let state = self.lock_state();
            state.messages_appended > state.messages_synced && now_ms - state.last_flush_ms >= ms as i64
        };
        if due {
            self.flush(now_ms)?;
        }
        Ok(due)
    }

    fn maybe_checkpoint(&self) -> Result<(), LogError> {
        let due = self.lock_state().bytes_since_checkpoint >= self.config().recovery_checkpoint_bytes
            && self.flushed_offset() > self.log_start_offset();
        if due {
            self.write_checkpoint(false)?;
        }
        Ok(())
    }

    /// Writes the recovery checkpoint at the flushed offset, so a later unclean open scans
    /// only what was appended after it. The broker calls this periodically.
    pub fn checkpoint(&self) -> Result<(), LogError> {
        self.write_checkpoint(false)
    }

    fn write_checkpoint(&self, clean: bool) -> Result<(), LogError> {
        let _maintenance = self.lock_maintenance();
        self.write_checkpoint_locked(clean, None)
    }

    /// Persists index entries, then the checkpoint. `recovery_point` overrides the flushed
    /// offset (truncation lowers it before cutting the files). Needs the maintenance lock.
    fn write_checkpoint_locked(&self, clean: bool, recovery_point: Option<i64>) -> Result<(), LogError> {
        // Only flushed data may lie below the recovery point; an override can only lower it.
        let flushed_offset = self.flushed_offset();
        let recovery_point = recovery_point.map_or(flushed_offset, |r| r.min(flushed_offset));
        let (mut index_work, checkpoint) = {
            let mut state = self.lock_state();
            let mut index_work = Vec::new();
            for segment in &mut state.segments {
                let (offset_position, offset_bytes) = segment.offset_index.unpersisted();
                let (time_position, time_bytes) = segment.time_index.unpersisted();
                let stale = segment.offset_index.stale_on_disk || segment.time_index.stale_on_disk;
                if offset_bytes.is_empty() && time_bytes.is_empty() && !stale {
                    continue;
                }
                segment.offset_index.stale_on_disk = false;
                segment.time_index.stale_on_disk = false;
                index_work.push((segment.index_path(INDEX_SUFFIX), offset_position, offset_bytes));
                index_work.push((segment.index_path(TIME_INDEX_SUFFIX), time_position, time_bytes));
                segment.offset_index.persisted = segment.offset_index.len();
                segment.time_index.persisted = segment.time_index.len();
            }
            state.bytes_since_checkpoint = 0;
            let snapshot = state.producers.encode(state.log_end_offset());
            index_work.push((self.dir.join(SNAPSHOT_FILE), u64::MAX, snapshot));
            let checkpoint = Checkpoint {
                clean,
                recovery_point: recovery_point.min(state.log_end_offset()),
                log_start_offset: state.log_start_offset,
                log_end_offset: state.log_end_offset(),
            };
            (index_work, checkpoint)
        };
        for (path, position, bytes) in index_work.drain(..) {
            if position == u64::MAX {
                // Whole-file replacement (the producer snapshot).
                write_atomically(&*self.backend, &path, &bytes).io_context("write", &path).map_err(|e| self.fail(e))?;
            } else {
                write_index(&*self.backend, &path, position, &bytes).map_err(|e| self.fail(e))?;
            }
        }
        checkpoint.store(&*self.backend, &self.dir).map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Reads whole batches starting with the one that contains `from_offset`, up to
    /// `max_bytes` (but always at least one whole batch, so a consumer can make progress, as
    /// Kafka does since KIP-74), and only batches that end below `upto` (the high watermark).
    /// Reads stay within one segment, like Kafka's. No record is looked at: the answer is a
    /// byte range of the segment file.
    pub fn read(&self, from_offset: i64, max_bytes: usize, upto: i64) -> Result<ReadResult, ReadError> {
        let (mut index, log_start_offset, log_end_offset) = {
            let state = self.lock_state();
            let log_end_offset = state.log_end_offset();
            if from_offset < state.log_start_offset || from_offset > log_end_offset {
                return Err(ReadError::OffsetOutOfRange {
                    requested: from_offset,
                    log_start_offset: state.log_start_offset,
                    log_end_offset,
                });
            }
            (state.segment_for(from_offset), state.log_start_offset, log_end_offset)
        };
        let empty = |next_offset| ReadResult { records: Bytes::new(), next_offset, log_start_offset, log_end_offset };
        if from_offset >= log_end_offset.min(upto) {
            return Ok(empty(from_offset));
        }
        loop {
            // Snapshot the segment under the lock, then read without it.
            let (file, path, start, size, next_offset) = {
                let state = self.lock_state();
                let Some(segment) = state.segments.get(index) else { return Ok(empty(from_offset)) };
                (
                    segment.log.clone(),
                    segment.log_path.clone(),
                    segment.scan_start(from_offset),
                    segment.size,
                    segment.next_offset,
                )
            };
            if next_offset <= from_offset {
                // The offset lies in a gap after this segment's last batch.
                index += 1;
                continue;
            }
            let corrupt = |error: ScanError| match error {
                ScanError::Io(e) => ReadError::Io(IoError { path: path.clone(), ..e }),
                ScanError::Invalid { position, error } => {
                    ReadError::Corrupt { file: path.clone(), position, reason: error.to_string() }
                }
            };
            let mut scanner = BatchScanner::new(&*file, start, size, SEEK_WINDOW_BYTES);
            let first = loop {
                match scanner.next(false).map_err(corrupt)? {
                    Some(batch) if batch.header.last_offset() >= from_offset => break Some(batch),
                    Some(_) => continue,
                    None => break None,
                }
            };
            let Some(first) = first else {
                index += 1;
                continue;
            };
            if first.header.last_offset() >= upto {
                return Ok(empty(from_offset));
            }
            let want = (max_bytes as u64).clamp(first.header.size() as u64, size - first.position);
            let mut buffer = vec![0u8; want as usize];
            file.read_exact_at(&mut buffer, first.position).io_context("read", &path)?;
            let mut end = 0;
            let mut next = from_offset;
            while end < buffer.len() {
                let header = match crate::batch::BatchHeader::parse(&buffer[end..]) {
                    Ok(h) => h,
                    Err(_) => break, // a partial header at the end of the buffer
                };
                header.check_frame(usize::MAX).map_err(|error| ReadError::Corrupt {
                    file: path.clone(),
                    position: first.position + end as u64,
                    reason: error.to_string(),
                })?;
                if end + header.size() > buffer.len() || header.last_offset() >= upto {
                    break;
                }
                end += header.size();
                next = header.next_offset();
            }
            buffer.truncate(end);
            return Ok(ReadResult {
                records: Bytes::from(buffer),
                next_offset: next,
                log_start_offset,
                log_end_offset,
            });
        }
    }

    /// The largest record timestamp in the log (for ListOffsets with timestamp -3).
    pub fn max_timestamp(&self) -> Option<i64> {
        let state = self.lock_state();
        state.segments.iter().map(|s| s.max_timestamp).filter(|&t| t >= 0).max()
    }

    /// Forgets idempotent producers that have not written for `max_idle_ms` (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were forgotten.
    pub fn expire_producers(&self, now_ms: i64, max_idle_ms: i64) -> usize {
        self.lock_state().producers.expire(now_ms, max_idle_ms)
    }

    /// Idempotent producers this log remembers.
    pub fn producer_count(&self) -> usize {
        self.lock_state().producers.len()
    }

    /// ListOffsets by time: the offset and timestamp of the first record whose timestamp is at
    /// or after `timestamp`, or `None` if every record is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, ReadError> {
        let candidates: Vec<_> = {
            let state = self.lock_state();
            state
                .segments
                .iter()
                .filter(|s| s.max_timestamp >= timestamp)
                .map(|s| {
                    let start_offset = s.base_offset + i64::from(s.time_index.lookup(timestamp));
                    (s.log.clone(), s.log_path.clone(), s.scan_start(start_offset), s.size)
                })
                .collect()
        };
        let log_start_offset = self.log_start_offset();
        for (file, path, start, size) in candidates {
            let mut scanner = BatchScanner::new(&*file, start, size, SEEK_WINDOW_BYTES);
            loop {
                let batch = scanner.next(false).map_err(|e| match e {
                    ScanError::Io(e) => ReadError::Io(IoError { path: path.clone(), ..e }),
                    ScanError::Invalid { position, error } => {
                        ReadError::Corrupt { file: path.clone(), position, reason: error.to_string() }
                    }
                })?;
                let Some(batch) = batch else { break };
                if batch.header.max_timestamp < timestamp || batch.header.last_offset() < log_start_offset {
                    continue;
                }
                let mut bytes = vec![0u8; batch.header.size()];
                file.read_exact_at(&mut bytes, batch.position).io_context("read", &path)?;
                let found = first_record_at_or_after(&bytes, timestamp).ok_or_else(|| ReadError::Corrupt {
                    file: path.clone(),
                    position: batch.position,
                    reason: "batch max timestamp promises a record its records do not hold".to_string(),
                })?;
                let (found_timestamp, found_offset) = found;
                return Ok(Some((found_timestamp, found_offset.max(log_start_offset))));
            }
        }
        Ok(None)
    }

    /// Removes every batch at or after `offset` (a follower cutting a divergent tail). A batch
    /// that contains `offset` goes entirely, as in Kafka. Returns the new log end offset. The
    /// truncation is synced before this returns, so the removed tail cannot come back.
    /// Idempotent producers are then remembered as a replay of the kept log gives them.
    pub fn truncate_to(&self, offset: i64, now_ms: i64) -> Result<i64, LogError> {
        let _maintenance = self.lock_maintenance();
        self.check_online()?;
        if offset >= self.log_end_offset() {
            return Ok(self.log_end_offset());
        }
        // Lower the recovery point first, to the start of the segment the cut falls in (a
        // batch boundary at or below the new log end): after a crash mid-truncation, or once
        // new appends reuse the cut offsets, recovery re-verifies from there instead of
        // trusting what the old checkpoint said was flushed.
        let lowest_kept = {
            let state = self.lock_state();
            state.segments[state.segment_for(offset)].base_offset.min(offset)
        };
        self.write_checkpoint_locked(false, Some(lowest_kept))?;
        let mut state = self.lock_state();
        let result = self.truncate_locked(&mut state, offset, false, now_ms);
        let new_end = state.log_end_offset();
        drop(state);
        result.map_err(|e| LogError::Io(self.fail(e)))?;
        Ok(new_end)
    }

    /// Deletes every record and restarts the log, empty, at `offset`, which may lie beyond
    /// the log end (Kafka's `truncateFullyAndStartAt`: a follower whose leader's log start
    /// moved past this log's end). Synced before it returns.
    pub fn truncate_fully_and_start_at(&self, offset: i64, now_ms: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: self.log_start_offset(),
                log_end_offset: self.log_end_offset(),
            });
        }
        let _maintenance = self.lock_maintenance();
        self.check_online()?;
        // Nothing below the new start may count as recovered after a crash midway.
        self.write_checkpoint_locked(false, Some(self.log_start_offset()))?;
        let mut state = self.lock_state();
        let result = self.truncate_locked(&mut state, offset, true, now_ms);
        drop(state);
        result.map_err(|e| LogError::Io(self.fail(e)))?;
        {
            let mut flush = self.lock_flush();
            flush.flushed_offset = offset;
            self.flushed_offset.store(offset, Ordering::Release);
        }
        self.write_checkpoint_locked(false, None)
    }

    fn truncate_locked(&self, state: &mut LogState, offset: i64, fully: bool, now_ms: i64) -> Result<(), IoError> {
        state.generation += 1;
        // The last checkpoint's producer snapshot may hold batches about to be cut, and an
        // open would take it once appends pass its offset again: it goes before the cut, made
        // durable by the same directory sync (the next checkpoint writes a new one).
        let snapshot = self.dir.join(SNAPSHOT_FILE);
        if self.backend.exists(&snapshot).io_context("check", &snapshot)? {
            self.backend.remove_file(&snapshot).io_context("remove", &snapshot)?;
        }
        if fully || offset <= state.log_start_offset {
            // Everything goes: start over at `offset`.
            // The in-memory segments stay until the new one exists, so a failure midway leaves
            // an offline log that still has an active segment.
            for segment in &state.segments {
                remove_segment_files(&*self.backend, &self.dir, segment.base_offset)?;
            }
            state.segments = vec![Segment::create(&*self.backend, &self.dir, offset, now_ms)?];
            state.log_start_offset = offset;
            self.log_start_offset.store(offset, Ordering::Release);
        } else {
            while state.segments.len() > 1 && state.active().base_offset >= offset {
                let segment = state.segments.pop().expect("more than one segment");
                remove_segment_files(&*self.backend, &self.dir, segment.base_offset)?;
            }
            let index_interval_bytes = self.config().index_interval_bytes;
            let active = state.active_mut();
            active.truncate(offset, index_interval_bytes)?;
            active.log.sync_data().io_context("sync", &active.log_path)?;
        }
        self.backend.sync_dir(&self.dir).io_context("sync", &self.dir)?;
        // Rolled segments below the cut keep their unsynced writes; removed ones are gone.
        let live: Vec<PathBuf> = state.segments.iter().map(|s| s.log_path.clone()).collect();
        state.rolled_unsynced.retain(|(path, _)| live.contains(path));
        state.dir_dirty = false;
        let log_end_offset = state.log_end_offset();
        // A full reset forgets every producer and epoch: none of their records is left.
        let forget_from = if fully { i64::MIN } else { log_end_offset };
        if fully {
            state.producers = ProducerStates::default();
        } else if state.producers.remembers_batches_from(log_end_offset) {
            state.producers = self.replay_kept_producers(state)?;
        }
        if state.epochs.truncate_from_end(forget_from) {
            let path = self.dir.join(epoch_cache::FILE_NAME);
            state.epochs.persist(&*self.backend, &path).io_context("write", &path)?;
        }
        self.log_end_offset.store(log_end_offset, Ordering::Release);
        let mut flush = self.lock_flush();
        flush.flushed_offset = flush.flushed_offset.min(log_end_offset);
        self.flushed_offset.store(flush.flushed_offset, Ordering::Release);
        Ok(())
    }

    /// Idempotent producer state as a replay of the kept log gives it (Kafka rebuilds it so
    /// too): each producer's last five kept batches, in the epoch of its last one. A producer
    /// whose remembered batches were all cut may still have earlier batches in the log, and a
    /// retry of those must be known. The replay starts at the newest segment snapshot, so it
    /// reads at most the segment the cut fell in unless snapshots are missing.
    fn replay_kept_producers(&self, state: &LogState) -> Result<ProducerStates, IoError> {
        let (producers, from) =
            newest_segment_snapshot(&*self.backend, &self.dir, &state.segments, state.log_start_offset)?;
        replay_producers(producers, from, &state.segments).map_err(|(path, e)| e.into_io_error(&path))
    }

    /// Kafka's DeleteRecords: moves the log start offset up to `offset` (at most the log end),
    /// deleting segments that lie wholly below it. Returns the new log start offset.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, LogError> {
        let _maintenance = self.lock_maintenance();
        self.check_online()?;
        let mut state = self.lock_state();
        let log_end_offset = state.log_end_offset();
        if offset > log_end_offset || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start_offset: state.log_start_offset,
                log_end_offset,
            });
        }
        if offset <= state.log_start_offset {
            return Ok(state.log_start_offset);
        }
        self.set_log_start(&mut state, offset)?;
        self.delete_front_segments(&mut state, |segment, next_base| {
            next_base.is_some_and(|n| n <= offset) || segment.next_offset <= offset && segment.size == 0
        })?;
        drop(state);
        self.write_checkpoint_locked(false, None)?;
        Ok(self.log_start_offset())
    }

    fn set_log_start(&self, state: &mut LogState, offset: i64) -> Result<(), LogError> {
        state.log_start_offset = offset;
        self.log_start_offset.store(offset, Ordering::Release);
        if state.epochs.truncate_from_start(offset) {
            let path = self.dir.join(epoch_cache::FILE_NAME);
            state.epochs.persist(&*self.backend, &path).io_context("write", &path).map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    /// Deletes segments from the front while `doomed(segment, next segment's base)` holds,
    /// never the active one.
    fn delete_front_segments(
        &self,
        state: &mut LogState,
        mut doomed: impl FnMut(&Segment, Option<i64>) -> bool,
    ) -> Result<Vec<DeletedSegment>, LogError> {
        let mut deleted = Vec::new();
        while state.segments.len() > 1 {
            let next_base = state.segments.get(1).map(|s| s.base_offset);
            if !doomed(&state.segments[0], next_base) {
                break;
            }
            let segment = state.segments.remove(0);
            remove_segment_files(&*self.backend, &self.dir, segment.base_offset)
                .map_err(|e| LogError::Io(self.fail(e)))?;
            state.rolled_unsynced.retain(|(path, _)| *path != segment.log_path);
            deleted.push(DeletedSegment {
                base_offset: segment.base_offset,
                next_offset: segment.next_offset,
                bytes: segment.size,
            });
        }
        let first_base = state.segments[0].base_offset;
        if first_base > state.log_start_offset {
            self.set_log_start(state, first_base)?;
        }
        Ok(deleted)
    }

    /// Applies `retention.ms` and `retention.bytes`, deleting whole segments from the front,
    /// but only segments wholly below `high_watermark`: the next segment starts at or below
    /// it, so the new log start never passes it. A record not yet on every in-sync replica
    /// must survive here, or acks=all could succeed for a record no replica holds (Kafka's
    /// rule too). An expired active segment is rolled first so it can go too (the log keeps
    /// an empty active segment at the log end), once the whole log lies below the high
    /// watermark. A single node passes its log end offset.
    pub fn enforce_retention(&self, now_ms: i64, high_watermark: i64) -> Result<Vec<DeletedSegment>, LogError> {
        let _maintenance = self.lock_maintenance();
        self.check_online()?;
        let config = self.config();
        let mut state = self.lock_state();
        let expired = |segment: &Segment| match config.retention_ms {
            Some(ms) => segment.size > 0 && segment.max_timestamp < now_ms.saturating_sub(ms as i64),
            None => false,
        };
        let replicated = |next_base: Option<i64>| next_base.is_some_and(|next| next <= high_watermark);
        if state.log_end_offset() <= high_watermark && state.segments.iter().all(expired) {
            self.roll(&mut state, now_ms)?;
        }
        let mut deleted =
            self.delete_front_segments(&mut state, |segment, next_base| replicated(next_base) && expired(segment))?;
        if let Some(limit) = config.retention_bytes {
            let mut size = state.size_bytes();
            deleted.extend(self.delete_front_segments(&mut state, |segment, next_base| {
                let doomed = replicated(next_base) && size.saturating_sub(segment.size) >= limit && size > limit;
                if doomed {
                    size -= segment.size;
                }
                doomed
            })?);
        }
        assert!(
            deleted.is_empty() || state.log_start_offset <= high_watermark,
            "retention moved the log start to {} past the high watermark {high_watermark}",
            state.log_start_offset
        );
        if !deleted.is_empty() {
            state.dir_dirty = true;
            tracing::info!(dir = %self.dir.display(), segments = deleted.len(), "retention deleted segments");
        }
        Ok(deleted)
    }

    /// The periodic upkeep a node runs on every log, the broker's maintenance and keel-sim's
    /// alike: forgets idempotent producers idle for `producer_idle_ms_max`, applies retention
    /// below `retention_bound` ([`Log::enforce_retention`]; a replica passes what its replica
    /// engine allows, never more than its high watermark), then writes a recovery checkpoint,
    /// whose directory sync also makes the deletions durable. Returns the deleted segments.
    pub fn maintain(
        &self,
        now_ms: i64,
        retention_bound: i64,
        producer_idle_ms_max: i64,
    ) -> Result<Vec<DeletedSegment>, LogError> {
        self.expire_producers(now_ms, producer_idle_ms_max);
        let deleted = self.enforce_retention(now_ms, retention_bound)?;
        self.checkpoint()?;
        Ok(deleted)
    }

    /// Verifies every batch of every segment (CRC included), for `keel` tooling and tests:
    /// reads do not recompute CRCs, so this is how silent corruption of old data is found.
    pub fn verify(&self) -> Result<u64, ReadError> {
        let segments: Vec<_> = {
            let state = self.lock_state();
            state.segments.iter().map(|s| (s.log.clone(), s.log_path.clone(), s.size)).collect()
        };
        let mut batches = 0;
        for (file, path, size) in segments {
            let mut scanner = BatchScanner::new(&*file, 0, size, SCAN_WINDOW_BYTES);
            loop {
                match scanner.next(true) {
                    Ok(Some(_)) => batches += 1,
                    Ok(None) => break,
                    Err(ScanError::Io(e)) => return Err(ReadError::Io(IoError { path, ..e })),
                    Err(ScanError::Invalid { position, error }) => {
                        return Err(ReadError::Corrupt { file: path, position, reason: error.to_string() })
                    }
                }
            }
        }
        Ok(batches)
    }

    /// Flushes everything, writes the indexes and a clean checkpoint, and refuses further
    /// writes. The next open scans nothing.
    pub fn close(&self, now_ms: i64) -> Result<(), LogError> {
        self.flush(now_ms)?;
        let _maintenance = self.lock_maintenance();
        self.check_online()?;
        {
            let mut state = self.lock_state();
            if self.flushed_offset() < state.log_end_offset() {
                // An append slipped in after the flush; sync it too (no other lock is held).
                drop(state);
                self.flush(now_ms)?;
                state = self.lock_state();
            }
            state.active_mut().seal();
        }
        self.write_checkpoint_locked(true, None)?;
        let _ = self.offline.set("log is closed".to_string());
        Ok(())
    }

    /// Deletes the log's directory and everything in it (topic deletion).
    pub fn delete(self) -> Result<(), LogError> {
        let _ = self.offline.set("log is deleted".to_string());
        self.backend.remove_dir_all(&self.dir).io_context("remove", &self.dir)?;
        Ok(())
    }
}

fn remove_segment_files(backend: &dyn Backend, dir: &Path, base_offset: i64) -> Result<(), IoError> {
    // The log file goes first: index files without a log are cleaned up at the next open.
    for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX, PRODUCER_SNAPSHOT_SUFFIX] {
        let path = dir.join(file_name(base_offset, suffix));
        if backend.exists(&path).io_context("check", &path)? {
            backend.remove_file(&path).io_context("remove", &path)?;
        }
    }
    Ok(())
}

/// Recovers the segment holding the recovery point, or one after it: batches below the
/// recovery point must be intact (they were flushed); from the recovery point on, the first
/// torn or corrupt batch and everything after it are cut. Returns whether a tail was cut.
#[allow(clippy::too_many_arguments)]
fn recover_segment(
    backend: &dyn Backend,
    path: PathBuf,
    base_offset: i64,
    recovery_point: i64,
    config: &LogConfig,
    now_ms: i64,
    epochs: &mut EpochCache,
    report: &mut RecoveryReport,
) -> Result<(Segment, bool), OpenError> {
    let mut segment = Segment::load_for_recovery(backend, path, base_offset, recovery_point, now_ms)?;
    let file_size = segment.log.len().io_context("stat", &segment.log_path)?;
    let start = segment.size;
    let file = segment.log.clone();
    let mut scanner = BatchScanner::new(&*file, start, file_size, SCAN_WINDOW_BYTES);
    let mut cut = None;
    loop {
        let position = scanner.position();
        match scanner.next(true) {
            Ok(Some(batch)) => {
                if batch.header.base_offset < segment.next_offset {
                    cut = Some((position, "batch offsets go backwards".to_string()));
                    break;
                }
                if batch.header.base_offset >= recovery_point {
                    epochs.assign(LeaderEpoch(batch.header.partition_leader_epoch), batch.header.base_offset);
                }
                segment.on_batch_written(&batch.header, batch.position, config.index_interval_bytes);
            }
            Ok(None) => break,
            Err(ScanError::Io(e)) => return Err(OpenError::Io(IoError { path: segment.log_path.clone(), ..e })),
            Err(ScanError::Invalid { position, error }) => {
                cut = Some((position, error.to_string()));
                break;
            }
        }
    }
    report.scanned_bytes += scanner.position() - start;
    let Some((position, reason)) = cut else { return Ok((segment, false)) };
    if segment.next_offset < recovery_point {
        // The damage is in data the checkpoint says was flushed: never drop it silently.
        return Err(OpenError::Corrupt { file: segment.log_path.clone(), position, reason });
    }
    tracing::warn!(
        file = %segment.log_path.display(),
        position,
        removed_bytes = file_size - position,
        %reason,
        "truncating torn or corrupt log tail after unclean shutdown"
    );
    segment.log.set_len(position).io_context("truncate", &segment.log_path)?;
    report.truncated_bytes += file_size - position;
    if report.truncated_at.is_none() {
        report.truncated_at = Some((segment.log_path.clone(), position, reason));
    }
    Ok((segment, true))
}

/// Rebuilds idempotent producer state: the snapshot from the last checkpoint, then the batch
/// headers after it. Without a usable one, the newest segment snapshot and the batches after
/// it; without any, the whole log is replayed (headers only).
fn load_producers(
    backend: &dyn Backend,
    dir: &Path,
    segments: &[Segment],
    log_start_offset: i64,
    log_end_offset: i64,
) -> Result<ProducerStates, OpenError> {
    let path = dir.join(SNAPSHOT_FILE);
    let snapshot = if backend.exists(&path).io_context("check", &path)? {
        let bytes = read_all(backend, &path).io_context("read", &path)?;
        match ProducerStates::decode(&bytes) {
            Ok((states, offset)) if offset <= log_end_offset && offset >= log_start_offset => Some((states, offset)),
            Ok(_) => None,
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "ignoring unusable producer snapshot; replaying the log");
                None
            }
        }
    } else {
        None
    };
    let (states, from) = match snapshot {
        Some(snapshot) => snapshot,
        None => newest_segment_snapshot(backend, dir, segments, log_start_offset)?,
    };
    replay_producers(states, from, segments).map_err(|(path, e)| e.into_open_error(&path))
}

/// The newest intact producer snapshot taken at a segment's creation, and the offset it is
/// as of (that segment's base); an empty state at the log start if there is none.
fn newest_segment_snapshot(
    backend: &dyn Backend,
    dir: &Path,
    segments: &[Segment],
    log_start_offset: i64,
) -> Result<(ProducerStates, i64), IoError> {
    for segment in segments.iter().rev() {
        let path = dir.join(file_name(segment.base_offset, PRODUCER_SNAPSHOT_SUFFIX));
        if !backend.exists(&path).io_context("check", &path)? {
            continue;
        }
        let bytes = read_all(backend, &path).io_context("read", &path)?;
        match ProducerStates::decode(&bytes) {
            Ok((states, offset)) if offset == segment.base_offset => return Ok((states, offset)),
            Ok((_, offset)) => {
                tracing::warn!(file = %path.display(), offset, "ignoring a producer snapshot for another offset");
            }
            // Written without fsync: a crash may have torn it.
            Err(reason) => tracing::warn!(file = %path.display(), %reason, "ignoring unusable producer snapshot"),
        }
    }
    Ok((ProducerStates::default(), log_start_offset))
}

/// Applies the header of every batch at or after `from` to `states`. A scan failure comes
/// back with the file it happened in.
fn replay_producers(
    mut states: ProducerStates,
    from: i64,
    segments: &[Segment],
) -> Result<ProducerStates, (PathBuf, ScanError)> {
    for segment in segments.iter().filter(|s| s.next_offset > from) {
        let mut scanner = BatchScanner::new(&*segment.log, segment.scan_start(from), segment.size, SCAN_WINDOW_BYTES);
        while let Some(batch) = scanner.next(false).map_err(|e| (segment.log_path.clone(), e))? {
            if batch.header.base_offset >= from {
                states.apply(&batch.header);
            }
        }
    }
    Ok(states)
}
