//! One segment: a file of whole batches starting at `base_offset`, with its sparse indexes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{read_all, Backend, StorageFile};
use crate::batch::{validate_batch, BatchError, BatchHeader, BATCH_HEADER_BYTES};
use crate::error::{IoContext, IoError};
use crate::index::{OffsetIndex, TimeIndex};

pub(crate) const LOG_SUFFIX: &str = ".log";
pub(crate) const INDEX_SUFFIX: &str = ".index";
pub(crate) const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// The idempotent producer state as of the segment's base offset, taken when it was created.
pub(crate) const PRODUCER_SNAPSHOT_SUFFIX: &str = ".snapshot";

/// Kafka's segment file name: the base offset, zero-padded to 20 digits.
pub(crate) fn file_name(base_offset: i64, suffix: &str) -> String {
    format!("{base_offset:020}{suffix}")
}

/// The base offset a segment file name encodes, if it is one of `suffix`.
pub(crate) fn parse_file_name(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?;
    (stem.len() == 20).then(|| stem.parse().ok()).flatten()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub(crate) base_offset: i64,
    pub(crate) log_path: PathBuf,
    pub(crate) log: Arc<dyn StorageFile>,
    /// Bytes of whole, written batches. Readers never look past it.
    pub(crate) size: u64,
    /// One past the last offset in the segment (`base_offset` when empty).
    pub(crate) next_offset: i64,
    pub(crate) offset_index: OffsetIndex,
    pub(crate) time_index: TimeIndex,
    /// Running maximum batch timestamp and the base offset of the batch that first reached it;
    /// -1 while empty, as Kafka reports "no timestamp".
    pub(crate) max_timestamp: i64,
    pub(crate) offset_of_max_timestamp: i64,
    bytes_since_index_entry: u64,
    /// Wall-clock milliseconds when the segment was created or loaded (for `segment.ms`).
    pub(crate) created_ms: i64,
}

impl Segment {
    pub(crate) fn create(backend: &dyn Backend, dir: &Path, base_offset: i64, now_ms: i64) -> Result<Segment, IoError> {
        let log_path = dir.join(file_name(base_offset, LOG_SUFFIX));
        let log = backend.open(&log_path, true).io_context("create", &log_path)?;
        // A file left behind by an earlier truncation must not leak old bytes.
        log.set_len(0).io_context("truncate", &log_path)?;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, PRODUCER_SNAPSHOT_SUFFIX] {
            let path = dir.join(file_name(base_offset, suffix));
            if backend.exists(&path).io_context("check", &path)? {
                backend.remove_file(&path).io_context("remove", &path)?;
            }
        }
        Ok(Segment::empty(base_offset, log_path, log, now_ms))
    }

    pub(crate) fn empty(base_offset: i64, log_path: PathBuf, log: Arc<dyn StorageFile>, now_ms: i64) -> Segment {
        Segment {
            base_offset,
            log_path,
            log,
            size: 0,
            next_offset: base_offset,
            offset_index: OffsetIndex::default(),
            time_index: TimeIndex::default(),
            max_timestamp: -1,
            offset_of_max_timestamp: -1,
            bytes_since_index_entry: 0,
            created_ms: now_ms,
        }
    }

    pub(crate) fn index_path(&self, suffix: &str) -> PathBuf {
        self.log_path.with_file_name(file_name(self.base_offset, suffix))
    }

    pub(crate) fn relative(&self, offset: i64) -> u32 {
        let relative = offset - self.base_offset;
        assert!((0..=i64::from(u32::MAX)).contains(&relative), "offset {offset} outside segment {}", self.base_offset);
        relative as u32
    }

    /// Whether `last_offset` still fits the segment's 32-bit relative offsets.
    pub(crate) fn can_hold(&self, last_offset: i64) -> bool {
        last_offset - self.base_offset <= i64::from(i32::MAX)
    }

    /// Updates size, offsets and indexes for a batch just written at `position`.
    pub(crate) fn on_batch_written(&mut self, header: &BatchHeader, position: u64, index_interval_bytes: u64) {
        assert_eq!(position, self.size, "batches are written back to back");
        assert!(header.base_offset >= self.next_offset, "offsets grow within a segment");
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if self.offset_index.len() == 0 || self.bytes_since_index_entry >= index_interval_bytes {
            self.offset_index.push(self.relative(header.base_offset), position as u32);
            if self.offset_of_max_timestamp >= 0 {
                self.time_index.maybe_push(self.max_timestamp, self.relative(self.offset_of_max_timestamp));
            }
            self.bytes_since_index_entry = 0;
        }
        self.bytes_since_index_entry += header.size() as u64;
        self.size += header.size() as u64;
        self.next_offset = header.next_offset();
    }

    /// Records the final maximum timestamp in the time index when the segment stops being
    /// active, so retention and time lookups see it after a restart.
    pub(crate) fn seal(&mut self) {
        if self.offset_of_max_timestamp >= 0 {
            self.time_index.maybe_push(self.max_timestamp, self.relative(self.offset_of_max_timestamp));
        }
    }

    /// A byte position at or before the batch holding `offset`.
    pub(crate) fn scan_start(&self, offset: i64) -> u64 {
        let relative = self.relative(offset.max(self.base_offset));
        self.offset_index.lookup(relative).map_or(0, |(_, position)| u64::from(position))
    }

    /// Opens an existing segment with its index files (when they are valid), keeping only
    /// index entries for batches below `keep_below`.
    fn open_existing(
        backend: &dyn Backend,
        log_path: PathBuf,
        base_offset: i64,
        keep_below: i64,
        now_ms: i64,
    ) -> Result<(Segment, u64), crate::OpenError> {
        let log = backend.open(&log_path, false).io_context("open", &log_path)?;
        let file_size = log.len().io_context("stat", &log_path)?;
        let mut segment = Segment::empty(base_offset, log_path, log, now_ms);
        let offset_index = read_index(backend, &segment.index_path(INDEX_SUFFIX))?
            .and_then(|bytes| OffsetIndex::decode(&bytes, file_size));
        let time_index =
            read_index(backend, &segment.index_path(TIME_INDEX_SUFFIX))?.and_then(|bytes| TimeIndex::decode(&bytes));
        if let (Some(offset_index), Some(time_index)) = (offset_index, time_index) {
            segment.offset_index = offset_index;
            segment.time_index = time_index;
        }
        let keep = (keep_below.saturating_sub(base_offset)).clamp(0, i64::from(u32::MAX)) as u32;
        segment.offset_index.truncate_to_offset(keep);
        segment.time_index.truncate_to_offset(keep);
        Ok((segment, file_size))
    }

    /// Forgets everything from the last offset index entry on, so a scan from `size` re-adds
    /// those batches (and their index entries) exactly as appends did.
    fn rewind_to_last_entry(&mut self) {
        let (relative, position) = self.offset_index.last().unwrap_or((0, 0));
        self.offset_index.truncate_to_position(u64::from(position));
        self.time_index.truncate_to_offset(relative);
        (self.max_timestamp, self.offset_of_max_timestamp) = match self.time_index.last() {
            Some((timestamp, relative)) => (timestamp, self.base_offset + i64::from(relative)),
            None => (-1, -1),
        };
        self.size = u64::from(position);
        self.next_offset = self.base_offset + i64::from(relative);
        self.bytes_since_index_entry = u64::MAX;
    }

    /// Loads a segment whose end is known and whose data and indexes were flushed before the
    /// stop: a segment below the recovery point (it ends where the next begins) or the last
    /// segment after a clean close (it ends at the checkpoint's log end). Nothing is scanned
    /// when the sealed indexes are intact; otherwise the tail after the last index entry is
    /// re-read (frames only).
    pub(crate) fn load_flushed(
        backend: &dyn Backend,
        log_path: PathBuf,
        base_offset: i64,
        next_offset: i64,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<Segment, crate::OpenError> {
        let (mut segment, file_size) = Segment::open_existing(backend, log_path, base_offset, i64::MAX, now_ms)?;
        let sealed = segment.time_index.last().is_some() && segment.offset_index.last().is_some();
        if sealed && next_offset > base_offset {
            let (_, position) = segment.offset_index.last().expect("checked");
            let (timestamp, relative) = segment.time_index.last().expect("checked");
            segment.size = file_size;
            segment.next_offset = next_offset;
            segment.max_timestamp = timestamp;
            segment.offset_of_max_timestamp = base_offset + i64::from(relative);
            segment.bytes_since_index_entry = file_size - u64::from(position);
            return Ok(segment);
        }
        segment.rewind_to_last_entry();
        segment.scan_tail(file_size, index_interval_bytes).map_err(|e| e.into_open_error(&segment.log_path))?;
        Ok(segment)
    }

    /// Loads the segment that holds the recovery point (or one after it), positioned at the
    /// last index entry below the recovery point; the caller verifies and scans from there.
    pub(crate) fn load_for_recovery(
        backend: &dyn Backend,
        log_path: PathBuf,
        base_offset: i64,
        recovery_point: i64,
        now_ms: i64,
    ) -> Result<Segment, crate::OpenError> {
        let (mut segment, _) = Segment::open_existing(backend, log_path, base_offset, recovery_point, now_ms)?;
        segment.rewind_to_last_entry();
        Ok(segment)
    }

    /// Re-reads batch frames from `size` up to `end`, as if appending them.
    fn scan_tail(&mut self, end: u64, index_interval_bytes: u64) -> Result<(), ScanError> {
        let log = self.log.clone();
        let mut scanner = BatchScanner::new(&*log, self.size, end, SCAN_WINDOW_BYTES);
        while let Some(batch) = scanner.next(false)? {
            if batch.header.base_offset < self.next_offset {
                let error = BatchError::OffsetsNotIncreasing {
                    base: batch.header.base_offset,
                    last: batch.header.last_offset(),
                    previous: self.next_offset - 1,
                };
                return Err(ScanError::Invalid { position: batch.position, error });
            }
            self.on_batch_written(&batch.header, batch.position, index_interval_bytes);
        }
        Ok(())
    }

    /// Cuts the segment before the batch that holds `offset` (or the first after it).
    pub(crate) fn truncate(&mut self, offset: i64, index_interval_bytes: u64) -> Result<(), IoError> {
        let mut cut = self.size;
        let mut scanner = BatchScanner::new(&*self.log, self.scan_start(offset), self.size, SEEK_WINDOW_BYTES);
        while let Some(batch) = scanner.next(false).map_err(|e| e.into_io_error(&self.log_path))? {
            if batch.header.last_offset() >= offset {
                cut = batch.position;
                break;
            }
        }
        self.log.set_len(cut).io_context("truncate", &self.log_path)?;
        self.offset_index.truncate_to_position(cut);
        self.rewind_to_last_entry();
        self.scan_tail(cut, index_interval_bytes).map_err(|e| e.into_io_error(&self.log_path))
    }
}

pub(crate) fn write_index(backend: &dyn Backend, path: &Path, position: u64, bytes: &[u8]) -> Result<(), IoError> {
    let file = backend.open(path, true).io_context("open", path)?;
    file.write_all_at(bytes, position).io_context("write", path)?;
    file.set_len(position + bytes.len() as u64).io_context("truncate", path)?;
    file.sync_data().io_context("sync", path)
}

fn read_index(backend: &dyn Backend, path: &Path) -> Result<Option<Vec<u8>>, IoError> {
    if !backend.exists(path).io_context("check", path)? {
        return Ok(None);
    }
    read_all(backend, path).io_context("read", path).map(Some)
}

/// Read-ahead for sequential scans (recovery, loading).
pub(crate) const SCAN_WINDOW_BYTES: usize = 4 << 20;
/// Read-ahead when seeking a batch from a sparse index entry.
pub(crate) const SEEK_WINDOW_BYTES: usize = 16 << 10;

/// A batch found by a [`BatchScanner`].
#[derive(Debug)]
pub(crate) struct ScannedBatch {
    pub(crate) position: u64,
    pub(crate) header: BatchHeader,
}

/// Why a scan stopped early.
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(IoError),
    /// The bytes at `position` are not a valid batch (or not a whole one).
    Invalid {
        position: u64,
        error: BatchError,
    },
}

impl ScanError {
    pub(crate) fn into_open_error(self, path: &Path) -> crate::OpenError {
        match self {
            ScanError::Io(e) => crate::OpenError::Io(e),
            ScanError::Invalid { position, error } => {
                crate::OpenError::Corrupt { file: path.to_path_buf(), position, reason: error.to_string() }
            }
        }
    }

    /// For operations whose errors are IO errors: damage becomes one that says where.
    pub(crate) fn into_io_error(self, path: &Path) -> IoError {
        match self {
            ScanError::Io(e) => IoError { path: path.to_path_buf(), ..e },
            ScanError::Invalid { position, error } => IoError {
                op: "scan",
                path: path.to_path_buf(),
                source: std::io::Error::other(format!("corrupt batch at byte {position}: {error}")),
            },
        }
    }
}

/// Walks the batches of a segment file between two positions with a read-ahead window, so a
/// scan costs one read per window rather than one per batch.
pub(crate) struct BatchScanner<'a> {
    file: &'a dyn StorageFile,
    position: u64,
    end: u64,
    window: Vec<u8>,
    window_start: u64,
    window_bytes: usize,
}

impl<'a> BatchScanner<'a> {
    pub(crate) fn new(file: &'a dyn StorageFile, start: u64, end: u64, window_bytes: usize) -> BatchScanner<'a> {
        BatchScanner { file, position: start, end, window: Vec::new(), window_start: start, window_bytes }
    }

    pub(crate) fn position(&self) -> u64 {
        self.position
    }

    /// Makes `[position, position + len)` available in the window, reading ahead.
    fn ensure(&mut self, position: u64, len: usize) -> Result<&[u8], std::io::Error> {
        let window_end = self.window_start + self.window.len() as u64;
        if position < self.window_start || position + len as u64 > window_end {
            let want = len.max(self.window_bytes) as u64;
            let read = want.min(self.end - position) as usize;
            self.window.resize(read, 0);
            self.file.read_exact_at(&mut self.window, position)?;
            self.window_start = position;
        }
        let from = (position - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }

    /// The next batch, or `None` at the end. With `verify`, the whole batch is checked (CRC,
    /// counts, producer fields); without, only its frame (magic, length).
    pub(crate) fn next(&mut self, verify: bool) -> Result<Option<ScannedBatch>, ScanError> {
        let position = self.position;
        if position >= self.end {
            return Ok(None);
        }
        let available = (self.end - position) as usize;
        let invalid = |error| ScanError::Invalid { position, error };
        if available < BATCH_HEADER_BYTES {
            return Err(invalid(BatchError::Truncated { available }));
        }
        let io = |source| ScanError::Io(IoError { op: "read", path: PathBuf::from("segment"), source });
        let header_bytes = self.ensure(position, BATCH_HEADER_BYTES).map_err(io)?;
        let header = BatchHeader::parse(header_bytes).map_err(invalid)?;
        header.check_frame(available).map_err(invalid)?;
        if verify {
            let bytes = self.ensure(position, header.size()).map_err(io)?;
            validate_batch(bytes).map_err(invalid)?;
        }
        self.position += header.size() as u64;
        Ok(Some(ScannedBatch { position, header }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_round_trip() {
        assert_eq!(file_name(42, LOG_SUFFIX), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log", LOG_SUFFIX), Some(42));
        assert_eq!(parse_file_name("00000000000000000042.index", LOG_SUFFIX), None);
        assert_eq!(parse_file_name("42.log", LOG_SUFFIX), None);
        assert_eq!(parse_file_name("0000000000000000004x.log", LOG_SUFFIX), None);
    }
}
