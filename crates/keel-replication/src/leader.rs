//! The partition leader: Kafka's `Partition` leader-side rules.
//!
//! - A follower's fetch offset is its log end offset. A fetch is accepted only after the
//!   leader-epoch checks and the KIP-320 divergence check, so a recorded follower offset always
//!   lies on the leader's history.
//! - The high watermark is the minimum log end offset over the *maximal* ISR (the committed
//!   ISR plus members of an ISR change still in flight, so it is never computed over a smaller
//!   set than the controller may hold) and over followers that are caught up but not yet in the
//!   ISR (Kafka waits for them so they can join). It advances only while the committed ISR has
//!   at least `min_isr` members, and never goes down.
//! - A follower leaves the ISR when it has not caught up for `replica_lag_time_max`; it joins
//!   once it has fetched in this leader epoch up to both the high watermark and the offset
//!   where this leader epoch started. Both go through the controller as one [`AlterIsr`] at a
//!   time, a compare-and-set on the partition epoch; the committed ISR changes only when the
//!   controller answers or the metadata log says so.

use std::collections::{BTreeMap, BTreeSet};

use keel_metadata::{AlterIsr, PartitionRegistration};
use keel_types::{BrokerEpoch, Duration, ErrorCode, Instant, LeaderEpoch, NodeId, PartitionEpoch};

use crate::config::{Config, ConfigError, Mutation};
use crate::message::{FetchDecision, FetchRequest, WaiterId};
use crate::LocalLog;

/// What the leader knows about one follower (Kafka's `ReplicaState`), reset when leadership
/// starts: nothing a follower said to an earlier leader counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReplicaState {
    /// The follower's log end offset, from its last accepted fetch in this leader epoch;
    /// `None` until it fetched.
    pub log_end_offset: Option<i64>,
    pub last_fetch_time: Option<Instant>,
    /// The leader's log end offset when the follower last fetched.
    pub last_fetch_leader_log_end_offset: Option<i64>,
    /// Kafka's `lastCaughtUpTimeMs`: the last time the follower had everything the leader had,
    /// judged at each fetch (it fetched from the leader's end, or from where the leader's end
    /// was at its previous fetch, which then counts as the previous fetch's time). ISR members
    /// start at the time leadership started.
    pub last_caught_up_time: Option<Instant>,
    /// The broker epoch of the process whose fetches this state comes from (KIP-903); `None`
    /// until it fetched, or if its fetches carried none.
    pub broker_epoch: Option<BrokerEpoch>,
}

impl ReplicaState {
    fn new(caught_up_at: Option<Instant>) -> ReplicaState {
        ReplicaState {
            log_end_offset: None,
            last_fetch_time: None,
            last_fetch_leader_log_end_offset: None,
            last_caught_up_time: caught_up_at,
            broker_epoch: None,
        }
    }
}

/// An ISR change to send to the controller (Kafka's AlterPartition): the compare-and-set
/// request, and for every replica it adds the broker epoch of the process whose fetches caught
/// it up, fixed when the change was proposed (KIP-903). A retry sends the same epochs, so a
/// restarted follower is never vouched for on what its previous process fetched.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsrProposal {
    pub request: AlterIsr,
    /// `(replica, broker epoch)` for each replica not in the committed ISR; -1 where the
    /// fetches carried no broker epoch (the controller then refuses the addition).
    pub added: Vec<(NodeId, BrokerEpoch)>,
}

/// Where the one ISR change the leader may have outstanding stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum IsrChangeStatus {
    /// To be sent by [`Leader::poll_isr_change`] from `not_before` on.
    Unsent {
        not_before: Instant,
    },
    InFlight,
    /// The controller refused it in a way only newer metadata resolves (the partition or
    /// leader epoch moved on); no other change is proposed until that metadata arrives.
    AwaitingMetadata,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PendingIsrChange {
    request: AlterIsr,
    added: Vec<(NodeId, BrokerEpoch)>,
    status: IsrChangeStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Waiter {
    /// The offset after the produced batch: done once the high watermark reaches it.
    end_offset: i64,
    deadline: Instant,
}

/// What [`Leader::handle_metadata_update`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetadataOutcome {
    /// Older than (or the same as) what the leader holds: nothing changed.
    Stale,
    /// A newer partition epoch in this leader epoch (the ISR and replicas were replaced), or
    /// a new min ISR for the topic.
    Applied,
    /// A newer leader epoch, or this broker is no longer the leader: it stopped leading; the
    /// broker builds the new role from the registration.
    Resigned,
}

/// The leader of one partition in one leader epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Leader {
    config: Config,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    replicas: Vec<NodeId>,
    /// The committed ISR: what the controller last confirmed.
    isr: Vec<NodeId>,
    /// The local log end offset when leadership started: this leader epoch's start offset.
    epoch_start_offset: i64,
    log_end_offset: i64,
    high_watermark: i64,
    followers: BTreeMap<NodeId, ReplicaState>,
    /// Replicas whose brokers are fenced or shutting down (KIP-841): never proposed for the
    /// ISR, and the high watermark does not wait for them to join.
    ineligible: BTreeSet<NodeId>,
    /// The broker epoch of each follower's registration, as the metadata last said. A new
    /// epoch is a new process: what the leader knew of the old one is forgotten (KIP-903).
    broker_epochs: BTreeMap<NodeId, BrokerEpoch>,
    isr_change: Option<PendingIsrChange>,
    /// No ISR change is proposed before this (after the controller rejected an addition).
    isr_change_not_before: Instant,
    waiters: BTreeMap<WaiterId, Waiter>,
    next_waiter: u64,
    completed: Vec<(WaiterId, Result<(), ErrorCode>)>,
    /// The latest `now` any input carried; deadlines at or before it are not handed out again.
    last_now: Instant,
    resigned: bool,
}

impl Leader {
    /// Starts leading `registration` (which must name this broker as leader and ISR member)
    /// at `now`, over `log`, with the high watermark this replica had (clamped into the log).
    pub fn new(
        config: Config,
        registration: &PartitionRegistration,
        now: Instant,
        log: &impl LocalLog,
        high_watermark: i64,
    ) -> Result<Leader, ConfigError> {
        config.validate()?;
        let id = config.id;
        if registration.leader != Some(id) {
            return Err(ConfigError(format!(
                "broker {id} cannot lead a partition whose registration names leader {:?}",
                registration.leader
            )));
        }
        if !registration.isr.contains(&id) || !registration.replicas.contains(&id) {
            return Err(ConfigError(format!(
                "leader {id} must be a replica {:?} and in the ISR {:?}",
                registration.replicas, registration.isr
            )));
        }
        if let Some(stranger) = registration.isr.iter().find(|r| !registration.replicas.contains(r)) {
            return Err(ConfigError(format!("ISR member {stranger} is not a replica {:?}", registration.replicas)));
        }
        // Leader epochs only grow: a log holding a newer epoch than the registration was
        // written under a later leader, so the registration is stale metadata. Leading it
        // would answer followers from an old epoch and cut records they hold.
        if let Some(latest) = log.latest_epoch().filter(|e| *e > registration.leader_epoch) {
            return Err(ConfigError(format!(
                "broker {id} will not lead in epoch {} (stale metadata): its log holds epoch {latest}",
                registration.leader_epoch
            )));
        }
        let log_end_offset = log.log_end_offset();
        let followers = registration
            .replicas
            .iter()
            .filter(|&&r| r != id)
            .map(|&r| (r, ReplicaState::new(registration.isr.contains(&r).then_some(now))))
            .collect();
        Ok(Leader {
            leader_epoch: registration.leader_epoch,
            partition_epoch: registration.partition_epoch,
            replicas: registration.replicas.clone(),
            isr: registration.isr.clone(),
            epoch_start_offset: log_end_offset,
            log_end_offset,
            high_watermark: high_watermark.min(log_end_offset).max(log.log_start_offset().min(log_end_offset)),
            followers,
            ineligible: BTreeSet::new(),
            broker_epochs: BTreeMap::new(),
            isr_change: None,
            isr_change_not_before: now,
            waiters: BTreeMap::new(),
            next_waiter: 0,
            completed: Vec::new(),
            last_now: now,
            resigned: false,
            config,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> PartitionEpoch {
        self.partition_epoch
    }

    pub fn replicas(&self) -> &[NodeId] {
        &self.replicas
    }

    /// The committed ISR.
    pub fn isr(&self) -> &[NodeId] {
        &self.isr
    }

    /// The committed ISR plus the members of an ISR change in flight: every replica the
    /// controller may count as in sync right now.
    pub fn maximal_isr(&self) -> Vec<NodeId> {
        let mut maximal = self.isr.clone();
        if let Some(change) = &self.isr_change {
            for &node in &change.request.new_isr {
                if !maximal.contains(&node) {
                    maximal.push(node);
                }
            }
        }
        maximal
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// The local log end offset as the leader last saw it.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// Where this leader epoch started in the log.
    pub fn epoch_start_offset(&self) -> i64 {
        self.epoch_start_offset
    }

    /// Whether the high watermark has reached this leader epoch's start. Before that, a new
    /// leader's high watermark may still be below the one its predecessor exposed; Kafka
    /// answers ListOffsets with `OFFSET_NOT_AVAILABLE` meanwhile, so consumers never see the
    /// high watermark go back.
    pub fn high_watermark_reached_epoch_start(&self) -> bool {
        self.high_watermark >= self.epoch_start_offset
    }

    pub fn replica_state(&self, follower: NodeId) -> Option<&ReplicaState> {
        self.followers.get(&follower)
    }

    /// The ISR change outstanding, sent or not.
    pub fn pending_isr_change(&self) -> Option<&AlterIsr> {
        self.isr_change.as_ref().map(|c| &c.request)
    }

    /// acks=all requests still waiting for the high watermark.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    pub fn is_resigned(&self) -> bool {
        self.resigned
    }

    /// A follower's fetch. Checks, in Kafka's order: the leader epoch the follower believes in
    /// (older: `FENCED_LEADER_EPOCH`, newer: `UNKNOWN_LEADER_EPOCH`), that this broker still
    /// leads and the fetcher is a follower of the partition (`NOT_LEADER_OR_FOLLOWER`), that
    /// the follower's log has not diverged from this one (else the diverging epoch and where
    /// this log ends it), and that the fetch offset lies in the log (`OFFSET_OUT_OF_RANGE`).
    /// keel adds one rule to Kafka's: a follower whose records all lie below this log's start
    /// (where the epoch cache cannot show a divergence) is also answered `OFFSET_OUT_OF_RANGE`,
    /// so it starts over at this log's start. Only an accepted fetch updates the follower's state, which may expand the ISR and
    /// advance the high watermark; the answer carries the high watermark after that.
    pub fn handle_fetch(&mut self, now: Instant, request: &FetchRequest, log: &impl LocalLog) -> FetchDecision {
        self.observe_now(now);
        if let Some(epoch) = request.current_leader_epoch {
            if epoch < self.leader_epoch {
                return FetchDecision::Error(ErrorCode::FencedLeaderEpoch);
            }
            if epoch > self.leader_epoch {
                return FetchDecision::Error(ErrorCode::UnknownLeaderEpoch);
            }
        }
        if self.resigned || !self.followers.contains_key(&request.replica) {
            return FetchDecision::Error(ErrorCode::NotLeaderOrFollower);
        }
        self.observe_fetcher(now, request.replica, request.broker_epoch);
        self.observe_log_end_offset(log.log_end_offset());
        let log_start_offset = log.log_start_offset();
        let divergence_check = self.config.mutation != Some(Mutation::NoDivergenceCheck);
        if let Some(last_fetched_epoch) = request.last_fetched_epoch.filter(|e| e.is_defined() && divergence_check) {
            let (epoch, end_offset) = self.end_offset_for_epoch(last_fetched_epoch, log);
            if epoch < last_fetched_epoch || end_offset < request.fetch_offset {
                return FetchDecision::Diverging {
                    epoch,
                    end_offset,
                    high_watermark: self.high_watermark,
                    log_start_offset,
                };
            }
            // The follower's records all lie below this log's start, in an epoch this log does
            // not know: retention or a reset removed what the epoch cache knew there, and the
            // answer above (Kafka's cache answers the same) cannot show a divergence, so it
            // proves nothing. (If the follower's last epoch is this log's latest, this log held
            // a record of that epoch just below its start, as the follower does: they agree.)
            // The follower starts over at this log's start, losing only records this log no
            // longer has, and with them any producer state a divergent record left, which
            // could otherwise answer a retry as a duplicate of a record never committed.
            let unverifiable = log_start_offset > 0
                && end_offset <= log_start_offset
                && log.latest_epoch() != Some(last_fetched_epoch);
            if unverifiable && self.config.mutation != Some(Mutation::TrustBelowLogStart) {
                return FetchDecision::OffsetOutOfRange { log_start_offset, log_end_offset: self.log_end_offset };
            }
        }
        if request.fetch_offset > self.log_end_offset || request.fetch_offset < log_start_offset {
            return FetchDecision::OffsetOutOfRange { log_start_offset, log_end_offset: self.log_end_offset };
        }
        self.update_follower(now, request.replica, request.fetch_offset);
        self.maybe_expand_isr(now, request.replica);
        self.advance(now);
        FetchDecision::Read {
            fetch_offset: request.fetch_offset,
            high_watermark: self.high_watermark,
            log_start_offset,
        }
    }

    /// The local log grew to `log_end_offset` (the broker appended a producer's batches).
    pub fn handle_local_append(&mut self, now: Instant, log_end_offset: i64) {
        self.observe_now(now);
        if self.resigned {
            return;
        }
        self.observe_log_end_offset(log_end_offset);
        self.advance(now);
    }

    /// Time passed: acks=all deadlines, lagging followers leaving the ISR, and the high
    /// watermark (which may wait for a caught-up follower only for a while). A follower joins
    /// the ISR only on a fetch, as in Kafka: what the leader last learned of a follower that
    /// has stopped fetching proves nothing about it now (re-adding it from that, a follower
    /// that lags while the high watermark is frozen would leave and join the ISR over and over).
    pub fn handle_tick(&mut self, now: Instant) {
        self.observe_now(now);
        if self.resigned {
            return;
        }
        self.maybe_shrink_isr(now);
        self.advance(now);
    }

    /// Before appending a producer's batches: whether this leader takes them. acks=all needs
    /// |ISR| >= min ISR (`NOT_ENOUGH_REPLICAS`); acks other than -1, 0 and 1 are
    /// `INVALID_REQUIRED_ACKS`.
    pub fn check_produce(&self, required_acks: i16) -> Result<(), ErrorCode> {
        if self.resigned {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        match required_acks {
            -1 if self.isr.len() < self.config.min_isr => Err(ErrorCode::NotEnoughReplicas),
            -1..=1 => Ok(()),
            _ => Err(ErrorCode::InvalidRequiredAcks),
        }
    }

    /// After an acks=all append that ended at `end_offset` (the offset after the batch): the
    /// request completes, through [`Leader::drain_completed`], with success once the high
    /// watermark reaches `end_offset`; with `NOT_ENOUGH_REPLICAS_AFTER_APPEND` if the committed
    /// ISR falls below min ISR first; with `REQUEST_TIMED_OUT` at `deadline`; with
    /// `NOT_LEADER_OR_FOLLOWER` if leadership ends. It may complete at once.
    pub fn add_waiter(&mut self, now: Instant, end_offset: i64, deadline: Instant) -> WaiterId {
        self.observe_now(now);
        let id = WaiterId(self.next_waiter);
        self.next_waiter += 1;
        if self.resigned {
            self.completed.push((id, Err(ErrorCode::NotLeaderOrFollower)));
            return id;
        }
        self.waiters.insert(id, Waiter { end_offset, deadline });
        self.complete_waiters(now);
        id
    }

    /// acks=all requests that completed since the last call, in completion order.
    pub fn drain_completed(&mut self) -> Vec<(WaiterId, Result<(), ErrorCode>)> {
        std::mem::take(&mut self.completed)
    }

    /// The ISR change to send to the controller now, if any; each is handed out once (again
    /// after a retriable failure and its backoff).
    pub fn poll_isr_change(&mut self, now: Instant) -> Option<IsrProposal> {
        self.observe_now(now);
        let change = self.isr_change.as_mut()?;
        match change.status {
            IsrChangeStatus::Unsent { not_before } if not_before <= now => {
                change.status = IsrChangeStatus::InFlight;
                Some(IsrProposal { request: change.request.clone(), added: change.added.clone() })
            }
            _ => None,
        }
    }

    /// The controller's answer to `request`: the new partition epoch and ISR, or an error.
    /// An answer to anything but the outstanding change is ignored. An accepted change is
    /// applied only when the metadata log shows it ([`Leader::handle_metadata_update`]), with
    /// the topic's min ISR as of that point: the controller may have built the ELR with a
    /// min ISR this leader has not replayed yet, and the high watermark must not advance on a
    /// smaller one. Until then no other change is proposed and the high watermark counts the
    /// maximal ISR. `INELIGIBLE_REPLICA` and
    /// `OPERATION_NOT_ATTEMPTED` drop the change (retried later if still needed); errors that
    /// mean the metadata moved on (`INVALID_UPDATE_VERSION`, `FENCED_LEADER_EPOCH`,
    /// `NOT_LEADER_OR_FOLLOWER`, ...) keep it outstanding until [`Leader::handle_metadata_update`]
    /// brings the truth; anything else is retried after a backoff.
    pub fn handle_isr_change_result(
        &mut self,
        now: Instant,
        request: &AlterIsr,
        result: Result<(PartitionEpoch, Vec<NodeId>), ErrorCode>,
    ) {
        self.observe_now(now);
        let Some(change) = self.isr_change.as_mut() else { return };
        if change.request != *request {
            return;
        }
        match result {
            Ok((partition_epoch, _isr)) => {
                if partition_epoch <= self.partition_epoch {
                    self.isr_change = None;
                } else {
                    change.status = IsrChangeStatus::AwaitingMetadata;
                    return;
                }
            }
            Err(ErrorCode::IneligibleReplica | ErrorCode::OperationNotAttempted) => {
                self.isr_change = None;
                self.isr_change_not_before = now + self.config.isr_change_retry_backoff;
            }
            Err(
                ErrorCode::InvalidUpdateVersion
                | ErrorCode::FencedLeaderEpoch
                | ErrorCode::NotLeaderOrFollower
                | ErrorCode::UnknownTopicOrPartition
                | ErrorCode::UnknownTopicId
                | ErrorCode::NewLeaderElected
                | ErrorCode::InvalidRequest,
            ) => {
                change.status = IsrChangeStatus::AwaitingMetadata;
                return;
            }
            Err(_) => {
                change.status = IsrChangeStatus::Unsent { not_before: now + self.config.isr_change_retry_backoff };
                return;
            }
        }
        self.advance(now);
    }

    /// The partition as the broker's metadata replay now has it; metadata is the truth. An
    /// older epoch is ignored. A newer leader epoch, or a registration in which this broker no
    /// longer leads, ends leadership ([`Leader::resign`]). A newer partition epoch in this
    /// leader epoch replaces the ISR and replicas and settles any outstanding ISR change.
    pub fn handle_metadata_update(
        &mut self,
        now: Instant,
        registration: &PartitionRegistration,
        min_isr: usize,
    ) -> MetadataOutcome {
        self.observe_now(now);
        if self.resigned || registration.leader_epoch < self.leader_epoch {
            return MetadataOutcome::Stale;
        }
        let id = self.config.id;
        if registration.leader_epoch > self.leader_epoch
            || registration.leader != Some(id)
            || !registration.isr.contains(&id)
        {
            self.leader_epoch = registration.leader_epoch;
            self.resign();
            return MetadataOutcome::Resigned;
        }
        if registration.partition_epoch < self.partition_epoch {
            return MetadataOutcome::Stale;
        }
        // The topic's min ISR as of this image: at least as new as the partition's state.
        let min_isr = min_isr.max(1);
        let min_isr_changed = self.config.min_isr != min_isr;
        self.config.min_isr = min_isr;
        if registration.partition_epoch == self.partition_epoch {
            if !min_isr_changed {
                return MetadataOutcome::Stale;
            }
            self.advance(now);
            return MetadataOutcome::Applied;
        }
        self.replicas = registration.replicas.clone();
        let replicas = &self.replicas;
        self.followers.retain(|r, _| replicas.contains(r));
        for &replica in &self.replicas {
            if replica != id {
                self.followers.entry(replica).or_insert_with(|| ReplicaState::new(None));
            }
        }
        self.isr_change = None;
        self.apply_isr(now, registration.partition_epoch, registration.isr.clone());
        self.advance(now);
        MetadataOutcome::Applied
    }

    /// The replicas whose brokers the metadata shows fenced or shutting down (KIP-841). A
    /// follower that stopped fetching because its broker died may still look caught up for
    /// `replica_lag_time_max`; without this the leader would keep proposing it for the ISR
    /// and hold the high watermark back for it.
    pub fn handle_ineligible_replicas(&mut self, now: Instant, ineligible: impl IntoIterator<Item = NodeId>) {
        self.observe_now(now);
        self.ineligible = ineligible.into_iter().filter(|r| *r != self.config.id).collect();
        if self.resigned {
            return;
        }
        self.advance(now);
    }

    /// The broker epochs of the replicas' current registrations. A follower whose broker
    /// registered again (restarted) since the leader last heard is a new process that may have
    /// lost what it had fetched: the leader forgets its fetch state (KIP-903), so it neither
    /// joins the ISR nor counts for the high watermark on what its previous life reported. It
    /// must fetch again. An ISR member keeps the full lag time from now to do so.
    pub fn handle_replica_epochs(&mut self, now: Instant, epochs: impl IntoIterator<Item = (NodeId, BrokerEpoch)>) {
        self.observe_now(now);
        for (node, epoch) in epochs {
            if node == self.config.id {
                continue;
            }
            let previous = self.broker_epochs.insert(node, epoch);
            let forget = self.config.mutation != Some(Mutation::KeepFollowerStateOnRestart);
            if forget && previous.is_some_and(|p| p != epoch) {
                self.forget_process(now, node, Some(epoch));
            }
        }
        if !self.resigned {
            self.advance(now);
        }
    }

    /// A fetch from `follower` carrying `broker_epoch`: a different process than the one the
    /// leader's state for it came from is a restart, and what the old one fetched no longer
    /// counts (KIP-903).
    fn observe_fetcher(&mut self, now: Instant, follower: NodeId, broker_epoch: Option<BrokerEpoch>) {
        if self.config.mutation == Some(Mutation::KeepFollowerStateOnRestart) {
            return;
        }
        let Some(state) = self.followers.get_mut(&follower) else { return };
        match state.broker_epoch {
            None if state.log_end_offset.is_none() => state.broker_epoch = broker_epoch,
            known if known == broker_epoch => {}
            _ => self.forget_process(now, follower, broker_epoch),
        }
    }

    /// Forgets what an earlier process of `node` fetched: its state starts over (as an ISR
    /// member it keeps the full lag time from now to fetch again), and an ISR change not yet
    /// sent that vouches for another process of it is dropped.
    fn forget_process(&mut self, now: Instant, node: NodeId, broker_epoch: Option<BrokerEpoch>) {
        let in_isr = self.maximal_isr().contains(&node);
        if let Some(state) = self.followers.get_mut(&node) {
            *state = ReplicaState::new(in_isr.then_some(now));
            state.broker_epoch = broker_epoch;
        }
        let vouches_for_other = |c: &PendingIsrChange| {
            c.status != IsrChangeStatus::InFlight && c.added.iter().any(|&(n, e)| n == node && Some(e) != broker_epoch)
        };
        if self.isr_change.as_ref().is_some_and(vouches_for_other) {
            self.isr_change = None;
        }
    }

    /// Stops leading: every waiting acks=all request fails with `NOT_LEADER_OR_FOLLOWER`, the
    /// outstanding ISR change is forgotten, and fetches are refused from now on.
    pub fn resign(&mut self) {
        self.resigned = true;
        self.isr_change = None;
        let waiters = std::mem::take(&mut self.waiters);
        self.completed.extend(waiters.into_keys().map(|id| (id, Err(ErrorCode::NotLeaderOrFollower))));
    }

    /// When [`Leader::handle_tick`] (and then [`Leader::poll_isr_change`]) next has something
    /// to do: an acks=all deadline, an ISR change to (re)send, an ISR member about to lag too
    /// long, or a caught-up follower the high watermark stops waiting for.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.resigned {
            return None;
        }
        let lag = self.config.replica_lag_time_max;
        let mut deadlines: Vec<Instant> = self.waiters.values().map(|w| w.deadline).collect();
        match &self.isr_change {
            Some(PendingIsrChange { status: IsrChangeStatus::Unsent { not_before }, .. }) => {
                deadlines.push(*not_before)
            }
            Some(_) => {}
            None => {
                for (id, state) in &self.followers {
                    if self.isr.contains(id) && state.log_end_offset != Some(self.log_end_offset) {
                        if let Some(caught_up) = state.last_caught_up_time {
                            let out_of_sync_at = caught_up + lag + Duration(1);
                            deadlines.push(out_of_sync_at.max(self.isr_change_not_before));
                        }
                    }
                }
            }
        }
        let maximal = self.maximal_isr();
        for (id, state) in &self.followers {
            if !maximal.contains(id) {
                if let Some(caught_up) = state.last_caught_up_time {
                    let expires = caught_up + lag + Duration(1);
                    if expires > self.last_now {
                        deadlines.push(expires);
                    }
                }
            }
        }
        deadlines.into_iter().min()
    }

    /// Checks what must hold after every step.
    pub fn check_invariants(&self) -> Result<(), String> {
        let id = self.config.id;
        let fail = |m: String| Err(format!("leader {id} (epoch {}): {m}", self.leader_epoch));
        if !self.isr.contains(&id) {
            return fail(format!("the ISR {:?} lacks the leader", self.isr));
        }
        for (i, node) in self.isr.iter().enumerate() {
            if !self.replicas.contains(node) || self.isr[..i].contains(node) {
                return fail(format!("ISR {:?} is not a set of replicas {:?}", self.isr, self.replicas));
            }
        }
        if !(0..=self.log_end_offset).contains(&self.high_watermark) {
            return fail(format!("high watermark {} outside 0..={}", self.high_watermark, self.log_end_offset));
        }
        if self.epoch_start_offset > self.log_end_offset {
            return fail(format!("epoch start {} beyond log end {}", self.epoch_start_offset, self.log_end_offset));
        }
        let mut expected: Vec<NodeId> = self.replicas.iter().copied().filter(|&r| r != id).collect();
        expected.sort();
        expected.dedup();
        if !self.followers.keys().copied().eq(expected.iter().copied()) {
            return fail(format!("tracks followers {:?}, replicas are {:?}", self.followers.keys(), self.replicas));
        }
        for (follower, state) in &self.followers {
            if let Some(offset) = state.log_end_offset {
                if offset > self.log_end_offset {
                    return fail(format!(
                        "follower {follower} at {offset}, beyond the leader's end {}",
                        self.log_end_offset
                    ));
                }
            }
        }
        if let Some(change) = &self.isr_change {
            let r = &change.request;
            if r.leader != id || r.leader_epoch != self.leader_epoch || r.partition_epoch != self.partition_epoch {
                return fail(format!("outstanding {r:?} does not match partition epoch {}", self.partition_epoch));
            }
            if !r.new_isr.contains(&id) || r.new_isr.iter().any(|n| !self.replicas.contains(n)) {
                return fail(format!("outstanding {r:?} drops the leader or adds a non-replica"));
            }
        }
        for (waiter, w) in &self.waiters {
            if w.end_offset <= self.high_watermark {
                return fail(format!("{waiter:?} waits for {} below the high watermark", w.end_offset));
            }
        }
        if (self.resigned || self.isr.len() < self.config.min_isr) && !self.waiters.is_empty() {
            return fail(format!("{} acks=all requests wait while they cannot complete", self.waiters.len()));
        }
        if self.resigned && self.isr_change.is_some() {
            return fail("a resigned leader keeps an ISR change".into());
        }
        Ok(())
    }

    fn observe_now(&mut self, now: Instant) {
        self.last_now = self.last_now.max(now);
    }

    /// A leader's log only grows; a smaller value is stale.
    fn observe_log_end_offset(&mut self, log_end_offset: i64) {
        self.log_end_offset = self.log_end_offset.max(log_end_offset);
    }

    /// Kafka's OffsetForLeaderEpoch as the leader answers it. Kafka writes the new epoch into
    /// the epoch cache when leadership starts; keel-storage records an epoch only with its
    /// first batch, so until this leader appends, its epoch is added here: it starts at
    /// [`Leader::epoch_start_offset`]. An epoch newer than the leader's (which no follower
    /// should have) is answered as the leader's own, so the follower cuts what it has beyond,
    /// but only while the log knows no epoch newer than the leader's: otherwise this leader
    /// runs on stale metadata and the log, not its epoch, answers (never cutting records a
    /// later epoch wrote).
    fn end_offset_for_epoch(&self, requested: LeaderEpoch, log: &impl LocalLog) -> (LeaderEpoch, i64) {
        let latest = log.latest_epoch();
        let log_is_newer = latest.is_some_and(|e| e > self.leader_epoch);
        if requested == self.leader_epoch || (requested > self.leader_epoch && !log_is_newer) {
            return (self.leader_epoch, self.log_end_offset);
        }
        if log_is_newer {
            return log.end_offset_for_epoch(requested).unwrap_or((requested, log.log_start_offset()));
        }
        let log_knows_current_epoch = latest.is_some_and(|e| e >= self.leader_epoch);
        if !log_knows_current_epoch {
            // Nothing written in this epoch yet: its virtual entry starts at the epoch start.
            match latest {
                None => return (requested, self.epoch_start_offset),
                Some(latest) if latest <= requested => return (latest, self.epoch_start_offset),
                Some(_) => {}
            }
        }
        // A higher entry exists in the log, so it answers; a log that does not is treated as
        // knowing nothing before its start.
        log.end_offset_for_epoch(requested).unwrap_or((requested, log.log_start_offset()))
    }

    /// Kafka's `updateFetchStateOrThrow`.
    fn update_follower(&mut self, now: Instant, follower: NodeId, fetch_offset: i64) {
        let leader_end = self.log_end_offset;
        let Some(state) = self.followers.get_mut(&follower) else { return };
        if fetch_offset >= leader_end {
            state.last_caught_up_time = state.last_caught_up_time.max(Some(now));
        } else if let (Some(previous_end), Some(previous_time)) =
            (state.last_fetch_leader_log_end_offset, state.last_fetch_time)
        {
            if fetch_offset >= previous_end {
                state.last_caught_up_time = state.last_caught_up_time.max(Some(previous_time));
            }
        }
        state.last_fetch_leader_log_end_offset = Some(leader_end);
        state.last_fetch_time = Some(now);
        state.log_end_offset = Some(fetch_offset);
    }

    /// Kafka's `isCaughtUp`: at the leader's end, or caught up within the allowed lag.
    fn is_caught_up(&self, state: &ReplicaState, now: Instant) -> bool {
        state.log_end_offset == Some(self.log_end_offset)
            || state.last_caught_up_time.is_some_and(|t| now.saturating_since(t) <= self.config.replica_lag_time_max)
    }

    fn can_propose(&self, now: Instant) -> bool {
        !self.resigned && self.isr_change.is_none() && now >= self.isr_change_not_before
    }

    fn propose(&mut self, now: Instant, new_isr: Vec<NodeId>) {
        let added = new_isr
            .iter()
            .filter(|n| !self.isr.contains(n))
            .map(|n| (*n, self.followers.get(n).and_then(|s| s.broker_epoch).unwrap_or(BrokerEpoch::UNKNOWN)))
            .collect();
        let request = AlterIsr {
            leader: self.config.id,
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            new_isr,
        };
        let status = IsrChangeStatus::Unsent { not_before: now };
        self.isr_change = Some(PendingIsrChange { request, added, status });
    }

    fn maybe_shrink_isr(&mut self, now: Instant) {
        if !self.can_propose(now) {
            return;
        }
        let id = self.config.id;
        let lagging = |r: &NodeId| *r != id && self.followers.get(r).is_none_or(|s| !self.is_caught_up(s, now));
        if !self.isr.iter().any(lagging) {
            return;
        }
        let new_isr = self.isr.iter().copied().filter(|r| !lagging(r)).collect();
        self.propose(now, new_isr);
    }

    /// A follower joins once it fetched in this leader epoch up to the high watermark and to
    /// this epoch's start: then it holds every committed record and nothing of its own past.
    fn maybe_expand_isr(&mut self, now: Instant, follower: NodeId) {
        if !self.can_propose(now) || self.isr.contains(&follower) || self.ineligible.contains(&follower) {
            return;
        }
        let Some(offset) = self.followers.get(&follower).and_then(|s| s.log_end_offset) else { return };
        let epoch_start_rule = self.config.mutation != Some(Mutation::ExpandBelowEpochStart);
        if offset >= self.high_watermark && (offset >= self.epoch_start_offset || !epoch_start_rule) {
            let mut new_isr = self.isr.clone();
            new_isr.push(follower);
            self.propose(now, new_isr);
        }
    }

    fn apply_isr(&mut self, now: Instant, partition_epoch: PartitionEpoch, isr: Vec<NodeId>) {
        for member in &isr {
            if let Some(state) = self.followers.get_mut(member) {
                // A member the leader never saw catch up gets the full lag time from now.
                state.last_caught_up_time = state.last_caught_up_time.or(Some(now));
            }
        }
        self.partition_epoch = partition_epoch;
        self.isr = isr;
    }

    /// Recomputes the high watermark, then completes the acks=all requests it (or a shrunk
    /// ISR, or the clock) settles.
    fn advance(&mut self, now: Instant) {
        if let Some(candidate) = self.high_watermark_candidate(now) {
            self.high_watermark = self.high_watermark.max(candidate);
        }
        self.complete_waiters(now);
    }

    /// Kafka's `maybeIncrementLeaderHW` with KIP-966's strict min ISR: `None` while the
    /// committed ISR is short or a member of the maximal ISR has not fetched in this epoch.
    fn high_watermark_candidate(&self, now: Instant) -> Option<i64> {
        let strict = self.config.mutation != Some(Mutation::IgnoreMinIsr);
        if self.resigned || (strict && self.isr.len() < self.config.min_isr) {
            return None;
        }
        let maximal = self.maximal_isr();
        let mut candidate = self.log_end_offset;
        for (id, state) in &self.followers {
            if maximal.contains(id) {
                candidate = candidate.min(state.log_end_offset?);
            } else if !self.ineligible.contains(id) && self.is_caught_up(state, now) {
                if let Some(offset) = state.log_end_offset {
                    candidate = candidate.min(offset);
                }
            }
        }
        // A maximal ISR member with no follower state (not a replica) cannot vouch for anything.
        if maximal.iter().any(|m| *m != self.config.id && !self.followers.contains_key(m)) {
            return None;
        }
        Some(candidate)
    }

    fn complete_waiters(&mut self, now: Instant) {
        let short = self.isr.len() < self.config.min_isr;
        let high_watermark = self.high_watermark;
        let done: Vec<(WaiterId, Result<(), ErrorCode>)> = self
            .waiters
            .iter()
            .filter_map(|(&id, w)| {
                if w.end_offset <= high_watermark {
                    Some((id, Ok(())))
                } else if short {
                    Some((id, Err(ErrorCode::NotEnoughReplicasAfterAppend)))
                } else if now >= w.deadline {
                    Some((id, Err(ErrorCode::RequestTimedOut)))
                } else {
                    None
                }
            })
            .collect();
        for (id, _) in &done {
            self.waiters.remove(id);
        }
        self.completed.extend(done);
    }
}
