//! The ISR model: the controller's partition rules (keel-metadata's [`PartitionRegistration`],
//! the real code) driving an abstract model of one partition's replication, with brokers that
//! crash and lose what they had not flushed.
//!
//! What is modelled, per replica: its log as the leader epoch of each record (a record is
//! identified by its offset and the epoch of the leader that wrote it, since a leader writes
//! each offset once per epoch), how much of it is flushed, and whether the broker is running,
//! crashed (the controller has not noticed yet) or stopped and fenced (after a clean shutdown
//! or not). The leader's role carries its high watermark, the offset its epoch started at and
//! what it learned of each follower's log end offset by their fetches in this epoch.
//!
//! Abstractions:
//! - Metadata propagates at once: every broker sees each registration change in the step that
//!   makes it, and AlterPartition is answered in the step that sends it. So no leader acts on a
//!   stale registration, and the partition-epoch compare-and-set never refuses a request here
//!   (`partition_epoch` is set back to 0 after each step, since nothing in this model can tell
//!   two values apart).
//! - A fetch is one step: the epoch-based divergence check (Kafka's OffsetsForLeaderEpoch,
//!   repeated until the follower's last epoch agrees with the leader's), the truncation, the
//!   copy of the next record (one per fetch, so a follower can be partly caught up), and the
//!   leader learning the follower's new log end offset. The leader's epoch cache is derived
//!   from the epochs of its records.
//! - Leader epochs are only compared and incremented, so after each step they are renumbered
//!   0, 1, 2, ... in order (the registration's epoch, every log's, the ghost's). This keeps the
//!   state space finite without cutting runs off; traces show the renumbered epochs.
//! - A new leader's high watermark starts at 0 (a follower's knowledge of the high watermark is
//!   not modelled; any stale value is at least 0, and a lower high watermark only allows more
//!   ISR expansions). Consumers see a leader's high watermark only once it reached the offset
//!   its epoch started at (Kafka's KIP-207 rule for a new leader's stale high watermark).
//! - The leader may shrink the ISR at any time (a follower whose fetches stop arriving, for any
//!   reason, lags after `replica.lag.time.max.ms`). It expands the ISR with a follower whose
//!   last fetch in this epoch (and since its broker last started) reached the high watermark
//!   and the epoch's start offset; the follower may have crashed since, unknown to the leader.
//! - A clean shutdown flushes, asks the controller to move leadership away and take the broker
//!   out of the ISR (`remove_replica`) and stops, all in one step. A crash cuts the log back to
//!   what was flushed; the controller fences the broker in a later step (its session expires),
//!   and the broker restarts only after that. A restart registers (without the clean-shutdown
//!   marker after a crash: `handle_unclean_shutdown`), is unfenced and triggers an election.
//! - When no crash budget is left, flushing no longer matters: every log counts as flushed.
//! - Unclean leader election is an option (off by default), and so are `min.insync.replicas`
//!   changes (`handle_min_isr_change`), to any value at any time.
//!
//! Properties, on every state: the registration's own `check_invariants`; logs are ordered by
//! epoch; log matching (two logs holding the same record at an offset hold the same records
//! below it); a fenced broker never leads; no acknowledged record is lost (every running ISR
//! and ELR member holds every acknowledged record); no offset holds two acknowledged records;
//! the high watermark consumers see never goes back. Liveness (fair: fetches, ISR expansions
//! and fencing crashed brokers; not fair: appends, shrinks, flushes, shutdowns, crashes,
//! restarts, preferred elections): a partition with a running ISR or ELR member eventually has
//! a running leader, and acknowledged records eventually reach every running replica. A fair
//! `Wait` step that changes nothing is always possible, so a state where nothing else fair
//! can happen counts as a run that stays there.

use keel_metadata::{AlterIsr, Eligibility, Mutation, PartitionRegistration};
use keel_types::{LeaderEpoch, NodeId};

use crate::explore::{Choices, Model, Property};

#[derive(Debug, Clone)]
pub struct IsrModelOptions {
    /// Replication factor: brokers n1..nN, each with one replica.
    pub replicas: usize,
    /// The topic's `min.insync.replicas`.
    pub min_isr: usize,
    /// Longest log explored: a leader appends while its log end offset is below this.
    pub records: usize,
    /// Crashes without a clean shutdown, each losing what the broker had not flushed. The
    /// design claims durability for at most `min_isr - 1` of them; the rules in fact keep
    /// acknowledged records through any number (they give up availability instead).
    pub lossy_crashes: u8,
    /// The topic's `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// An operator may set `min.insync.replicas` to any value from 1 to `replicas` at any time
    /// (`min_isr` is where it starts).
    pub min_isr_changes: bool,
    /// A planted bug in keel-metadata's rules.
    pub mutation: Option<Mutation>,
    /// A planted bug in the model's own (abstract) replication rules.
    pub replication_mutation: Option<ReplicationMutation>,
}

/// Planted bugs in the leader's side of replication, each breaking a rule the design states,
/// so the checker shows the rule is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicationMutation {
    /// ISR expansion ignores the start offset of the leader's epoch: a new leader's high
    /// watermark may be stale, so reaching it does not prove a follower holds what is acked.
    ExpandBelowEpochStart,
    /// The leader keeps what it learned of a follower across the follower's restart (no
    /// broker-epoch check, as before Kafka's KIP-903), so it can vouch for a log that a crash
    /// has since cut back.
    KeepFollowerStateOnRestart,
    /// The controller does not revisit the partition when `min.insync.replicas` changes, so an
    /// ELR outlives the ISR meeting the new minimum.
    IgnoreMinIsrChange,
}

impl Default for IsrModelOptions {
    fn default() -> IsrModelOptions {
        IsrModelOptions {
            replicas: 3,
            min_isr: 2,
            records: 2,
            lossy_crashes: 1,
            unclean_leader_election: false,
            min_isr_changes: false,
            mutation: None,
            replication_mutation: None,
        }
    }
}

/// What the leader knows in its epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaderState {
    pub leader_epoch: LeaderEpoch,
    /// The leader's log end offset when its epoch began.
    pub epoch_start_offset: usize,
    pub high_watermark: usize,
    /// Per replica (index = node id - 1): the log end offset its last fetch in this epoch
    /// reported, `None` if it has not fetched since the epoch began or its broker restarted.
    pub follower_end_offsets: Vec<Option<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReplicaStatus {
    Follower,
    Leader(LeaderState),
    /// Down without a clean shutdown; the controller still counts the broker as active until
    /// it fences it.
    Crashed,
    /// Down and fenced.
    Stopped {
        clean: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Replica {
    /// The leader epoch of the record at each offset.
    pub log: Vec<LeaderEpoch>,
    /// Records below this offset survive a crash.
    pub flushed: usize,
    pub status: ReplicaStatus,
}

impl Replica {
    pub fn is_running(&self) -> bool {
        matches!(self.status, ReplicaStatus::Follower | ReplicaStatus::Leader(_))
    }

    fn leader_state(&self) -> Option<&LeaderState> {
        match &self.status {
            ReplicaStatus::Leader(state) => Some(state),
            _ => None,
        }
    }

    fn holds(&self, records: &[LeaderEpoch]) -> bool {
        self.log.len() >= records.len() && self.log[..records.len()] == *records
    }
}

/// The whole system in one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IsrState {
    /// The controller's record of the partition.
    pub partition: PartitionRegistration,
    /// Index i is broker n(i + 1).
    pub replicas: Vec<Replica>,
    /// Ghost: the acknowledged records (acks=all completes once a leader's high watermark
    /// passes a record, so they form a prefix of the log), as first acknowledged.
    pub acked: Vec<LeaderEpoch>,
    pub lossy_crashes: u8,
    /// The topic's `min.insync.replicas` now (it changes only with `min_isr_changes`).
    pub min_isr: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsrAction {
    /// A producer's record reaches the leader.
    Append(NodeId),
    /// A follower fetches from the leader.
    Fetch(NodeId),
    /// The leader removes a follower from the ISR.
    Shrink(NodeId),
    /// The leader adds a caught-up follower to the ISR.
    Expand(NodeId),
    Flush(NodeId),
    /// Controlled shutdown: flush, leave leadership and the ISR, stop with the marker.
    Shutdown(NodeId),
    /// Crash: everything not flushed is lost.
    Crash(NodeId),
    /// The controller fences a crashed broker whose session expired.
    Fence(NodeId),
    /// A stopped broker starts, registers and is unfenced.
    Restart(NodeId),
    /// The controller moves leadership back to the preferred replica.
    ElectPreferred,
    /// An operator sets the topic's `min.insync.replicas`.
    SetMinIsr(usize),
    /// Nothing happens. Always possible and fair, so that a state in which nothing else fair
    /// can happen is a run that stays there forever (the explorer's liveness search only
    /// follows fair steps).
    Wait,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsrFair {
    Fetch(NodeId),
    Expand(NodeId),
    Fence(NodeId),
    Wait,
}

#[derive(Debug)]
pub struct IsrModel {
    options: IsrModelOptions,
}

fn node(index: usize) -> NodeId {
    NodeId(index as i32 + 1)
}

fn index(node: NodeId) -> usize {
    (node.0 - 1) as usize
}

/// Kafka's OffsetsForLeaderEpoch over a log: the largest epoch at most `epoch` that the log
/// holds, and the offset where it ends (where a later epoch starts, or the log end offset).
fn end_offset_for(log: &[LeaderEpoch], epoch: LeaderEpoch) -> Option<(LeaderEpoch, usize)> {
    let found = log.iter().copied().filter(|e| *e <= epoch).max()?;
    let end = log.iter().position(|e| *e > found).unwrap_or(log.len());
    Some((found, end))
}

/// The offset a follower truncates to before fetching from `leader`: the fetch's divergence
/// check, repeated with the follower's new last epoch until the leader accepts it.
fn divergence_offset(follower: &[LeaderEpoch], leader: &[LeaderEpoch]) -> usize {
    let mut end = follower.len();
    while let Some(&last_epoch) = follower[..end].last() {
        let truncate_to = match end_offset_for(leader, last_epoch) {
            // The leader holds nothing of this epoch or before: nothing is shared.
            None => 0,
            Some((epoch, leader_end)) if epoch == last_epoch => leader_end.min(end),
            Some((epoch, leader_end)) => {
                let follower_end = end_offset_for(&follower[..end], epoch).map_or(0, |(_, e)| e);
                leader_end.min(follower_end)
            }
        };
        if truncate_to >= end {
            break;
        }
        end = truncate_to;
    }
    end
}

fn format_log(log: &[LeaderEpoch]) -> String {
    let records: Vec<String> = log.iter().map(|e| format!("e{}", e.0)).collect();
    format!("[{}]", records.join(" "))
}

fn format_nodes(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("n{}", n.0)).collect();
    format!("[{}]", names.join(" "))
}

impl IsrModel {
    /// A model of the partition `options` describes; fails if the options make no sense.
    pub fn new(options: IsrModelOptions) -> Result<IsrModel, String> {
        if options.replicas == 0 || options.replicas > 5 {
            return Err(format!("replicas must be between 1 and 5, not {}", options.replicas));
        }
        if options.min_isr == 0 || options.min_isr > options.replicas {
            return Err(format!(
                "min ISR must be between 1 and the number of replicas ({}), not {}",
                options.replicas, options.min_isr
            ));
        }
        if options.records == 0 || options.records > 8 {
            return Err(format!("records must be between 1 and 8, not {}", options.records));
        }
        Ok(IsrModel { options })
    }

    pub fn options(&self) -> &IsrModelOptions {
        &self.options
    }

    fn eligibility<'a>(&self, min_isr: usize, active: &'a [NodeId]) -> Eligibility<'a> {
        Eligibility {
            min_isr,
            unclean_leader_election: self.options.unclean_leader_election,
            active,
            mutation: self.options.mutation,
        }
    }

    /// Brokers the controller counts as active: running, or crashed and not yet fenced.
    fn active(state: &IsrState) -> Vec<NodeId> {
        (0..state.replicas.len())
            .filter(|&i| !matches!(state.replicas[i].status, ReplicaStatus::Stopped { .. }))
            .map(node)
            .collect()
    }

    fn leader_index(state: &IsrState) -> Option<usize> {
        state.replicas.iter().position(|r| matches!(r.status, ReplicaStatus::Leader(_)))
    }

    fn leader_state_mut(state: &mut IsrState) -> Option<&mut LeaderState> {
        state.replicas.iter_mut().find_map(|r| match &mut r.status {
            ReplicaStatus::Leader(leader) => Some(leader),
            _ => None,
        })
    }

    /// The brokers learn the registration: a running broker the registration names leader
    /// takes the role for the new epoch; any other leader steps down.
    fn propagate(state: &mut IsrState) {
        let n = state.replicas.len();
        let partition = &state.partition;
        for (i, replica) in state.replicas.iter_mut().enumerate() {
            let named = partition.leader == Some(node(i));
            match &replica.status {
                ReplicaStatus::Leader(leader) if !named || leader.leader_epoch != partition.leader_epoch => {
                    replica.status = ReplicaStatus::Follower;
                }
                _ => {}
            }
            if named && replica.status == ReplicaStatus::Follower {
                replica.status = ReplicaStatus::Leader(LeaderState {
                    leader_epoch: partition.leader_epoch,
                    epoch_start_offset: replica.log.len(),
                    high_watermark: 0,
                    follower_end_offsets: vec![None; n],
                });
            }
        }
    }

    /// HW = the least log end offset over the ISR, advancing only while |ISR| >= min ISR; the
    /// records it passes are acknowledged.
    fn advance_high_watermark(&self, state: &mut IsrState) {
        let Some(l) = Self::leader_index(state) else { return };
        if state.partition.isr.len() < state.min_isr {
            return;
        }
        let leader = &state.replicas[l];
        let ReplicaStatus::Leader(view) = &leader.status else { unreachable!("leader_index found a leader") };
        let mut least = leader.log.len();
        for &member in &state.partition.isr {
            if member == node(l) {
                continue;
            }
            match view.follower_end_offsets[index(member)] {
                Some(end) => least = least.min(end),
                None => return,
            }
        }
        if least <= view.high_watermark {
            return;
        }
        for offset in state.acked.len()..least {
            state.acked.push(leader.log[offset]);
        }
        if let Some(view) = Self::leader_state_mut(state) {
            view.high_watermark = least;
        }
    }

    /// Canonical form: renumbered epochs, partition epoch 0, ELR sets in replica order, and
    /// every log flushed once no crash can lose anything.
    fn normalize(state: &mut IsrState) {
        state.partition.partition_epoch = 0;
        state.partition.elr.sort();
        state.partition.last_known_elr.sort();
        if state.lossy_crashes == 0 {
            for replica in &mut state.replicas {
                replica.flushed = replica.log.len();
            }
        }
        let mut epochs: Vec<LeaderEpoch> = vec![state.partition.leader_epoch];
        epochs.extend(state.acked.iter().copied());
        for replica in &state.replicas {
            epochs.extend(replica.log.iter().copied());
            if let Some(leader) = replica.leader_state() {
                epochs.push(leader.leader_epoch);
            }
        }
        epochs.sort();
        epochs.dedup();
        let renumber = |e: &mut LeaderEpoch| {
            let rank = epochs.binary_search(e).expect("every epoch was collected");
            *e = LeaderEpoch(rank as i32);
        };
        renumber(&mut state.partition.leader_epoch);
        state.acked.iter_mut().for_each(renumber);
        for replica in &mut state.replicas {
            replica.log.iter_mut().for_each(renumber);
            if let ReplicaStatus::Leader(leader) = &mut replica.status {
                renumber(&mut leader.leader_epoch);
            }
        }
    }

    /// The leader's AlterPartition, answered at once. The model only sends requests the rules
    /// accept, so a refusal is a bug in the model or the rules.
    fn alter_isr(&self, state: &mut IsrState, new_isr: Vec<NodeId>) {
        let active = Self::active(state);
        let min_isr = state.min_isr;
        let partition = &mut state.partition;
        let leader = partition.leader.expect("only a leader alters the ISR");
        let request = AlterIsr {
            leader,
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            new_isr,
        };
        if let Err(error) = partition.alter_isr(&request, &self.eligibility(min_isr, &active)) {
            panic!("AlterPartition {request:?} refused with {error:?}");
        }
    }

    /// Whether a fetch by `f` would change anything: truncate, copy, or tell the leader news.
    fn fetch_changes(state: &IsrState, l: usize, f: usize) -> bool {
        let leader = &state.replicas[l];
        let follower = &state.replicas[f];
        let view = leader.leader_state().expect("a leader");
        follower.log != leader.log || view.follower_end_offsets[f] != Some(follower.log.len())
    }

    fn fetch(state: &mut IsrState, l: usize, f: usize) {
        let leader_log = state.replicas[l].log.clone();
        let follower = &mut state.replicas[f];
        let keep = divergence_offset(&follower.log, &leader_log);
        follower.log.truncate(keep);
        follower.flushed = follower.flushed.min(keep);
        if let Some(&next) = leader_log.get(follower.log.len()) {
            follower.log.push(next);
        }
        let end = follower.log.len();
        if let ReplicaStatus::Leader(view) = &mut state.replicas[l].status {
            view.follower_end_offsets[f] = Some(end);
        }
    }

    fn describe_partition(partition: &PartitionRegistration) -> String {
        let leader = partition.leader.map_or("none".to_string(), |n| format!("n{}", n.0));
        format!(
            "partition: leader {leader}, leader epoch e{}, ISR {}, ELR {}, last-known ELR {}",
            partition.leader_epoch.0,
            format_nodes(&partition.isr),
            format_nodes(&partition.elr),
            format_nodes(&partition.last_known_elr)
        )
    }

    /// One replica's line; `flushed` says whether flushing still matters (a crash is left).
    fn describe_replica(i: usize, replica: &Replica, flushed: bool) -> String {
        let role = match &replica.status {
            ReplicaStatus::Follower => "follower".to_string(),
            ReplicaStatus::Leader(view) => {
                let followers: Vec<String> = view
                    .follower_end_offsets
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(j, end)| format!("n{}={}", j + 1, end.map_or("?".to_string(), |e| e.to_string())))
                    .collect();
                format!(
                    "leader of e{} (HW {}, epoch start offset {}, follower log end offsets {})",
                    view.leader_epoch.0,
                    view.high_watermark,
                    view.epoch_start_offset,
                    followers.join(" ")
                )
            }
            ReplicaStatus::Crashed => "CRASHED, not yet fenced".to_string(),
            ReplicaStatus::Stopped { clean: true } => "stopped after a clean shutdown, fenced".to_string(),
            ReplicaStatus::Stopped { clean: false } => "down after a crash, fenced".to_string(),
        };
        let log = format_log(&replica.log);
        if flushed {
            format!("n{} {role}: log {log} flushed to {}", i + 1, replica.flushed)
        } else {
            format!("n{} {role}: log {log}", i + 1)
        }
    }
}

impl Model for IsrModel {
    type State = IsrState;
    type Action = IsrAction;
    type FairKey = IsrFair;

    fn initial(&self) -> IsrState {
        let nodes: Vec<NodeId> = (0..self.options.replicas).map(node).collect();
        let partition = PartitionRegistration::new(nodes.clone(), &self.eligibility(self.options.min_isr, &nodes));
        let replica = Replica { log: Vec::new(), flushed: 0, status: ReplicaStatus::Follower };
        let mut state = IsrState {
            partition,
            replicas: vec![replica; self.options.replicas],
            acked: Vec::new(),
            lossy_crashes: self.options.lossy_crashes,
            min_isr: self.options.min_isr,
        };
        Self::propagate(&mut state);
        Self::normalize(&mut state);
        state
    }

    fn actions(&self, state: &IsrState) -> Vec<IsrAction> {
        let mut actions = Vec::new();
        let leader = Self::leader_index(state);
        let epoch_start_rule = self.options.replication_mutation != Some(ReplicationMutation::ExpandBelowEpochStart);
        if let Some(l) = leader {
            let view = state.replicas[l].leader_state().expect("a leader");
            if state.replicas[l].log.len() < self.options.records {
                actions.push(IsrAction::Append(node(l)));
            }
            for (f, follower) in state.replicas.iter().enumerate() {
                if f == l {
                    continue;
                }
                if follower.is_running() && Self::fetch_changes(state, l, f) {
                    actions.push(IsrAction::Fetch(node(f)));
                }
                // The leader cannot tell a crashed follower from a slow one: it judges both by
                // their last fetch.
                let reachable = follower.is_running() || follower.status == ReplicaStatus::Crashed;
                if state.partition.isr.contains(&node(f)) {
                    actions.push(IsrAction::Shrink(node(f)));
                } else if reachable
                    && view.follower_end_offsets[f].is_some_and(|end| {
                        end >= view.high_watermark && (end >= view.epoch_start_offset || !epoch_start_rule)
                    })
                {
                    actions.push(IsrAction::Expand(node(f)));
                }
            }
        }
        for (i, replica) in state.replicas.iter().enumerate() {
            let id = node(i);
            match replica.status {
                ReplicaStatus::Follower | ReplicaStatus::Leader(_) => {
                    if state.lossy_crashes > 0 && replica.flushed < replica.log.len() {
                        actions.push(IsrAction::Flush(id));
                    }
                    actions.push(IsrAction::Shutdown(id));
                    if state.lossy_crashes > 0 {
                        actions.push(IsrAction::Crash(id));
                    }
                }
                ReplicaStatus::Crashed => actions.push(IsrAction::Fence(id)),
                ReplicaStatus::Stopped { .. } => actions.push(IsrAction::Restart(id)),
            }
        }
        let mut preferred = state.partition.clone();
        let active = Self::active(state);
        if preferred.elect_preferred(&self.eligibility(state.min_isr, &active)) {
            actions.push(IsrAction::ElectPreferred);
        }
        if self.options.min_isr_changes {
            for min_isr in (1..=self.options.replicas).filter(|&m| m != state.min_isr) {
                actions.push(IsrAction::SetMinIsr(min_isr));
            }
        }
        actions.push(IsrAction::Wait);
        actions
    }

    fn step(&self, state: &IsrState, action: &IsrAction, _choices: &mut Choices) -> Option<IsrState> {
        let mut s = state.clone();
        match *action {
            IsrAction::Append(l) => {
                let replica = &mut s.replicas[index(l)];
                let epoch = replica.leader_state().expect("only a leader appends").leader_epoch;
                replica.log.push(epoch);
            }
            IsrAction::Fetch(f) => {
                let l = Self::leader_index(&s).expect("followers fetch from a leader");
                Self::fetch(&mut s, l, index(f));
            }
            IsrAction::Shrink(f) => {
                let new_isr = s.partition.isr.iter().copied().filter(|&r| r != f).collect();
                self.alter_isr(&mut s, new_isr);
            }
            IsrAction::Expand(f) => {
                let mut new_isr = s.partition.isr.clone();
                new_isr.push(f);
                new_isr.sort();
                self.alter_isr(&mut s, new_isr);
            }
            IsrAction::Flush(r) => {
                let replica = &mut s.replicas[index(r)];
                replica.flushed = replica.log.len();
            }
            IsrAction::Shutdown(r) => {
                let replica = &mut s.replicas[index(r)];
                replica.flushed = replica.log.len();
                replica.status = ReplicaStatus::Stopped { clean: true };
                let active = Self::active(&s);
                s.partition.remove_replica(r, &self.eligibility(s.min_isr, &active));
            }
            IsrAction::Crash(r) => {
                let replica = &mut s.replicas[index(r)];
                replica.log.truncate(replica.flushed);
                replica.status = ReplicaStatus::Crashed;
                s.lossy_crashes -= 1;
            }
            IsrAction::Fence(r) => {
                s.replicas[index(r)].status = ReplicaStatus::Stopped { clean: false };
                let active = Self::active(&s);
                s.partition.remove_replica(r, &self.eligibility(s.min_isr, &active));
            }
            IsrAction::Restart(r) => {
                let ReplicaStatus::Stopped { clean } = s.replicas[index(r)].status else {
                    unreachable!("only a stopped broker restarts")
                };
                if !clean {
                    // The registration carries no clean-shutdown marker; the broker is still
                    // fenced while the controller handles it.
                    let active = Self::active(&s);
                    s.partition.handle_unclean_shutdown(r, &self.eligibility(s.min_isr, &active));
                }
                s.replicas[index(r)].status = ReplicaStatus::Follower;
                let active = Self::active(&s);
                s.partition.try_elect(&self.eligibility(s.min_isr, &active));
                // A new incarnation: what the leader learned of the old one's log no longer holds.
                let forget = self.options.replication_mutation != Some(ReplicationMutation::KeepFollowerStateOnRestart);
                if let Some(view) = Self::leader_state_mut(&mut s).filter(|_| forget) {
                    view.follower_end_offsets[index(r)] = None;
                }
            }
            IsrAction::ElectPreferred => {
                let active = Self::active(&s);
                s.partition.elect_preferred(&self.eligibility(s.min_isr, &active));
            }
            IsrAction::SetMinIsr(min_isr) => {
                s.min_isr = min_isr;
                if self.options.replication_mutation != Some(ReplicationMutation::IgnoreMinIsrChange) {
                    let active = Self::active(&s);
                    s.partition.handle_min_isr_change(&self.eligibility(min_isr, &active));
                }
            }
            IsrAction::Wait => return Some(s),
        }
        Self::propagate(&mut s);
        self.advance_high_watermark(&mut s);
        Self::normalize(&mut s);
        Some(s)
    }

    fn fair_key(&self, _state: &IsrState, action: &IsrAction) -> Option<IsrFair> {
        match *action {
            IsrAction::Fetch(f) => Some(IsrFair::Fetch(f)),
            IsrAction::Expand(f) => Some(IsrFair::Expand(f)),
            IsrAction::Fence(r) => Some(IsrFair::Fence(r)),
            IsrAction::Wait => Some(IsrFair::Wait),
            _ => None,
        }
    }

    fn check(&self, state: &IsrState) -> Result<(), String> {
        let active = Self::active(state);
        let partition = &state.partition;
        partition
            .check_invariants(&self.eligibility(state.min_isr, &active))
            .map_err(|e| format!("partition invariant: {e}"))?;
        for (i, replica) in state.replicas.iter().enumerate() {
            if replica.log.windows(2).any(|w| w[0] > w[1]) || replica.log.iter().any(|&e| e > partition.leader_epoch) {
                return Err(format!("log order: n{} holds {}", i + 1, format_log(&replica.log)));
            }
        }
        // Log matching: the same record at an offset means the same records below it.
        for (i, a) in state.replicas.iter().enumerate() {
            for (j, b) in state.replicas.iter().enumerate().skip(i + 1) {
                let common = a.log.len().min(b.log.len());
                if let Some(last) = (0..common).rev().find(|&o| a.log[o] == b.log[o]) {
                    if a.log[..last] != b.log[..last] {
                        return Err(format!(
                            "log matching: n{} {} and n{} {} agree at offset {last} but not below it",
                            i + 1,
                            format_log(&a.log),
                            j + 1,
                            format_log(&b.log)
                        ));
                    }
                }
            }
        }
        if let Some(leader) = partition.leader {
            if matches!(state.replicas[index(leader)].status, ReplicaStatus::Stopped { .. }) {
                return Err(format!("fenced leader: n{} leads while fenced", leader.0));
            }
        }
        for (i, replica) in state.replicas.iter().enumerate() {
            let id = node(i);
            let set = if partition.isr.contains(&id) {
                "ISR"
            } else if partition.elr.contains(&id) {
                "ELR"
            } else {
                continue;
            };
            if replica.is_running() && !replica.holds(&state.acked) {
                return Err(format!(
                    "acked record lost: n{} is in the {set} but holds {}, not every acknowledged record {}",
                    i + 1,
                    format_log(&replica.log),
                    format_log(&state.acked)
                ));
            }
        }
        if let Some(l) = Self::leader_index(state) {
            let leader = &state.replicas[l];
            let view = leader.leader_state().expect("a leader");
            let covered = view.high_watermark.min(state.acked.len());
            if leader.log[..covered] != state.acked[..covered] {
                return Err(format!(
                    "two acked records at one offset: leader n{} holds {} below its HW {}, acknowledged {}",
                    l + 1,
                    format_log(&leader.log),
                    view.high_watermark,
                    format_log(&state.acked)
                ));
            }
            if view.high_watermark >= view.epoch_start_offset && view.high_watermark < state.acked.len() {
                return Err(format!(
                    "high watermark went back: leader n{} shows consumers HW {} after {} records were acknowledged",
                    l + 1,
                    view.high_watermark,
                    state.acked.len()
                ));
            }
        }
        Ok(())
    }

    fn properties(&self) -> Vec<Property<IsrState>> {
        vec![
            Property {
                name: "a partition with a running ISR or ELR member has a running leader",
                goal: led_if_possible,
            },
            Property { name: "acknowledged records reach every running replica", goal: acked_everywhere },
        ]
    }

    fn describe_action(&self, state: &IsrState, action: &IsrAction) -> String {
        let leader = Self::leader_index(state).map_or("none".to_string(), |l| format!("n{}", l + 1));
        match *action {
            IsrAction::Append(l) => {
                format!("n{} (leader) appends a record at offset {}", l.0, state.replicas[index(l)].log.len())
            }
            IsrAction::Fetch(f) => format!("n{} fetches from leader {leader}", f.0),
            IsrAction::Shrink(f) => format!("leader {leader} shrinks the ISR: n{} is out (AlterPartition)", f.0),
            IsrAction::Expand(f) => format!("leader {leader} expands the ISR: n{} is back (AlterPartition)", f.0),
            IsrAction::Flush(r) => format!("n{} flushes its log", r.0),
            IsrAction::Shutdown(r) => format!("n{} shuts down cleanly (flush, controlled shutdown)", r.0),
            IsrAction::Crash(r) => format!("n{} CRASHES and loses what it had not flushed", r.0),
            IsrAction::Fence(r) => format!("the controller fences n{} (its session expired)", r.0),
            IsrAction::Restart(r) => {
                let how = match state.replicas[index(r)].status {
                    ReplicaStatus::Stopped { clean: true } => "with",
                    _ => "WITHOUT",
                };
                format!("n{} restarts and registers {how} a clean-shutdown marker; it is unfenced", r.0)
            }
            IsrAction::ElectPreferred => "the controller elects the preferred leader".to_string(),
            IsrAction::SetMinIsr(min_isr) => format!("an operator sets min.insync.replicas to {min_isr}"),
            IsrAction::Wait => "time passes; nothing else happens".to_string(),
        }
    }

    fn describe_state(&self, before: Option<&IsrState>, after: &IsrState) -> Vec<String> {
        let mut lines = Vec::new();
        let partition = Self::describe_partition(&after.partition);
        if before.is_none_or(|b| Self::describe_partition(&b.partition) != partition) {
            lines.push(partition);
        }
        let flushed = after.lossy_crashes > 0;
        for (i, replica) in after.replicas.iter().enumerate() {
            let now = Self::describe_replica(i, replica, flushed);
            if before.is_none_or(|b| Self::describe_replica(i, &b.replicas[i], flushed) != now) {
                lines.push(now);
            }
        }
        if before.is_none_or(|b| b.acked != after.acked) {
            lines.push(format!("acknowledged: {}", format_log(&after.acked)));
        }
        if before.is_none_or(|b| b.min_isr != after.min_isr) {
            lines.push(format!("min.insync.replicas: {}", after.min_isr));
        }
        if before.is_none() {
            lines.push(format!(
                "lossy crashes left: {}; epochs are renumbered e0, e1, ... in order after every step",
                after.lossy_crashes
            ));
        }
        lines
    }
}

/// A running broker leads, or no running broker is in the ISR or the ELR.
pub fn led_if_possible(state: &IsrState) -> bool {
    if let Some(leader) = state.partition.leader {
        if state.replicas[index(leader)].is_running() {
            return true;
        }
    }
    let eligible = state.partition.isr.iter().chain(&state.partition.elr);
    !eligible.into_iter().any(|&r| state.replicas[index(r)].is_running())
}

/// Every running replica holds every acknowledged record, or no running broker is in the ISR
/// or the ELR (so no leader can bring them).
pub fn acked_everywhere(state: &IsrState) -> bool {
    let everywhere = state.replicas.iter().filter(|r| r.is_running()).all(|r| r.holds(&state.acked));
    let eligible = state.partition.isr.iter().chain(&state.partition.elr);
    everywhere || !eligible.into_iter().any(|&r| state.replicas[index(r)].is_running())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(list: &[i32]) -> Vec<LeaderEpoch> {
        list.iter().map(|&e| LeaderEpoch(e)).collect()
    }

    #[test]
    fn divergence_keeps_the_longest_shared_prefix() {
        // (follower, leader, offset the follower keeps)
        let table: &[(&[i32], &[i32], usize)] = &[
            (&[], &[0, 0], 0),
            (&[0], &[0, 0], 1),
            (&[0, 0], &[0], 1),
            (&[0, 1, 1], &[0, 2], 1),
            (&[0, 1], &[0, 0, 2], 1),
            (&[1], &[], 0),
            (&[1, 1], &[0, 2], 0),
            (&[0, 0, 3], &[0, 0, 2, 2], 2),
            (&[0, 2, 2], &[0, 2, 2, 4], 3),
        ];
        for &(follower, leader, keep) in table {
            assert_eq!(divergence_offset(&epochs(follower), &epochs(leader)), keep, "{follower:?} vs {leader:?}");
        }
    }

    #[test]
    fn epochs_are_renumbered_in_order() {
        let model = IsrModel::new(IsrModelOptions::default()).expect("valid");
        let mut state = model.initial();
        state.partition.leader_epoch = LeaderEpoch(7);
        state.replicas[0].log = epochs(&[2, 5]);
        state.replicas[0].status = ReplicaStatus::Follower;
        state.acked = epochs(&[2]);
        IsrModel::normalize(&mut state);
        assert_eq!((state.replicas[0].log.clone(), state.partition.leader_epoch), (epochs(&[0, 1]), LeaderEpoch(2)));
        assert_eq!(state.acked, epochs(&[0]));
    }
}
