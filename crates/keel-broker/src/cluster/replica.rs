//! One local replica's role in a cluster: keel-replication's [`Replica`] engine (the rules
//! keel-sim runs too) and the acks=all requests waiting on it.
//!
//! The role sits behind a mutex in the partition ([`ReplicaSlot`]). Role changes and every
//! append to a replicated log happen under it, so an append is always made in the role (and
//! leader epoch) that was checked just before: a produce cannot land in a log that has just
//! become a follower, nor a fetched batch in one that has just become the leader.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use keel_replication::{Config, Leader, LocalLog, Replica, ReplicaLog, WaiterId};
use keel_storage::Log;
use keel_types::{ErrorCode, Instant, LeaderEpoch, TopicId};
use tokio::sync::oneshot;

/// The local log as the replication engine sees and changes it.
#[derive(Debug)]
pub struct LogView<'a>(pub &'a Log);

impl LocalLog for LogView<'_> {
    fn log_start_offset(&self) -> i64 {
        self.0.log_start_offset()
    }

    fn log_end_offset(&self) -> i64 {
        self.0.log_end_offset()
    }

    fn latest_epoch(&self) -> Option<LeaderEpoch> {
        self.0.latest_epoch()
    }

    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
        let (found, end) = self.0.end_offset_for_epoch(epoch);
        (found.is_defined() && end >= 0).then_some((found, end))
    }
}

impl ReplicaLog for LogView<'_> {
    /// Whole batches as the leader sent them.
    type Records = [u8];
    type Error = String;

    fn append_replicated(&mut self, records: &[u8]) -> Result<(), String> {
        self.0.append_replicated(records, crate::clock::now_ms()).map(drop).map_err(|e| e.to_string())
    }

    fn truncate_to(&mut self, offset: i64) -> Result<(), String> {
        self.0.truncate_to(offset, crate::clock::now_ms()).map(drop).map_err(|e| e.to_string())
    }

    fn start_over_at(&mut self, offset: i64) -> Result<(), String> {
        self.0.truncate_fully_and_start_at(offset, crate::clock::now_ms()).map_err(|e| e.to_string())
    }

    fn delete_before(&mut self, offset: i64) -> Result<(), String> {
        self.0.delete_records_before(offset).map(drop).map_err(|e| e.to_string())
    }
}

/// A replica's role, behind its lock.
#[derive(Debug)]
pub struct ReplicaSlot(Mutex<Role>);

impl ReplicaSlot {
    pub fn new(role: Role) -> ReplicaSlot {
        ReplicaSlot(Mutex::new(role))
    }

    pub fn lock(&self) -> MutexGuard<'_, Role> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What an acks=all produce request waits for.
pub type Completion = oneshot::Receiver<Result<(), ErrorCode>>;

/// A cluster replica: the engine, and the produce requests waiting for its high watermark.
#[derive(Debug)]
pub struct ReplicaRole {
    pub engine: Replica,
    pub topic_id: TopicId,
    waiters: BTreeMap<WaiterId, oneshot::Sender<Result<(), ErrorCode>>>,
}

impl ReplicaRole {
    pub fn new(config: Config, topic_id: TopicId) -> ReplicaRole {
        ReplicaRole { engine: Replica::new(config), topic_id, waiters: BTreeMap::new() }
    }

    pub fn leader(&mut self) -> Option<&mut Leader> {
        self.engine.leader_mut()
    }

    /// Hands completed acks=all requests their answers. Call after every engine call.
    pub fn complete(&mut self) {
        for (id, result) in self.engine.drain_completed() {
            if let Some(waiter) = self.waiters.remove(&id) {
                let _ = waiter.send(result);
            }
        }
    }

    /// Registers an acks=all request whose batch ends at `end_offset` with the leader.
    pub fn wait_for(&mut self, now: Instant, end_offset: i64, deadline: Instant) -> Option<Completion> {
        let leader = self.engine.leader_mut()?;
        let (sender, receiver) = oneshot::channel();
        let id = leader.add_waiter(now, end_offset, deadline);
        self.waiters.insert(id, sender);
        self.complete();
        Some(receiver)
    }
}

/// A partition replica's role.
#[derive(Debug)]
pub enum Role {
    /// A cluster replica the metadata has not given a role yet.
    Unassigned,
    Replica(Box<ReplicaRole>),
}

impl Role {
    /// The replicated high watermark (0 before the metadata gives a role).
    pub fn high_watermark(&self) -> i64 {
        match self {
            Role::Unassigned => 0,
            Role::Replica(replica) => replica.engine.high_watermark(),
        }
    }

    /// What retention may delete below in this role (issue 17, F6). A replica asks its
    /// replica engine ([`Replica::retention_bound`]: the high watermark), the rule keel-sim's
    /// brokers run too. A replica the metadata has not given a role yet deletes nothing, as an
    /// engine that has no role yet answers.
    pub fn retention_bound(&self) -> i64 {
        match self {
            Role::Unassigned => 0,
            Role::Replica(replica) => replica.engine.retention_bound(),
        }
    }

    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        match self {
            Role::Replica(replica) => replica.engine.leader_epoch(),
            Role::Unassigned => None,
        }
    }

    pub fn replica(&mut self) -> Option<&mut ReplicaRole> {
        match self {
            Role::Replica(replica) => Some(replica),
            Role::Unassigned => None,
        }
    }

    /// The leader core, if this replica leads.
    pub fn leader(&mut self) -> Option<&mut Leader> {
        self.replica().and_then(|r| r.engine.leader_mut())
    }

    /// Ends the role: a leader resigns (its waiting requests fail with
    /// `NOT_LEADER_OR_FOLLOWER`).
    pub fn stop(&mut self) {
        if let Some(replica) = self.replica() {
            replica.engine.stop();
            replica.complete();
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_metadata::PartitionRegistration;
    use keel_types::{NodeId, PartitionEpoch};

    use super::*;

    /// A log the engine sees: offsets `start..end`, all written in epoch 1.
    struct Offsets(i64, i64);

    impl LocalLog for Offsets {
        fn log_start_offset(&self) -> i64 {
            self.0
        }

        fn log_end_offset(&self) -> i64 {
            self.1
        }

        fn latest_epoch(&self) -> Option<LeaderEpoch> {
            Some(LeaderEpoch(1))
        }

        fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)> {
            (epoch >= LeaderEpoch(1)).then_some((LeaderEpoch(1), self.1))
        }
    }

    /// The broker's retention bound is the replica engine's (the call keel-sim makes), or
    /// what an engine without a role answers before the metadata assigns one.
    #[test]
    fn retention_bound_is_the_engines() {
        let config = Config::new(NodeId(1));
        assert_eq!(Role::Unassigned.retention_bound(), Replica::new(config.clone()).retention_bound());
        assert_eq!(Role::Unassigned.retention_bound(), 0);

        // A leader whose follower has not fetched: the high watermark stays where the log
        // started, far below the log end, and retention may delete nothing above it.
        let mut replica = ReplicaRole::new(Config { min_isr: 2, ..config }, TopicId(7));
        let registration = PartitionRegistration {
            replicas: vec![NodeId(1), NodeId(2)],
            isr: vec![NodeId(1), NodeId(2)],
            leader: Some(NodeId(1)),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        };
        replica.engine.apply_registration(Instant::ZERO, &registration, 2, &Offsets(40, 120));
        assert!(replica.engine.leader().is_some(), "{:?}", replica.engine.role());
        let role = Role::Replica(Box::new(replica));
        let Role::Replica(replica) = &role else { unreachable!() };
        assert_eq!(role.retention_bound(), replica.engine.retention_bound());
        assert_eq!(role.retention_bound(), 40);
    }
}
