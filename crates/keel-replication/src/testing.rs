//! An in-memory partition log for tests and the simulator.
//!
//! [`VecLog`] keeps, for each offset, the leader epoch that wrote it (in Kafka a record is
//! identified by its offset and epoch, so two logs hold the same records exactly when their
//! epochs agree offset by offset) and an epoch cache that follows keel-storage's rules: an
//! entry is added with the first record of a newer epoch, removed by truncation, and moved up
//! with the log start.

use keel_types::LeaderEpoch;

use crate::LocalLog;

/// A partition log as a vector of record epochs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VecLog {
    log_start_offset: i64,
    /// The epoch of each record, from `log_start_offset` on.
    records: Vec<LeaderEpoch>,
    /// `(epoch, start offset)`, strictly increasing in both, as keel-storage's epoch cache.
    epochs: Vec<(LeaderEpoch, i64)>,
}

impl VecLog {
    /// An empty log starting at offset 0.
    pub fn new() -> VecLog {
        VecLog::default()
    }

    /// A log starting at 0 whose records have these epochs.
    pub fn from_epochs(epochs: &[i32]) -> VecLog {
        let mut log = VecLog::new();
        for &epoch in epochs {
            log.append(LeaderEpoch(epoch), 1);
        }
        log
    }

    pub fn records(&self) -> &[LeaderEpoch] {
        &self.records
    }

    /// The epochs of the records as plain numbers (for readable assertions).
    pub fn epochs(&self) -> Vec<i32> {
        self.records.iter().map(|e| e.0).collect()
    }

    pub fn epoch_entries(&self) -> &[(LeaderEpoch, i64)] {
        &self.epochs
    }

    /// The epoch of the record at `offset`, if the log holds it.
    pub fn epoch_at(&self, offset: i64) -> Option<LeaderEpoch> {
        let index = usize::try_from(offset.checked_sub(self.log_start_offset)?).ok()?;
        self.records.get(index).copied()
    }

    /// The records' epochs in `from..to`, clamped to the log.
    pub fn slice(&self, from: i64, to: i64) -> Vec<LeaderEpoch> {
        let index = |o: i64| (o - self.log_start_offset).clamp(0, self.records.len() as i64) as usize;
        self.records[index(from)..index(to).max(index(from))].to_vec()
    }

    /// Appends `count` records written in `epoch` (a leader's append, or a follower's of
    /// replicated records). Returns the new log end offset.
    ///
    /// # Panics
    /// If `epoch` is older than the latest epoch in the log: the caller broke the protocol.
    pub fn append(&mut self, epoch: LeaderEpoch, count: usize) -> i64 {
        if count == 0 {
            return self.log_end_offset();
        }
        match self.epochs.last() {
            Some(&(latest, _)) if epoch < latest => {
                panic!("append in epoch {epoch} to a log whose latest epoch is {latest}")
            }
            Some(&(latest, _)) if epoch == latest => {}
            _ => self.epochs.push((epoch, self.log_end_offset())),
        }
        self.records.extend(std::iter::repeat_n(epoch, count));
        self.log_end_offset()
    }

    /// Appends records copied from another log (what a follower does with fetched records).
    pub fn append_records(&mut self, records: &[LeaderEpoch]) -> i64 {
        for &epoch in records {
            self.append(epoch, 1);
        }
        self.log_end_offset()
    }

    /// Removes every record at or after `offset`; at or below the log start, the log restarts
    /// empty at `offset` (as `keel_storage::Log::truncate_to`).
    pub fn truncate_to(&mut self, offset: i64) -> i64 {
        if offset <= self.log_start_offset {
            self.reset_to(offset);
        } else if offset < self.log_end_offset() {
            self.records.truncate((offset - self.log_start_offset) as usize);
            self.epochs.retain(|&(_, start)| start < offset);
        }
        self.log_end_offset()
    }

    /// Deletes everything and restarts the log, empty, at `offset`.
    pub fn reset_to(&mut self, offset: i64) {
        self.log_start_offset = offset;
        self.records.clear();
        self.epochs.clear();
    }

    /// Moves the log start up to `offset` (at most the log end), as retention or DeleteRecords
    /// do; the epoch entry containing the new start now starts there.
    pub fn delete_records_before(&mut self, offset: i64) -> i64 {
        let offset = offset.min(self.log_end_offset());
        if offset <= self.log_start_offset {
            return self.log_start_offset;
        }
        self.records.drain(..(offset - self.log_start_offset) as usize);
        self.log_start_offset = offset;
        let containing = self.epochs.partition_point(|&(_, start)| start <= offset);
        if containing > 0 {
            self.epochs.drain(..containing - 1);
            self.epochs[0].1 = offset;
        }
        offset
    }
}

impl LocalLog for VecLog {
    fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    fn log_end_offset(&self) -> i64 {
        self.log_start_offset + self.records.len() as i64
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.last().map(|&(epoch, _)| epoch)
    }

    fn end_offset_for_epoch(&self, requested: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        if !requested.is_defined() {
            return None;
        }
        let &(latest, _) = self.epochs.last()?;
        if requested == latest {
            return Some((requested, self.log_end_offset()));
        }
        let higher = self.epochs.partition_point(|&(epoch, _)| epoch <= requested);
        let &(_, next_start) = self.epochs.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.epochs[floor].0, next_start)),
            None => Some((requested, next_start)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(epoch: i32) -> LeaderEpoch {
        LeaderEpoch(epoch)
    }

    /// The same table as keel-storage's epoch cache test, so both logs answer alike.
    #[test]
    fn end_offset_for_epoch_matches_keel_storage() {
        let mut log = VecLog::new();
        log.append(e(1), 100);
        log.append(e(3), 150);
        log.append(e(6), 150);
        assert_eq!(log.log_end_offset(), 400);
        let table = [
            (-1, None),
            (0, Some((0, 0))),
            (1, Some((1, 100))),
            (2, Some((1, 100))),
            (3, Some((3, 250))),
            (5, Some((3, 250))),
            (6, Some((6, 400))),
            (7, None),
        ];
        for (requested, expected) in table {
            let expected = expected.map(|(epoch, offset)| (e(epoch), offset));
            assert_eq!(log.end_offset_for_epoch(e(requested)), expected, "epoch {requested}");
        }
        assert_eq!(VecLog::new().end_offset_for_epoch(e(0)), None);
    }

    #[test]
    fn truncation_and_log_start_keep_the_epoch_cache_in_step() {
        let mut log = VecLog::from_epochs(&[1, 1, 3, 3, 6]);
        assert_eq!(log.truncate_to(4), 4);
        assert_eq!(log.epoch_entries(), &[(e(1), 0), (e(3), 2)]);
        assert_eq!(log.truncate_to(9), 4, "truncating beyond the end changes nothing");
        assert_eq!(log.delete_records_before(3), 3);
        assert_eq!(log.epoch_entries(), &[(e(3), 3)]);
        assert_eq!((log.epoch_at(2), log.epoch_at(3)), (None, Some(e(3))));
        assert_eq!(log.end_offset_for_epoch(e(1)), Some((e(1), 3)));
        assert_eq!(log.truncate_to(1), 1);
        assert_eq!((log.log_start_offset(), log.log_end_offset(), log.latest_epoch()), (1, 1, None));
        assert_eq!(log.slice(0, 10), vec![]);
    }

    #[test]
    #[should_panic(expected = "latest epoch is 3")]
    fn appending_an_older_epoch_is_a_caller_bug() {
        VecLog::from_epochs(&[3]).append(e(2), 1);
    }
}
