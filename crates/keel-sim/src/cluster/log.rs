//! A replica's partition log in the simulation: keel-replication's [`VecLog`] (the epoch of
//! every record and the epoch cache, following keel-storage's rules) plus the identity of each
//! record and how much of the log is flushed.

use keel_replication::testing::VecLog;
use keel_replication::{LocalLog, ReplicaLog};
use keel_types::LeaderEpoch;

/// A record as the simulator knows it: the leader epoch that wrote it and a value unique over
/// the whole run (the producer's sequence), so two copies of a record are recognised anywhere.
pub(crate) type Record = (LeaderEpoch, u64);

#[derive(Debug, Clone, Default)]
pub(crate) struct SimLog {
    epochs: VecLog,
    /// The value of each record, from offset 0 (the simulation never moves the log start).
    values: Vec<u64>,
    /// Records below this offset are on disk and survive a crash.
    flushed: i64,
    /// Bumped by every truncation, so a flush started before it cannot mark records written
    /// after it as flushed.
    generation: u64,
}

impl SimLog {
    pub(crate) fn log_end(&self) -> i64 {
        self.epochs.log_end_offset()
    }

    pub(crate) fn flushed(&self) -> i64 {
        self.flushed
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The record at `offset`, if the log holds it.
    pub(crate) fn get(&self, offset: i64) -> Option<Record> {
        let epoch = self.epochs.epoch_at(offset)?;
        let index = usize::try_from(offset - self.epochs.log_start_offset()).ok()?;
        Some((epoch, self.values[index]))
    }

    /// Records in `from..to`, clamped to the log.
    pub(crate) fn slice(&self, from: i64, to: i64) -> Vec<Record> {
        let start = self.epochs.log_start_offset();
        let from = from.max(start);
        let to = to.min(self.log_end());
        (from..to).filter_map(|o| self.get(o)).collect()
    }

    /// Where `value` is, searching from the end (a producer's retry is of its latest record).
    pub(crate) fn find(&self, value: u64) -> Option<i64> {
        let start = self.epochs.log_start_offset();
        self.values.iter().rposition(|v| *v == value).map(|i| start + i as i64)
    }

    /// Appends one record; returns the new log end.
    pub(crate) fn append(&mut self, record: Record) -> i64 {
        self.epochs.append(record.0, 1);
        self.values.push(record.1);
        self.log_end()
    }

    pub(crate) fn append_records(&mut self, records: &[Record]) -> i64 {
        for record in records {
            self.append(*record);
        }
        self.log_end()
    }

    /// Removes every record at or after `offset` (durably: truncation is assumed synced).
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        let start = self.epochs.log_start_offset();
        if offset <= start {
            self.reset_to(offset);
            return;
        }
        if offset < self.log_end() {
            self.epochs.truncate_to(offset);
            self.values.truncate((offset - start) as usize);
            self.generation += 1;
        }
        self.flushed = self.flushed.min(self.log_end());
    }

    pub(crate) fn reset_to(&mut self, offset: i64) {
        self.epochs.reset_to(offset);
        self.values.clear();
        self.flushed = offset;
        self.generation += 1;
    }

    /// A flush of everything up to `upto` completed (if the log was not cut since it began).
    pub(crate) fn flushed_to(&mut self, upto: i64, generation: u64) {
        if generation == self.generation {
            self.flushed = self.flushed.max(upto.min(self.log_end()));
        }
    }

    /// A crash: what was not flushed is lost, and of it the part below `cut` happened to reach
    /// the disk anyway. Returns how many records were lost.
    pub(crate) fn crash(&mut self, cut: i64) -> i64 {
        let cut = cut.clamp(self.flushed, self.log_end());
        let lost = self.log_end() - cut;
        if lost > 0 {
            self.truncate_to(cut);
        }
        self.flushed = self.log_end();
        lost
    }
}

impl LocalLog for SimLog {
    fn log_start_offset(&self) -> i64 {
        self.epochs.log_start_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.epochs.log_end_offset()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.epochs.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        self.epochs.end_offset_for_epoch(epoch)
    }
}

impl ReplicaLog for SimLog {
    type Records = [Record];
    type Error = std::convert::Infallible;

    fn append_replicated(&mut self, records: &[Record]) -> Result<(), Self::Error> {
        self.append_records(records);
        Ok(())
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), Self::Error> {
        SimLog::truncate_to(self, offset);
        Ok(())
    }

    fn start_over_at(&mut self, offset: i64) -> Result<(), Self::Error> {
        self.reset_to(offset);
        Ok(())
    }

    fn delete_before(&mut self, offset: i64) -> Result<(), Self::Error> {
        let start = self.epochs.log_start_offset();
        let offset = offset.clamp(start, self.log_end());
        self.epochs.delete_records_before(offset);
        self.values.drain(..(offset - start) as usize);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crash_keeps_the_flushed_prefix_and_a_truncation_voids_older_flushes() {
        let mut log = SimLog::default();
        for v in 0..5 {
            log.append((LeaderEpoch(1), v));
        }
        let generation = log.generation();
        log.flushed_to(3, generation);
        assert_eq!(log.flushed(), 3);
        assert_eq!(log.crash(0), 2, "a cut below the flushed point is raised to it");
        assert_eq!((log.log_end(), log.get(2), log.get(3)), (3, Some((LeaderEpoch(1), 2)), None));
        let generation = log.generation();
        log.append((LeaderEpoch(2), 9));
        log.truncate_to(2);
        log.append((LeaderEpoch(3), 10));
        log.flushed_to(4, generation);
        assert_eq!(log.flushed(), 2, "the flush began before the truncation");
        assert_eq!(log.find(10), Some(2));
        assert_eq!(log.slice(0, 10).len(), 3);
    }
}
