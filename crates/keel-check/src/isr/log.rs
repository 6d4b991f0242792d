//! A replica's log in the model: keel-replication's [`VecLog`] (the leader epoch of each
//! record, and an epoch cache that follows keel-storage's rules) and how much of it is flushed.

use std::convert::Infallible;

use keel_replication::testing::VecLog;
use keel_replication::{LocalLog, ReplicaLog};
use keel_types::LeaderEpoch;

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ModelLog {
    pub records: VecLog,
    /// Records below this offset survive a crash.
    pub flushed: i64,
}

impl ModelLog {
    pub fn epochs(&self) -> &[LeaderEpoch] {
        self.records.records()
    }

    pub fn record_count(&self) -> usize {
        self.records.records().len()
    }

    /// Whether the log starts with exactly `records`.
    pub fn holds(&self, records: &[LeaderEpoch]) -> bool {
        self.epochs().starts_with(records)
    }

    /// A leader's append of one record in `epoch`.
    pub fn append(&mut self, epoch: LeaderEpoch) -> i64 {
        self.records.append(epoch, 1)
    }

    pub fn flush(&mut self) {
        self.flushed = self.log_end_offset();
    }

    /// A crash after which the records below `keep` (at least what was flushed) are on disk
    /// and the rest is gone; recovery leaves what is there flushed.
    pub fn crash(&mut self, keep: i64) {
        assert!(keep >= self.flushed, "a crash keeps what was flushed");
        self.records.truncate_to(keep);
        self.flushed = self.log_end_offset();
    }
}

impl LocalLog for ModelLog {
    fn log_start_offset(&self) -> i64 {
        self.records.log_start_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.records.log_end_offset()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.records.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        self.records.end_offset_for_epoch(epoch)
    }
}

/// What a follower's [`Replica`](keel_replication::Replica) does to its log. Truncation is
/// durable at once (keel-storage syncs it), so it also lowers the flushed length.
impl ReplicaLog for ModelLog {
    type Records = [LeaderEpoch];
    type Error = Infallible;

    fn append_replicated(&mut self, records: &[LeaderEpoch]) -> Result<(), Infallible> {
        self.records.append_records(records);
        Ok(())
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), Infallible> {
        self.records.truncate_to(offset);
        self.flushed = self.flushed.min(self.log_end_offset());
        Ok(())
    }

    fn start_over_at(&mut self, offset: i64) -> Result<(), Infallible> {
        self.records.reset_to(offset);
        self.flushed = offset;
        Ok(())
    }

    fn delete_before(&mut self, offset: i64) -> Result<(), Infallible> {
        self.records.delete_records_before(offset);
        Ok(())
    }
}
