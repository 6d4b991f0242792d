//! One local replica of a partition as a node runs it: the role the metadata log gives it,
//! and every decision the node makes for it between the cores and the disk.
//!
//! The broker (tokio, keel-storage) and keel-sim (simulated time and disks) both drive a
//! [`Replica`]; neither has its own copy of these rules:
//!
//! - **Metadata gating** ([`may_act_on`]): a node acts on a replayed image only once the image
//!   holds this process's own registration. Before that, the image may be a snapshot its own
//!   controller published at restart, older than what the quorum has committed since; acting
//!   on it would lead or follow in a leader epoch that is over.
//! - **Roles from an image** ([`Replica::apply_image`]): leader, follower or offline, never
//!   going back to an older leader epoch, with the topic's min ISR, the replicas whose brokers
//!   are fenced or shutting down (KIP-841) and the replicas' broker epochs (KIP-903).
//! - **A follower's fetch** ([`Replica::next_fetch`], carrying this process's broker epoch),
//!   **the leader's answer** ([`Replica::serve_fetch`]) and **what the follower does with it**
//!   ([`Replica::handle_fetched`]: append, truncate, start over, follow the log start), carried
//!   out on the log through [`ReplicaLog`].
//! - **What consumers may see** ([`Replica::consumer_view`]) and **what retention may delete**
//!   ([`Replica::retention_bound`]: nothing at or above the high watermark).

use std::fmt;

use keel_metadata::{MetadataImage, PartitionRegistration};
use keel_types::{BrokerEpoch, ErrorCode, Instant, LeaderEpoch, NodeId, TopicId};

use crate::config::Config;
use crate::follower::Follower;
use crate::leader::{Leader, MetadataOutcome};
use crate::message::{FetchDecision, FetchRequest, FetchResponse, FollowerAction, WaiterId};
use crate::LocalLog;

/// The local log as a replica changes it: what a follower's decisions are carried out on.
pub trait ReplicaLog: LocalLog {
    /// The records one fetch answer carries (whole batches).
    type Records: ?Sized;
    type Error: fmt::Display;

    /// Appends records fetched from the leader, as the leader wrote them (epochs included).
    fn append_replicated(&mut self, records: &Self::Records) -> Result<(), Self::Error>;

    /// Removes every record at or after `offset`.
    fn truncate_to(&mut self, offset: i64) -> Result<(), Self::Error>;

    /// Empties the log and starts it again at `offset` (the leader's log start lies beyond
    /// this log's end).
    fn start_over_at(&mut self, offset: i64) -> Result<(), Self::Error>;

    /// Removes every record before `offset` (the leader moved its log start there).
    fn delete_before(&mut self, offset: i64) -> Result<(), Self::Error>;
}

/// Whether a node may act on `image`: only once it holds this process's own registration
/// (`broker_epoch`, `None` before registering). Kafka's brokers likewise wait until they have
/// caught up with the metadata log before they take partition roles.
pub fn may_act_on(image: &MetadataImage, me: NodeId, broker_epoch: Option<BrokerEpoch>) -> bool {
    broker_epoch.is_some() && image.broker(me).map(|b| b.broker_epoch) == broker_epoch
}

/// A replica's role.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    Leader(Box<Leader>),
    Follower(Box<Follower>),
    /// No role: the partition has no leader, this node was told nothing usable yet, or the
    /// replica is going away. It keeps the last high watermark it knew and the newest leader
    /// epoch it acted in.
    Offline {
        high_watermark: i64,
        leader_epoch: Option<LeaderEpoch>,
    },
}

/// What [`Replica::apply_image`] did to the role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleChange {
    /// The role holds (an ISR or min ISR change may have been applied within it).
    Unchanged,
    Leads(LeaderEpoch),
    Follows(NodeId, LeaderEpoch),
    Offline,
    /// The registration cannot be taken up (stale against the log, or malformed): offline
    /// until newer metadata arrives. The text says why.
    Refused(String),
}

/// What a consumer may read from a leader: up to the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerView {
    pub high_watermark: i64,
    pub leader_epoch: LeaderEpoch,
    /// The high watermark has reached the start of this leader epoch: before that a new
    /// leader's high watermark may lie below the one its predecessor exposed, and Kafka
    /// answers ListOffsets with `OFFSET_NOT_AVAILABLE` (Fetch is answered with the lower one).
    pub caught_up: bool,
}

/// One local replica of a partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Replica {
    /// This node's replication settings; `min_isr` is replaced by each image's.
    config: Config,
    role: Role,
    /// Answers for acks=all requests of a leader that resigned, not yet drained.
    completed: Vec<(WaiterId, Result<(), ErrorCode>)>,
}

impl Replica {
    /// A replica with no role yet, knowing nothing of any high watermark.
    pub fn new(config: Config) -> Replica {
        Replica { config, role: Role::Offline { high_watermark: 0, leader_epoch: None }, completed: Vec::new() }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn leader(&self) -> Option<&Leader> {
        match &self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    pub fn leader_mut(&mut self) -> Option<&mut Leader> {
        match &mut self.role {
            Role::Leader(leader) => Some(leader),
            _ => None,
        }
    }

    pub fn follower(&self) -> Option<&Follower> {
        match &self.role {
            Role::Follower(follower) => Some(follower),
            _ => None,
        }
    }

    pub fn follower_mut(&mut self) -> Option<&mut Follower> {
        match &mut self.role {
            Role::Follower(follower) => Some(follower),
            _ => None,
        }
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Leader(_) => "leader",
            Role::Follower(_) => "follower",
            Role::Offline { .. } => "offline",
        }
    }

    pub fn high_watermark(&self) -> i64 {
        match &self.role {
            Role::Leader(leader) => leader.high_watermark(),
            Role::Follower(follower) => follower.high_watermark(),
            Role::Offline { high_watermark, .. } => *high_watermark,
        }
    }

    /// The leader epoch of the current role (the last one, offline).
    pub fn leader_epoch(&self) -> Option<LeaderEpoch> {
        match &self.role {
            Role::Leader(leader) => Some(leader.leader_epoch()),
            Role::Follower(follower) => Some(follower.leader_epoch()),
            Role::Offline { leader_epoch, .. } => *leader_epoch,
        }
    }

    /// Retention and DeleteRecords may remove only records below this: the high watermark.
    /// Anything above it may not be on enough replicas yet, and an acknowledged write must
    /// never depend on records retention removed (Kafka's rule too).
    pub fn retention_bound(&self) -> i64 {
        self.high_watermark()
    }

    /// Ends the role: a leader resigns (its waiting acks=all requests fail with
    /// `NOT_LEADER_OR_FOLLOWER`, through [`Replica::drain_completed`]).
    pub fn stop(&mut self) {
        self.retire();
    }

    /// acks=all requests that completed since the last call, including those of a leader
    /// that has since resigned. Call after every input.
    pub fn drain_completed(&mut self) -> Vec<(WaiterId, Result<(), ErrorCode>)> {
        let mut completed = std::mem::take(&mut self.completed);
        if let Role::Leader(leader) = &mut self.role {
            completed.extend(leader.drain_completed());
        }
        completed
    }

    /// Takes the role partition `index` of topic `topic_id` has in `image`. The caller has
    /// checked [`may_act_on`].
    pub fn apply_image(
        &mut self,
        now: Instant,
        image: &MetadataImage,
        topic_id: TopicId,
        index: i32,
        log: &impl LocalLog,
    ) -> RoleChange {
        let Some(topic) = image.topic(topic_id) else {
            return self.go_offline();
        };
        let Some(registration) = usize::try_from(index).ok().and_then(|i| topic.partitions.get(i)) else {
            return self.go_offline();
        };
        let change = self.apply_registration(now, registration, topic.min_isr(), log);
        if let Role::Leader(leader) = &mut self.role {
            // KIP-841: fenced and shutting-down brokers neither join the ISR nor hold back the
            // high watermark.
            let ineligible = registration
                .replicas
                .iter()
                .copied()
                .filter(|r| image.broker(*r).is_none_or(|b| b.fenced || b.shutting_down));
            leader.handle_ineligible_replicas(now, ineligible);
            // KIP-903: a replica whose broker registered again is a new process.
            let epochs = registration.replicas.iter().filter_map(|r| image.broker(*r).map(|b| (*r, b.broker_epoch)));
            leader.handle_replica_epochs(now, epochs);
        }
        change
    }

    /// Takes the role `registration` gives this node, with the topic's `min_isr`.
    pub fn apply_registration(
        &mut self,
        now: Instant,
        registration: &PartitionRegistration,
        min_isr: usize,
        log: &impl LocalLog,
    ) -> RoleChange {
        let me = self.config.id;
        // Leader epochs only grow: an image older than the role is stale, whatever it says.
        if self.leader_epoch().is_some_and(|e| registration.leader_epoch < e) {
            return RoleChange::Unchanged;
        }
        let keeps = match &mut self.role {
            Role::Leader(leader) if registration.leader == Some(me) => {
                leader.handle_metadata_update(now, registration, min_isr) != MetadataOutcome::Resigned
            }
            Role::Follower(follower) => {
                registration.leader == Some(follower.leader()) && registration.leader_epoch == follower.leader_epoch()
            }
            _ => false,
        };
        if keeps {
            return RoleChange::Unchanged;
        }
        let was_offline = matches!(self.role, Role::Offline { .. });
        let high_watermark = self.high_watermark();
        self.retire();
        let config = Config { min_isr: min_isr.max(1), ..self.config.clone() };
        let epoch = registration.leader_epoch;
        let (role, change) = match registration.leader {
            Some(leader) if leader == me => match Leader::new(config, registration, now, log, high_watermark) {
                Ok(core) => (Role::Leader(Box::new(core)), RoleChange::Leads(epoch)),
                Err(error) => (self.offline_role(high_watermark), RoleChange::Refused(error.0)),
            },
            Some(leader) if registration.replicas.contains(&me) => {
                match Follower::new(config, registration, log, high_watermark) {
                    Ok(core) => (Role::Follower(Box::new(core)), RoleChange::Follows(leader, epoch)),
                    Err(error) => (self.offline_role(high_watermark), RoleChange::Refused(error.0)),
                }
            }
            _ if was_offline => (self.offline_role(high_watermark), RoleChange::Unchanged),
            _ => (self.offline_role(high_watermark), RoleChange::Offline),
        };
        self.role = role;
        change
    }

    /// The next fetch this follower sends, carrying this process's broker epoch.
    pub fn next_fetch(
        &mut self,
        now: Instant,
        broker_epoch: Option<BrokerEpoch>,
        log: &impl LocalLog,
    ) -> Option<FetchRequest> {
        let follower = self.follower_mut()?;
        let mut request = follower.next_fetch(now, log)?;
        request.broker_epoch = broker_epoch;
        Some(request)
    }

    /// A follower's fetch, answered by the leader (`NOT_LEADER_OR_FOLLOWER` elsewhere).
    pub fn serve_fetch(&mut self, now: Instant, request: &FetchRequest, log: &impl LocalLog) -> FetchDecision {
        match &mut self.role {
            Role::Leader(leader) => leader.handle_fetch(now, request, log),
            Role::Follower(follower) => match request.current_leader_epoch {
                Some(epoch) if epoch > follower.leader_epoch() => FetchDecision::Error(ErrorCode::UnknownLeaderEpoch),
                _ => FetchDecision::Error(ErrorCode::NotLeaderOrFollower),
            },
            Role::Offline { .. } => FetchDecision::Error(ErrorCode::NotLeaderOrFollower),
        }
    }

    /// The leader's answer to this follower's `request`, with the `records` it carried, carried
    /// out on `log`: append, truncate, start over, or follow the leader's log start. Returns
    /// what was done; an error from the log leaves the follower backing off.
    pub fn handle_fetched<L: ReplicaLog>(
        &mut self,
        now: Instant,
        request: &FetchRequest,
        response: FetchResponse,
        records: &L::Records,
        log: &mut L,
    ) -> Result<FollowerAction, L::Error> {
        let Role::Follower(follower) = &mut self.role else { return Ok(FollowerAction::Stale) };
        let leader_log_start = match response {
            FetchResponse::Records { log_start_offset, .. } => Some(log_start_offset),
            _ => None,
        };
        let action = follower.handle_fetch_response(now, request, response, log);
        let done = match action {
            FollowerAction::Append => {
                log.append_replicated(records).and_then(|()| follow_log_start(log, leader_log_start))
            }
            FollowerAction::Truncate { offset } => log.truncate_to(offset),
            FollowerAction::ResetTo { offset } => log.start_over_at(offset),
            FollowerAction::Continue => follow_log_start(log, leader_log_start),
            FollowerAction::Backoff { .. } | FollowerAction::AwaitMetadata | FollowerAction::Stale => {
                return Ok(action);
            }
        };
        match done {
            Ok(()) => {
                follower.handle_log_updated(now, log);
                Ok(action)
            }
            Err(error) => {
                follower.handle_fetch_failed(now);
                Err(error)
            }
        }
    }

    /// Whether this replica serves consumers, and up to where. KIP-320: a client's older leader
    /// epoch is `FENCED_LEADER_EPOCH`, a newer one `UNKNOWN_LEADER_EPOCH` (this node has not
    /// learnt it yet); `None` skips the check. Only the leader serves.
    pub fn consumer_view(&self, current_leader_epoch: Option<LeaderEpoch>) -> Result<ConsumerView, ErrorCode> {
        let known = self.leader_epoch();
        if let (Some(client), Some(known)) = (current_leader_epoch, known) {
            if client < known {
                return Err(ErrorCode::FencedLeaderEpoch);
            }
            if client > known {
                return Err(ErrorCode::UnknownLeaderEpoch);
            }
        }
        match &self.role {
            Role::Leader(leader) if !leader.is_resigned() => Ok(ConsumerView {
                high_watermark: leader.high_watermark(),
                leader_epoch: leader.leader_epoch(),
                caught_up: leader.high_watermark_reached_epoch_start(),
            }),
            _ if current_leader_epoch.is_some() && known.is_none() => Err(ErrorCode::UnknownLeaderEpoch),
            _ => Err(ErrorCode::NotLeaderOrFollower),
        }
    }

    fn offline_role(&self, high_watermark: i64) -> Role {
        Role::Offline { high_watermark, leader_epoch: self.leader_epoch() }
    }

    fn go_offline(&mut self) -> RoleChange {
        if matches!(self.role, Role::Offline { .. }) {
            return RoleChange::Unchanged;
        }
        self.retire();
        RoleChange::Offline
    }

    /// Ends the current role; a leader resigns and its waiters' answers are kept for
    /// [`Replica::drain_completed`].
    fn retire(&mut self) {
        let high_watermark = self.high_watermark();
        let leader_epoch = self.leader_epoch();
        let old = std::mem::replace(&mut self.role, Role::Offline { high_watermark, leader_epoch });
        if let Role::Leader(mut leader) = old {
            leader.resign();
            self.completed.extend(leader.drain_completed());
        }
    }
}

/// Deletes what the leader deleted (DeleteRecords, retention): up to the leader's log start
/// offset, as far as this log reaches. The leader moves it only below its high watermark,
/// where every in-sync replica holds the same records.
fn follow_log_start<L: ReplicaLog>(log: &mut L, leader_log_start: Option<i64>) -> Result<(), L::Error> {
    let Some(leader_log_start) = leader_log_start else { return Ok(()) };
    let start = leader_log_start.min(log.log_end_offset());
    if start <= log.log_start_offset() {
        return Ok(());
    }
    log.delete_before(start)
}
