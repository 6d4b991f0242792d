//! One local replica's role in a cluster: the keel-replication core it runs (leader or
//! follower), the acks=all requests waiting on it, and the change of role when the metadata
//! log says so.
//!
//! The role sits behind a mutex in the partition ([`ReplicaSlot`]). Role changes and every
//! append to a replicated log happen under it, so an append is always made in the role (and
//! leader epoch) that was checked just before: a produce cannot land in a log that has just
//! become a follower, nor a fetched batch in one that has just become the leader.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use keel_metadata::PartitionRegistration;
use keel_replication::{Config, Follower, Leader, LocalLog, MetadataOutcome, WaiterId};
use keel_storage::Log;
use keel_types::{ErrorCode, Instant, LeaderEpoch, NodeId};
use tokio::sync::oneshot;

/// The local log as the replication cores see it.
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

#[derive(Debug)]
pub struct LeaderRole {
    pub core: Leader,
    pub topic_id: u128,
    waiters: BTreeMap<WaiterId, oneshot::Sender<Result<(), ErrorCode>>>,
    /// The broker epoch each follower's latest accepted fetch came with (Fetch v15's
    /// `ReplicaState.ReplicaEpoch`): an ISR change names it for every replica it adds, and the
    /// controller refuses one an earlier process of that broker vouched for (KIP-903).
    pub fetch_epochs: BTreeMap<NodeId, i64>,
}

impl LeaderRole {
    /// Hands completed acks=all requests their answers. Call after every core call.
    pub fn complete(&mut self) {
        for (id, result) in self.core.drain_completed() {
            if let Some(waiter) = self.waiters.remove(&id) {
                let _ = waiter.send(result);
            }
        }
    }

    /// Registers an acks=all request whose batch ends at `end_offset`.
    pub fn wait_for(&mut self, now: Instant, end_offset: i64, deadline: Instant) -> Completion {
        let (sender, receiver) = oneshot::channel();
        let id = self.core.add_waiter(now, end_offset, deadline);
        self.waiters.insert(id, sender);
        self.complete();
        receiver
    }
}

#[derive(Debug)]
pub struct FollowerRole {
    pub core: Follower,
}

/// A replica's role.
#[derive(Debug)]
pub enum Role {
    /// A single node: no replication; the partition serves everything.
    Single,
    Leader(Box<LeaderRole>),
    Follower(Box<FollowerRole>),
    /// A replica without a role: the partition has no leader, this broker was told nothing
    /// yet, or the topic is going away. It keeps the last high watermark it knew.
    Offline {
        high_watermark: i64,
    },
}

impl Role {
    /// The replicated high watermark; `None` on a single node.
    pub fn high_watermark(&self) -> Option<i64> {
        match self {
            Role::Single => None,
            Role::Leader(l) => Some(l.core.high_watermark()),
            Role::Follower(f) => Some(f.core.high_watermark()),
            Role::Offline { high_watermark } => Some(*high_watermark),
        }
    }

    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        match self {
            Role::Leader(l) => Some(l.core.leader_epoch()),
            Role::Follower(f) => Some(f.core.leader_epoch()),
            Role::Single | Role::Offline { .. } => None,
        }
    }

    pub fn as_leader(&mut self) -> Option<&mut LeaderRole> {
        match self {
            Role::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// Ends the role: a leader resigns (its waiting requests fail with
    /// `NOT_LEADER_OR_FOLLOWER`).
    pub fn stop(&mut self) {
        if matches!(self, Role::Single) {
            return;
        }
        let high_watermark = self.high_watermark().unwrap_or(0);
        if let Role::Leader(leader) = self {
            leader.core.resign();
            leader.complete();
        }
        *self = Role::Offline { high_watermark };
    }

    /// Applies the partition's registration from the metadata log: updates the current role
    /// when it still holds (a new ISR for the same leader epoch), or starts the new one.
    /// Returns whether the role changed.
    pub fn apply(
        &mut self,
        config: Config,
        topic_id: u128,
        registration: &PartitionRegistration,
        now: Instant,
        log: &Log,
    ) -> bool {
        let me = config.id;
        let view = LogView(log);
        match self {
            Role::Leader(leader)
                if registration.leader == Some(me) && leader.core.config().min_isr == config.min_isr =>
            {
                let outcome = leader.core.handle_metadata_update(now, registration);
                leader.complete();
                if outcome != MetadataOutcome::Resigned {
                    return false;
                }
            }
            Role::Follower(follower)
                if registration.leader == Some(follower.core.leader())
                    && registration.leader_epoch == follower.core.leader_epoch() =>
            {
                return false;
            }
            Role::Single => return false,
            _ => {}
        }
        let high_watermark = self.high_watermark().unwrap_or(0);
        let was_offline = matches!(self, Role::Offline { .. });
        self.stop();
        *self = match registration.leader {
            Some(leader) if leader == me => match Leader::new(config, registration, now, &view, high_watermark) {
                Ok(core) => Role::Leader(Box::new(LeaderRole {
                    core,
                    topic_id,
                    waiters: BTreeMap::new(),
                    fetch_epochs: BTreeMap::new(),
                })),
                Err(error) => {
                    tracing::error!(%error, "cannot lead the partition as registered");
                    Role::Offline { high_watermark }
                }
            },
            Some(_) if registration.replicas.contains(&me) => {
                match Follower::new(config, registration, &view, high_watermark) {
                    Ok(core) => Role::Follower(Box::new(FollowerRole { core })),
                    Err(error) => {
                        tracing::error!(%error, "cannot follow the partition as registered");
                        Role::Offline { high_watermark }
                    }
                }
            }
            _ => Role::Offline { high_watermark },
        };
        !(was_offline && matches!(self, Role::Offline { .. }))
    }
}
