//! The leader-epoch cache: for each leader epoch, the first offset written in it.
//!
//! Followers use it (through OffsetForLeaderEpoch) to find where their log diverges from the
//! leader's. It is persisted in Kafka's text format (`leader-epoch-checkpoint`) before any batch
//! of a new epoch is written, and truncated together with the log.

use std::path::Path;

use keel_types::LeaderEpoch;

use crate::backend::{read_all, write_atomically, Backend};
use crate::error::IoContext;

pub(crate) const FILE_NAME: &str = "leader-epoch-checkpoint";

/// An `(epoch, start offset)` pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: LeaderEpoch,
    pub start_offset: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct EpochCache {
    /// Strictly increasing in both epoch and start offset.
    entries: Vec<EpochEntry>,
}

impl EpochCache {
    pub(crate) fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub(crate) fn latest(&self) -> Option<EpochEntry> {
        self.entries.last().copied()
    }

    /// Records that `epoch` starts at `start_offset`. Returns whether the cache changed (and so
    /// must be persisted). An epoch at or below the latest is not an error here: the caller
    /// decides whether an older epoch may write.
    pub(crate) fn assign(&mut self, epoch: LeaderEpoch, start_offset: i64) -> bool {
        if !epoch.is_defined() {
            return false;
        }
        match self.entries.last() {
            Some(last) if epoch <= last.epoch => false,
            Some(last) if start_offset < last.start_offset => {
                // A new epoch starting below the previous one's start means the log was
                // truncated without the cache; drop the stale entries it contradicts.
                self.entries.retain(|e| e.start_offset < start_offset);
                self.entries.push(EpochEntry { epoch, start_offset });
                true
            }
            _ => {
                self.entries.push(EpochEntry { epoch, start_offset });
                true
            }
        }
    }

    /// Removes entries starting at or after `end_offset` (the log was truncated there).
    pub(crate) fn truncate_from_end(&mut self, end_offset: i64) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.entries.len() != before
    }

    /// Moves the cache's start to `start_offset` (the log start moved): entries wholly before
    /// it go, and the one containing it now starts there.
    pub(crate) fn truncate_from_start(&mut self, start_offset: i64) -> bool {
        let containing = self.entries.partition_point(|e| e.start_offset <= start_offset);
        if containing == 0 {
            return false;
        }
        let mut changed = containing > 1;
        self.entries.drain(..containing - 1);
        if self.entries[0].start_offset != start_offset {
            self.entries[0].start_offset = start_offset;
            changed = true;
        }
        changed
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest epoch at or below `requested`, and the
    /// offset where the next higher epoch starts (the log end if `requested` is the latest).
    /// Unknown answers are `(UNDEFINED, -1)`.
    pub(crate) fn end_offset_for(&self, requested: LeaderEpoch, log_end_offset: i64) -> (LeaderEpoch, i64) {
        const UNKNOWN: (LeaderEpoch, i64) = (LeaderEpoch::UNDEFINED, keel_types::UNDEFINED_OFFSET);
        if !requested.is_defined() {
            return UNKNOWN;
        }
        let Some(latest) = self.latest() else { return UNKNOWN };
        if requested == latest.epoch {
            return (requested, log_end_offset);
        }
        let higher = self.entries.partition_point(|e| e.epoch <= requested);
        if higher == self.entries.len() {
            // Newer than anything this log knows.
            return UNKNOWN;
        }
        let next_start = self.entries[higher].start_offset;
        match higher.checked_sub(1) {
            Some(floor) => (self.entries[floor].epoch, next_start),
            None => (requested, next_start),
        }
    }

    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut text = format!("0\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch.0, e.start_offset));
        }
        text.into_bytes()
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<EpochCache, String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some("0") {
            return Err("unknown version".to_string());
        }
        let count: usize = lines.next().and_then(|l| l.parse().ok()).ok_or("bad entry count")?;
        let mut cache = EpochCache::default();
        for _ in 0..count {
            let line = lines.next().ok_or("fewer entries than declared")?;
            let (epoch, offset) = line.split_once(' ').ok_or("bad entry")?;
            let epoch = LeaderEpoch(epoch.parse().map_err(|_| "bad epoch")?);
            let start_offset = offset.parse().map_err(|_| "bad offset")?;
            if !cache.assign(epoch, start_offset) {
                return Err(format!("entries out of order at epoch {epoch}"));
            }
        }
        Ok(cache)
    }

    pub(crate) fn load(backend: &dyn Backend, path: &Path) -> Result<EpochCache, crate::OpenError> {
        if !backend.exists(path).io_context("check", path)? {
            return Ok(EpochCache::default());
        }
        let bytes = read_all(backend, path).io_context("read", path)?;
        EpochCache::decode(&bytes).map_err(|reason| crate::OpenError::Corrupt {
            file: path.to_path_buf(),
            position: 0,
            reason: format!("leader epoch checkpoint: {reason}"),
        })
    }

    pub(crate) fn persist(&self, backend: &dyn Backend, path: &Path) -> std::io::Result<()> {
        write_atomically(backend, path, &self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(pairs: &[(i32, i64)]) -> EpochCache {
        let mut c = EpochCache::default();
        for &(e, o) in pairs {
            assert!(c.assign(LeaderEpoch(e), o));
        }
        c
    }

    #[test]
    fn end_offset_for_epoch_matches_kafka() {
        let c = cache(&[(1, 0), (3, 100), (6, 250)]);
        let leo = 400;
        let table = [
            (-1, (-1, -1)), // undefined epoch
            (0, (0, 0)),    // older than all: the requested epoch, ending where epoch 1 starts
            (1, (1, 100)),  // known epoch: ends where the next starts
            (2, (1, 100)),  // unknown middle epoch: floor epoch, next start
            (3, (3, 250)),
            (5, (3, 250)),
            (6, (6, 400)), // latest: the log end
            (7, (-1, -1)), // newer than anything known
        ];
        for (requested, (epoch, offset)) in table {
            assert_eq!(
                c.end_offset_for(LeaderEpoch(requested), leo),
                (LeaderEpoch(epoch), offset),
                "epoch {requested}"
            );
        }
        assert_eq!(EpochCache::default().end_offset_for(LeaderEpoch(0), 5), (LeaderEpoch::UNDEFINED, -1));
    }

    #[test]
    fn assign_ignores_old_epochs_and_truncation_works_both_ends() {
        let mut c = cache(&[(1, 0), (3, 100), (6, 250)]);
        assert!(!c.assign(LeaderEpoch(6), 300));
        assert!(!c.assign(LeaderEpoch(2), 300));
        assert!(c.truncate_from_end(250));
        assert_eq!(c.latest(), Some(EpochEntry { epoch: LeaderEpoch(3), start_offset: 100 }));
        assert!(!c.truncate_from_end(250));
        assert!(c.truncate_from_start(150));
        assert_eq!(c.entries(), &[EpochEntry { epoch: LeaderEpoch(3), start_offset: 150 }]);
        assert!(!c.truncate_from_start(150));
        assert!(!c.truncate_from_start(10), "before the first entry there is nothing to move");
    }

    #[test]
    fn text_format_round_trips_and_rejects_garbage() {
        let c = cache(&[(0, 0), (4, 17)]);
        assert_eq!(c.encode(), b"0\n2\n0 0\n4 17\n");
        assert_eq!(EpochCache::decode(&c.encode()).unwrap(), c);
        assert!(EpochCache::decode(b"0\n3\n0 0\n").is_err());
        assert!(EpochCache::decode(b"0\n2\n4 0\n1 5\n").is_err());
        assert!(EpochCache::decode(b"1\n0\n").is_err());
    }
}
