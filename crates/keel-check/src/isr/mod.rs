//! The ISR model: one partition replicated by keel-replication's real engine, under the
//! controller's real partition rules, with brokers that crash and lose what they had not
//! flushed.
//!
//! What runs is the code the broker runs:
//!
//! - Every running broker's replica is a [`keel_replication::Replica`], with the real `Leader`
//!   and `Follower` cores inside. Roles come from a real `keel_metadata::MetadataImage` (built
//!   from metadata records: registrations, fencing, controlled shutdown, the topic's configs,
//!   the partition) through `may_act_on` and `Replica::apply_image`. A fetch is one round
//!   trip: `Replica::next_fetch` (with the process's broker epoch), `Replica::serve_fetch` on
//!   the leader, and `Replica::handle_fetched` on the follower, which appends, truncates or
//!   starts over on its log. Appends go through `Leader::handle_local_append`, ISR changes
//!   through `Leader::poll_isr_change` and `handle_isr_change_result`, and time through
//!   `Leader::handle_tick`. Logs are keel-replication's `VecLog` (the epoch of each record and
//!   an epoch cache with keel-storage's rules).
//! - The controller is keel-metadata's real `Controller`, called as the broker's controller
//!   task calls it: `register_broker` (with the clean-shutdown marker's broker epoch or
//!   without), a `heartbeat` that unfences a caught-up broker, heartbeats asking for a
//!   controlled shutdown until the answer says the broker may stop, `fence_broker` when a
//!   crashed broker's session expires, `alter_partition` (KIP-903's broker-epoch check
//!   included), `alter_configs` for `min.insync.replicas`, and `elect_preferred_leaders`.
//!   Every decision commits at once: the controller's committed image is what every running
//!   broker has replayed.
//! - Planted bugs are the real ones: keel-metadata's `Mutation` (in the partition rules and
//!   in the controller around them) and keel-replication's `Mutation` (every core runs with
//!   it).
//!
//! Steps: a leader appends a record (while its log is shorter than `records`); a follower
//! fetches once (one record per fetch, so a follower can be partly caught up); the controller
//! handles an AlterPartition request in flight and answers it; a broker shuts down cleanly
//! (flush, controlled shutdown, stop; at most `clean_shutdowns` times) or crashes (at most
//! `lossy_crashes` times); the controller fences a crashed broker (its session expired); a
//! stopped broker restarts (a new process: it registers with a new broker epoch, with the
//! clean-shutdown marker or without, catches up with the metadata and is unfenced); the
//! controller moves leadership to the preferred replica; an operator changes
//! `min.insync.replicas` (with `min_isr_changes`); time passes.
//!
//! Abstractions:
//! - **Metadata reaches every running broker in the step that changes it**, and a broker
//!   catches up with the metadata log at once when it restarts: no broker acts on a stale
//!   image, and a restarted broker is unfenced in the step it registers. (keel-sim runs
//!   brokers whose images lag; here the state space would not allow it.) The AlterPartition
//!   exchange is not atomic: the request is in flight from the step the leader proposes the
//!   change until the controller handles it, while anything else may happen, so the
//!   compare-and-set may refuse it or the follower it adds may have restarted. The answer and
//!   the metadata it carries arrive in the controller's step. A request the controller would
//!   refuse and whose answer nobody would act on is dropped at once (`drop_dead_requests`).
//!   With `alter_partition_at_once` the controller handles each request in the step that
//!   proposes it.
//! - **Time moves in one kind of step**, longer than `replica.lag.time.max.ms` plus every
//!   backoff, after which every leader handles a tick: followers not caught up leave the ISR,
//!   backoffs are over. Between such steps everything happens at the same instant, so a
//!   follower lags only across a time step, and the scheduler may let followers catch up
//!   before one. The cores keep times, and epochs, in private fields; states are compared by a
//!   canonical fingerprint in which old times are alike and epochs are ranked (`canonical.rs`
//!   says why that is sound). Traces show epochs counted from where the model starts them.
//! - **A crash keeps what was flushed and any part of the rest**: the broker may have flushed
//!   any part of its tail at any time, or none, so every cut from the flushed length to the
//!   log end is a separate step (no torn writes: keel-sim's crash-simulating disk does those).
//!   Only a clean shutdown flushes. Once no crash is left, every log counts as flushed.
//! - acks=all is not driven through `Leader::add_waiter`: a record counts as acknowledged once
//!   a leader's high watermark passes it, which is when such a request completes. Producers
//!   may append whatever the ISR (acks=1 too).
//! - One partition, no retention (log start offset 0), no unclean recovery by an operator.
//!
//! Properties, on every state: the registration's `check_invariants`, the cores'
//! `check_invariants`; every running broker's role is the one the metadata gives it; logs
//! are ordered by epoch; log matching; a fenced broker never leads; no acknowledged record is
//! lost (every running ISR and ELR member holds every acknowledged record); a leader holds
//! exactly the acknowledged records below its high watermark; the high watermark consumers
//! see never goes back. Liveness, under fairness of fetches, AlterPartition handling, fencing
//! crashed brokers and time (not appends, shutdowns, crashes, restarts, preferred elections or
//! min ISR changes): a partition with a running ISR or ELR member eventually has a running
//! leader; acknowledged records eventually reach every running replica; every running replica
//! eventually is in the ISR of a running leader. Time passing is always possible, so a state
//! in which nothing else fair can happen counts as a run that stays there.

mod canonical;
mod describe;
mod log;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use keel_metadata::{
    BrokerRegistration, BrokerRegistrationRequest, Controller, ControllerConfig, Decision, Eligibility, MetadataImage,
    MetadataRecord, Mutation as MetadataMutation, PartitionRegistration, MIN_INSYNC_REPLICAS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
use keel_replication::{
    may_act_on, Config, FetchDecision, IsrProposal, Mutation as ReplicationMutation, Replica, Role,
};
use keel_types::{BrokerEpoch, Duration, Instant, LeaderEpoch, NodeId, PartitionEpoch, TopicId};

use crate::explore::{Choices, Model, Property};
use canonical::{
    canonical_fingerprint, BROKER_EPOCH_BASE, LEADER_EPOCH_BASE, PARTITION_EPOCH_BASE, PROCESS_ID_BASE, TIME_BASE,
};
pub use log::ModelLog;

/// The topic's name and id in the metadata.
const TOPIC: &str = "topic";
const TOPIC_ID: TopicId = TopicId(1);
/// The clock at the start (only differences matter).
const START: Instant = Instant(TIME_BASE);

#[derive(Debug, Clone)]
pub struct IsrModelOptions {
    /// Replication factor: brokers n1..nN, each with one replica.
    pub replicas: usize,
    /// The topic's `min.insync.replicas`.
    pub min_isr: usize,
    /// Longest log explored: a leader appends while its log end offset is below this.
    pub records: usize,
    /// Crashes without a clean shutdown, each losing any part of what the broker had not
    /// flushed. The design claims durability for at most `min_isr - 1` of them; the rules in fact keep
    /// acknowledged records through any number (they give up availability instead).
    pub lossy_crashes: u8,
    /// Controlled shutdowns (each flushes, so nothing is lost; the broker may restart after).
    pub clean_shutdowns: u8,
    /// The topic's `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// An operator may set `min.insync.replicas` to any value from 1 to `replicas` at any time
    /// (`min_isr` is where it starts).
    pub min_isr_changes: bool,
    /// The controller handles a leader's AlterPartition in the step that proposes it, so
    /// nothing happens while it is in flight (several times fewer states; the compare-and-set
    /// and KIP-903's broker-epoch check then never refuse).
    pub alter_partition_at_once: bool,
    /// A planted bug in keel-metadata's partition rules or its controller.
    pub metadata_mutation: Option<MetadataMutation>,
    /// A planted bug in keel-replication's leader; every broker's cores run with it.
    pub replication_mutation: Option<ReplicationMutation>,
}

impl Default for IsrModelOptions {
    fn default() -> IsrModelOptions {
        IsrModelOptions {
            replicas: 3,
            min_isr: 2,
            records: 2,
            lossy_crashes: 1,
            clean_shutdowns: 1,
            unclean_leader_election: false,
            min_isr_changes: false,
            alter_partition_at_once: false,
            metadata_mutation: None,
            replication_mutation: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Running,
    /// Down without a clean shutdown; the controller still counts the broker as active until
    /// it fences it.
    Crashed,
    /// Down and fenced.
    Stopped {
        clean: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Broker {
    pub status: Status,
    pub log: ModelLog,
    /// The running process's replica engine (`None` while the broker is down).
    pub replica: Option<Replica>,
}

/// An AlterPartition on its way to the controller, from the process with `broker_epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AlterPartitionRequest {
    pub from: NodeId,
    pub broker_epoch: BrokerEpoch,
    pub proposal: IsrProposal,
}

/// The whole system in one value. Two states are the same when their canonical fingerprints
/// are (see the module documentation and `canonical.rs`): `Eq` and `Hash` use it.
#[derive(Debug, Clone)]
pub struct IsrState {
    /// The clock; it moves only in [`IsrAction::TimePasses`].
    pub now: Instant,
    /// The active controller. Its decisions commit at once, so its working image is its
    /// committed image, which every running broker has replayed. Shared between states until
    /// a step changes it.
    pub controller: Arc<Controller>,
    /// Index i is broker n(i + 1).
    pub brokers: Vec<Broker>,
    /// AlterPartition requests sent and not yet handled, in the order sent.
    pub in_flight: Vec<AlterPartitionRequest>,
    /// Ghost: the acknowledged records (acks=all completes once a leader's high watermark
    /// passes a record, so they form a prefix of the log), as first acknowledged.
    pub acked: Vec<LeaderEpoch>,
    pub lossy_crashes: u8,
    pub clean_shutdowns: u8,
    fingerprint: u128,
}

impl PartialEq for IsrState {
    fn eq(&self, other: &IsrState) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for IsrState {}

impl Hash for IsrState {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.fingerprint.hash(state);
    }
}

impl IsrState {
    fn replica(&self, i: usize) -> Option<&Replica> {
        self.brokers[i].replica.as_ref()
    }

    /// The committed metadata, as every running broker has replayed it.
    pub fn image(&self) -> &MetadataImage {
        self.controller.committed()
    }

    pub fn partition(&self) -> &PartitionRegistration {
        self.image().partition(TOPIC_ID, 0).expect("the topic is never deleted")
    }

    /// The topic's `min.insync.replicas`.
    pub fn min_isr(&self) -> usize {
        self.image().topic(TOPIC_ID).expect("the topic is never deleted").min_isr()
    }

    /// Broker `i`'s current registration (every broker registers before the model starts).
    pub fn registration(&self, i: usize) -> &BrokerRegistration {
        self.image().broker(node(i)).expect("every broker is registered")
    }

    pub fn broker_epoch(&self, i: usize) -> BrokerEpoch {
        self.registration(i).broker_epoch
    }

    /// Whether the broker the registration names leader runs and leads in its epoch.
    pub fn has_running_leader(&self) -> bool {
        let partition = self.partition();
        partition.leader.is_some_and(|l| {
            self.replica(index(l))
                .and_then(Replica::leader)
                .is_some_and(|leader| leader.leader_epoch() == partition.leader_epoch && !leader.is_resigned())
        })
    }

    /// Whether a running broker is in the ISR or the ELR (so some broker may lead).
    fn eligible_replica_runs(&self) -> bool {
        let partition = self.partition();
        partition.isr.iter().chain(&partition.elr).any(|&r| self.brokers[index(r)].status == Status::Running)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsrAction {
    /// A producer's record reaches the leader.
    Append(NodeId),
    /// A follower fetches from its leader: request, answer, and what the follower does with it.
    Fetch(NodeId),
    /// The controller handles the AlterPartition request in flight at this position and
    /// answers it.
    AlterPartition(usize),
    /// Controlled shutdown: flush, leave leadership and the ISR, stop with the marker.
    Shutdown(NodeId),
    /// Crash: of what the broker had not flushed, only the records below this offset reached
    /// the disk (any offset from what was flushed to the log end: the broker may have flushed
    /// any part of its tail at any time, or none).
    Crash(NodeId, i64),
    /// The controller fences a crashed broker whose session expired.
    Fence(NodeId),
    /// A stopped broker starts, registers, catches up and is unfenced.
    Restart(NodeId),
    /// The controller moves leadership back to the preferred replica.
    ElectPreferred,
    /// An operator sets the topic's `min.insync.replicas`.
    SetMinIsr(usize),
    /// Time passes (longer than the lag time and every backoff) and leaders handle a tick.
    TimePasses,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsrFair {
    Fetch(NodeId),
    AlterPartition(usize),
    Fence(NodeId),
    TimePasses,
}

#[derive(Debug)]
pub struct IsrModel {
    options: IsrModelOptions,
    /// How far [`IsrAction::TimePasses`] moves the clock.
    time_step: Duration,
    /// Times this close to `now` are told apart; older ones are all alike.
    recent: Duration,
}

fn node(index: usize) -> NodeId {
    NodeId(index as i32 + 1)
}

fn index(node: NodeId) -> usize {
    (node.0 - 1) as usize
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
        let config = Config::new(NodeId(1));
        let recent = config.replica_lag_time_max;
        // Longer than the lag time plus the longest backoff: whatever was recorded before a
        // time step is expired or past after it.
        let backoffs = config.fetch_backoff.0.max(config.isr_change_retry_backoff.0);
        let time_step = Duration(recent.0 + backoffs + Duration::from_millis(1).0);
        Ok(IsrModel { options, time_step, recent })
    }

    pub fn options(&self) -> &IsrModelOptions {
        &self.options
    }

    /// The replication config of broker `i`'s processes.
    fn config(&self, i: usize) -> Config {
        Config { min_isr: self.options.min_isr, mutation: self.options.replication_mutation, ..Config::new(node(i)) }
    }

    fn eligibility<'a>(&self, min_isr: usize, active: &'a [NodeId]) -> Eligibility<'a> {
        Eligibility {
            min_isr,
            unclean_leader_election: self.options.unclean_leader_election,
            active,
            mutation: self.options.metadata_mutation,
        }
    }

    fn topic_configs(&self, min_isr: usize) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MIN_INSYNC_REPLICAS.to_string(), min_isr.to_string()),
            (UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), self.options.unclean_leader_election.to_string()),
        ])
    }

    /// The controller at the start: every broker registered and active, the topic's one
    /// partition led by n1 with every broker in the ISR, in epochs from the fingerprint's bases.
    fn initial_controller(&self) -> Controller {
        let n = self.options.replicas;
        let mut image = MetadataImage::default();
        for i in 0..n {
            let (node, broker_epoch) = (node(i), BrokerEpoch(BROKER_EPOCH_BASE + 1 + i as i64));
            image.apply(&MetadataRecord::RegisterBroker {
                node,
                broker_epoch,
                listeners: Vec::new(),
                rack: None,
                clean_shutdown: true,
                process_id: PROCESS_ID_BASE + i as u128,
                incarnation: 0,
            });
            image.apply(&MetadataRecord::UnfenceBroker { node, broker_epoch });
        }
        let configs = self.topic_configs(self.options.min_isr);
        image.apply(&MetadataRecord::Topic { name: TOPIC.into(), id: TOPIC_ID, configs });
        let nodes: Vec<NodeId> = (0..n).map(node).collect();
        let mut registration =
            PartitionRegistration::new(nodes.clone(), &self.eligibility(self.options.min_isr, &nodes));
        registration.leader_epoch = LeaderEpoch(LEADER_EPOCH_BASE);
        registration.partition_epoch = PartitionEpoch(PARTITION_EPOCH_BASE);
        image.apply(&MetadataRecord::Partition { topic_id: TOPIC_ID, index: 0, registration });
        let config = ControllerConfig {
            auto_leader_rebalance: false,
            // Rebalancing is off; a deadline right after the start is old after a time step.
            leader_imbalance_check_interval: Duration(1),
            mutation: self.options.metadata_mutation,
            ..ControllerConfig::default()
        };
        let mut controller = Controller::new(config, image, START);
        // Every broker has heartbeated, so a restarted broker's heartbeat time is no different
        // from one that never restarted once the time is old.
        for i in 0..n {
            let heartbeat =
                controller.heartbeat(START, node(i), BrokerEpoch(BROKER_EPOCH_BASE + 1 + i as i64), true, false);
            assert!(heartbeat.expect("registered").records.is_empty(), "every broker is active already");
        }
        controller
    }

    /// Commits a decision at once: the controller learns its records committed.
    fn commit<T>(s: &mut IsrState, decision: Decision<T>) -> T {
        for record in &decision.records {
            Arc::make_mut(&mut s.controller).handle_committed(record);
        }
        decision.reply
    }

    /// Every running broker replays the metadata: roles, ISR, min ISR, fenced replicas and
    /// broker epochs, as the broker's replica engine takes them from an image.
    fn publish(s: &mut IsrState) {
        let image = s.controller.committed();
        for (i, broker) in s.brokers.iter_mut().enumerate() {
            let Some(replica) = broker.replica.as_mut() else { continue };
            let broker_epoch = image.broker(node(i)).map(|b| b.broker_epoch);
            if may_act_on(image, node(i), broker_epoch) {
                replica.apply_image(s.now, image, TOPIC_ID, 0, &broker.log);
            }
        }
    }

    /// What a driver does after every input (send the ISR change a leader proposes, drain
    /// completed requests), then the model's bookkeeping: the ghost of acknowledged records,
    /// flushing once it no longer matters, and the fingerprint.
    fn settle(&self, s: &mut IsrState) {
        Self::send_and_acknowledge(s);
        Self::drop_dead_requests(s);
        while self.options.alter_partition_at_once && !s.in_flight.is_empty() {
            self.alter_partition(s, 0);
            Self::send_and_acknowledge(s);
            Self::drop_dead_requests(s);
        }
        if s.lossy_crashes == 0 {
            s.brokers.iter_mut().for_each(|b| b.log.flush());
        }
        s.fingerprint = self.fingerprint(s);
    }

    /// Sends what leaders propose to the controller, and counts the records below a leader's
    /// high watermark as acknowledged.
    fn send_and_acknowledge(s: &mut IsrState) {
        let image = s.controller.committed();
        for (i, broker) in s.brokers.iter_mut().enumerate() {
            let Some(replica) = broker.replica.as_mut() else { continue };
            // No acks=all request waits in the cores: acknowledgement is the ghost below.
            let _ = replica.drain_completed();
            let Some(leader) = replica.leader_mut() else { continue };
            if let Some(proposal) = leader.poll_isr_change(s.now) {
                let broker_epoch = image.broker(node(i)).expect("a running broker is registered").broker_epoch;
                s.in_flight.push(AlterPartitionRequest { from: node(i), broker_epoch, proposal });
            }
            let high_watermark = leader.high_watermark() as usize;
            if high_watermark > s.acked.len() {
                s.acked.extend_from_slice(&broker.log.epochs()[s.acked.len()..high_watermark]);
            }
        }
    }

    /// Drops the AlterPartition requests whose handling could change nothing: the controller
    /// refuses a request from an older leader epoch, an older partition epoch or an earlier
    /// process of its sender, and nobody acts on the answer, since the metadata that moved
    /// those epochs on has already replaced the sender's outstanding change (`Leader::
    /// handle_metadata_update`) or ended its leadership or process. Left in flight they would
    /// only multiply states.
    fn drop_dead_requests(s: &mut IsrState) {
        let partition = s.partition().clone();
        let epochs: Vec<BrokerEpoch> = (0..s.brokers.len()).map(|i| s.broker_epoch(i)).collect();
        s.in_flight.retain(|r| {
            let request = &r.proposal.request;
            request.leader_epoch == partition.leader_epoch
                && request.partition_epoch == partition.partition_epoch
                && epochs[index(r.from)] == r.broker_epoch
        });
    }

    fn fingerprint(&self, s: &IsrState) -> u128 {
        let budgets = (s.lossy_crashes, s.clean_shutdowns);
        // Of the controller, only its committed image: its working image is the same (`check`
        // says so), and the rest of it (heartbeat times, the membership layer's verdicts, the
        // rebalance deadline) only matters to `Controller::tick` and `handle_membership`,
        // which the model never calls.
        let controller = s.controller.committed();
        canonical_fingerprint(&(controller, &s.brokers, &s.in_flight, &s.acked, budgets), s.now, self.recent)
    }

    /// Whether follower `f`'s replica would send a fetch now, to a running broker.
    fn may_fetch(s: &IsrState, f: usize) -> bool {
        let Some(follower) = s.replica(f).and_then(Replica::follower) else { return false };
        !follower.is_awaiting_metadata()
            && follower.poll_timeout().is_none_or(|until| until <= s.now)
            && s.replica(index(follower.leader())).is_some()
    }

    fn append(s: &mut IsrState, l: usize) {
        let broker = &mut s.brokers[l];
        let leader = broker.replica.as_mut().and_then(Replica::leader_mut).expect("only a leader appends");
        let log_end_offset = broker.log.append(leader.leader_epoch());
        leader.handle_local_append(s.now, log_end_offset);
    }

    /// One fetch round trip from follower `f`; the answer carries at most one record.
    fn fetch(s: &mut IsrState, f: usize) {
        let now = s.now;
        let broker_epoch = s.broker_epoch(f);
        let follower = &mut s.brokers[f];
        let replica = follower.replica.as_mut().expect("a running follower fetches");
        let leader_node = replica.follower().expect("a follower fetches").leader();
        let request = replica.next_fetch(now, Some(broker_epoch), &follower.log).expect("the follower sends a fetch");
        let leader = &mut s.brokers[index(leader_node)];
        let decision =
            leader.replica.as_mut().expect("fetches go to a running broker").serve_fetch(now, &request, &leader.log);
        let records = match decision {
            FetchDecision::Read { fetch_offset, .. } => leader.log.records.slice(fetch_offset, fetch_offset + 1),
            _ => Vec::new(),
        };
        let response = decision.response(request.fetch_offset + records.len() as i64);
        let follower = &mut s.brokers[f];
        let replica = follower.replica.as_mut().expect("a running follower fetches");
        match replica.handle_fetched(now, &request, response, records.as_slice(), &mut follower.log) {
            Ok(_) => {}
            Err(never) => match never {},
        }
    }

    /// The controller handles the AlterPartition at `position` in flight
    /// (`Controller::alter_partition`, as the broker's controller task calls it) and answers
    /// the process that sent it.
    fn alter_partition(&self, s: &mut IsrState, position: usize) {
        let request = s.in_flight.remove(position);
        let change = &request.proposal.request;
        let decided = Arc::make_mut(&mut s.controller).alter_partition(
            request.from,
            request.broker_epoch,
            TOPIC_ID,
            0,
            change,
            &request.proposal.added,
        );
        let result = match decided {
            Ok(decision) => {
                let registration = Self::commit(s, decision);
                Ok((registration.partition_epoch, registration.isr))
            }
            Err(refusal) => Err(refusal.code),
        };
        let sender = index(request.from);
        let same_process = s.broker_epoch(sender) == request.broker_epoch;
        let leader = s.brokers[sender].replica.as_mut().and_then(Replica::leader_mut);
        if let Some(leader) = leader.filter(|_| same_process) {
            leader.handle_isr_change_result(s.now, change, result.clone());
        }
        if result.is_ok() {
            Self::publish(s);
        }
    }

    /// Controlled shutdown, as the broker runs it: heartbeats asking to shut down until the
    /// controller says the broker may stop (it leads nothing and has left the ISR), then a
    /// flush, the clean-shutdown marker, and the process stops. Its session then ends
    /// (`Controller::fence_broker`).
    fn shutdown(&self, s: &mut IsrState, r: usize) {
        let broker_epoch = s.broker_epoch(r);
        let ask = |s: &mut IsrState| {
            let decision = Arc::make_mut(&mut s.controller).heartbeat(s.now, node(r), broker_epoch, true, true);
            Self::commit(s, decision.expect("the running process is registered"))
        };
        ask(s);
        Self::publish(s);
        assert!(ask(s).should_shut_down, "one round of controlled shutdown releases a broker of one partition");
        let broker = &mut s.brokers[r];
        broker.log.flush();
        if let Some(mut replica) = broker.replica.take() {
            replica.stop();
        }
        broker.status = Status::Stopped { clean: true };
        s.clean_shutdowns -= 1;
        let fenced = Arc::make_mut(&mut s.controller).fence_broker(node(r)).expect("the broker is registered");
        Self::commit(s, fenced);
        Self::publish(s);
    }

    fn crash(s: &mut IsrState, r: usize, keep: i64) {
        let broker = &mut s.brokers[r];
        broker.log.crash(keep);
        broker.replica = None;
        broker.status = Status::Crashed;
        s.lossy_crashes -= 1;
    }

    /// The crashed broker's session expires.
    fn fence(&self, s: &mut IsrState, r: usize) {
        s.brokers[r].status = Status::Stopped { clean: false };
        let fenced = Arc::make_mut(&mut s.controller).fence_broker(node(r)).expect("the broker is registered");
        Self::commit(s, fenced);
        Self::publish(s);
    }

    /// A new process: `Controller::register_broker` with the clean-shutdown marker's broker
    /// epoch or without (a new broker epoch; out of the ISR, and out of the ELR too without
    /// the marker), then it catches up with the metadata and its heartbeat unfences it (and
    /// elects a leader if none).
    fn restart(&self, s: &mut IsrState, r: usize) {
        let Status::Stopped { clean } = s.brokers[r].status else { unreachable!("only a stopped broker restarts") };
        let current = s.registration(r);
        let process_id = s.image().brokers().values().map(|b| b.process_id).max().unwrap_or(PROCESS_ID_BASE) + 1;
        let request = BrokerRegistrationRequest {
            node: node(r),
            listeners: Vec::new(),
            rack: None,
            previous_broker_epoch: clean.then_some(current.broker_epoch),
            process_id,
            incarnation: 0,
        };
        let registered =
            Arc::make_mut(&mut s.controller).register_broker(s.now, request).expect("a valid registration");
        let broker_epoch = Self::commit(s, registered);
        Self::publish(s);
        let heartbeat = Arc::make_mut(&mut s.controller).heartbeat(s.now, node(r), broker_epoch, true, false);
        let reply = Self::commit(s, heartbeat.expect("the new process is registered"));
        assert!(!reply.fenced, "a caught-up broker is unfenced");
        s.brokers[r].status = Status::Running;
        s.brokers[r].replica = Some(Replica::new(self.config(r)));
        Self::publish(s);
    }

    /// An operator sets the topic's configs (`Controller::alter_configs`).
    fn set_min_isr(&self, s: &mut IsrState, min_isr: usize) {
        let decision =
            Arc::make_mut(&mut s.controller).alter_configs(TOPIC, self.topic_configs(min_isr)).expect("valid configs");
        Self::commit(s, decision);
        Self::publish(s);
    }

    fn elect_preferred(s: &mut IsrState) {
        let decision = Arc::make_mut(&mut s.controller).elect_preferred_leaders();
        Self::commit(s, decision);
        Self::publish(s);
    }

    fn time_passes(&self, s: &mut IsrState) {
        s.now = s.now + self.time_step;
        for broker in &mut s.brokers {
            if let Some(leader) = broker.replica.as_mut().and_then(Replica::leader_mut) {
                leader.handle_tick(s.now);
            }
        }
    }

    fn check_logs(s: &IsrState) -> Result<(), String> {
        let latest = s.partition().leader_epoch;
        for (i, broker) in s.brokers.iter().enumerate() {
            let log = broker.log.epochs();
            if log.windows(2).any(|w| w[0] > w[1]) || log.iter().any(|&e| e > latest) {
                return Err(format!("log order: n{} holds {}", i + 1, describe::log(log)));
            }
        }
        // Log matching: the same record at an offset means the same records below it.
        for (i, a) in s.brokers.iter().enumerate() {
            for (j, b) in s.brokers.iter().enumerate().skip(i + 1) {
                let (a, b) = (a.log.epochs(), b.log.epochs());
                let common = a.len().min(b.len());
                if let Some(last) = (0..common).rev().find(|&o| a[o] == b[o]) {
                    if a[..last] != b[..last] {
                        return Err(format!(
                            "log matching: n{} {} and n{} {} agree at offset {last} but not below it",
                            i + 1,
                            describe::log(a),
                            j + 1,
                            describe::log(b)
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every running broker's role is the one the metadata (which it has replayed) gives it,
    /// and its core's own invariants hold.
    fn check_replicas(s: &IsrState) -> Result<(), String> {
        let partition = s.partition();
        for (i, broker) in s.brokers.iter().enumerate() {
            let Some(replica) = &broker.replica else { continue };
            let epoch = partition.leader_epoch;
            let expected = match replica.role() {
                Role::Leader(leader) => {
                    leader.check_invariants()?;
                    partition.leader == Some(node(i)) && leader.leader_epoch() == epoch
                }
                Role::Follower(follower) => {
                    follower.check_invariants(&broker.log)?;
                    partition.leader == Some(follower.leader()) && follower.leader_epoch() == epoch
                }
                Role::Offline { .. } => partition.leader.is_none(),
            };
            if !expected {
                return Err(format!(
                    "role: n{} is {} while the metadata names leader {} in epoch {}",
                    i + 1,
                    replica.role_name(),
                    describe::leader(partition.leader),
                    describe::epoch(epoch)
                ));
            }
        }
        Ok(())
    }

    fn check_acked(s: &IsrState) -> Result<(), String> {
        let partition = s.partition();
        for (i, broker) in s.brokers.iter().enumerate() {
            let set = if partition.isr.contains(&node(i)) {
                "ISR"
            } else if partition.elr.contains(&node(i)) {
                "ELR"
            } else {
                continue;
            };
            if broker.status == Status::Running && !broker.log.holds(&s.acked) {
                return Err(format!(
                    "acked record lost: n{} is in the {set} but holds {}, not every acknowledged record {}",
                    i + 1,
                    describe::log(broker.log.epochs()),
                    describe::log(&s.acked)
                ));
            }
        }
        for (i, broker) in s.brokers.iter().enumerate() {
            let Some(leader) = broker.replica.as_ref().and_then(Replica::leader) else { continue };
            let high_watermark = leader.high_watermark() as usize;
            let covered = high_watermark.min(s.acked.len());
            if broker.log.epochs()[..covered] != s.acked[..covered] {
                return Err(format!(
                    "two acked records at one offset: leader n{} holds {} below its HW {high_watermark}, acknowledged {}",
                    i + 1,
                    describe::log(broker.log.epochs()),
                    describe::log(&s.acked)
                ));
            }
            let view = broker.replica.as_ref().and_then(|r| r.consumer_view(None).ok());
            if view.is_some_and(|v| v.caught_up && (v.high_watermark as usize) < s.acked.len()) {
                return Err(format!(
                    "high watermark went back: leader n{} shows consumers HW {high_watermark} after {} records were acknowledged",
                    i + 1,
                    s.acked.len()
                ));
            }
        }
        Ok(())
    }
}

impl Model for IsrModel {
    type State = IsrState;
    type Action = IsrAction;
    type FairKey = IsrFair;

    fn initial(&self) -> IsrState {
        let n = self.options.replicas;
        let broker = |i: usize| Broker {
            status: Status::Running,
            log: ModelLog::default(),
            replica: Some(Replica::new(self.config(i))),
        };
        let mut state = IsrState {
            now: START,
            controller: Arc::new(self.initial_controller()),
            brokers: (0..n).map(broker).collect(),
            in_flight: Vec::new(),
            acked: Vec::new(),
            lossy_crashes: self.options.lossy_crashes,
            clean_shutdowns: self.options.clean_shutdowns,
            fingerprint: 0,
        };
        Self::publish(&mut state);
        self.settle(&mut state);
        state
    }

    fn actions(&self, s: &IsrState) -> Vec<IsrAction> {
        let mut actions = Vec::new();
        for (i, broker) in s.brokers.iter().enumerate() {
            match broker.replica.as_ref().map(Replica::role) {
                Some(Role::Leader(_)) if broker.log.record_count() < self.options.records => {
                    actions.push(IsrAction::Append(node(i)))
                }
                Some(Role::Follower(_)) if Self::may_fetch(s, i) => actions.push(IsrAction::Fetch(node(i))),
                _ => {}
            }
        }
        actions.extend((0..s.in_flight.len()).map(IsrAction::AlterPartition));
        for (i, broker) in s.brokers.iter().enumerate() {
            let id = node(i);
            match broker.status {
                Status::Running => {
                    if s.clean_shutdowns > 0 {
                        actions.push(IsrAction::Shutdown(id));
                    }
                    if s.lossy_crashes > 0 {
                        let kept = broker.log.flushed..=broker.log.record_count() as i64;
                        actions.extend(kept.map(|keep| IsrAction::Crash(id, keep)));
                    }
                }
                Status::Crashed => actions.push(IsrAction::Fence(id)),
                Status::Stopped { .. } => actions.push(IsrAction::Restart(id)),
            }
        }
        if s.controller.preferred_election_needed() {
            actions.push(IsrAction::ElectPreferred);
        }
        if self.options.min_isr_changes {
            let others = (1..=self.options.replicas).filter(|&m| m != s.min_isr());
            actions.extend(others.map(IsrAction::SetMinIsr));
        }
        actions.push(IsrAction::TimePasses);
        actions
    }

    fn step(&self, state: &IsrState, action: &IsrAction, _choices: &mut Choices) -> Option<IsrState> {
        let mut s = state.clone();
        match *action {
            IsrAction::Append(l) => Self::append(&mut s, index(l)),
            IsrAction::Fetch(f) => Self::fetch(&mut s, index(f)),
            IsrAction::AlterPartition(position) => self.alter_partition(&mut s, position),
            IsrAction::Shutdown(r) => self.shutdown(&mut s, index(r)),
            IsrAction::Crash(r, keep) => Self::crash(&mut s, index(r), keep),
            IsrAction::Fence(r) => self.fence(&mut s, index(r)),
            IsrAction::Restart(r) => self.restart(&mut s, index(r)),
            IsrAction::ElectPreferred => Self::elect_preferred(&mut s),
            IsrAction::SetMinIsr(min_isr) => self.set_min_isr(&mut s, min_isr),
            IsrAction::TimePasses => self.time_passes(&mut s),
        }
        self.settle(&mut s);
        Some(s)
    }

    fn fair_key(&self, _state: &IsrState, action: &IsrAction) -> Option<IsrFair> {
        match *action {
            IsrAction::Fetch(f) => Some(IsrFair::Fetch(f)),
            IsrAction::AlterPartition(position) => Some(IsrFair::AlterPartition(position)),
            IsrAction::Fence(r) => Some(IsrFair::Fence(r)),
            IsrAction::TimePasses => Some(IsrFair::TimePasses),
            _ => None,
        }
    }

    fn check(&self, s: &IsrState) -> Result<(), String> {
        s.controller.check_invariants().map_err(|e| format!("controller invariant: {e}"))?;
        if s.controller.image() != s.controller.committed() {
            return Err("the controller's working image is not its committed image".to_string());
        }
        let active = s.image().active_brokers();
        let partition = s.partition();
        partition
            .check_invariants(&self.eligibility(s.min_isr(), &active))
            .map_err(|e| format!("partition invariant: {e}"))?;
        if let Some(leader) = partition.leader {
            if s.registration(index(leader)).fenced {
                return Err(format!("fenced leader: n{} leads while fenced", leader.0));
            }
        }
        Self::check_logs(s)?;
        Self::check_replicas(s)?;
        Self::check_acked(s)
    }

    fn properties(&self) -> Vec<Property<IsrState>> {
        vec![
            Property {
                name: "a partition with a running ISR or ELR member has a running leader",
                goal: led_if_possible,
            },
            Property { name: "acknowledged records reach every running replica", goal: acked_everywhere },
            Property { name: "every running replica is in the ISR of a running leader", goal: isr_complete },
        ]
    }

    fn describe_action(&self, state: &IsrState, action: &IsrAction) -> String {
        describe::action(self, state, action)
    }

    fn describe_state(&self, before: Option<&IsrState>, after: &IsrState) -> Vec<String> {
        describe::changes(before, after)
    }
}

/// A running broker leads, or no running broker is in the ISR or the ELR.
pub fn led_if_possible(state: &IsrState) -> bool {
    state.has_running_leader() || !state.eligible_replica_runs()
}

/// Every running replica holds every acknowledged record, or no running broker is in the ISR
/// or the ELR (so no leader can bring them).
pub fn acked_everywhere(state: &IsrState) -> bool {
    let everywhere = state.brokers.iter().filter(|b| b.status == Status::Running).all(|b| b.log.holds(&state.acked));
    everywhere || !state.eligible_replica_runs()
}

/// Every running broker is in the ISR, or no running broker leads (a leader adds every
/// follower that catches up).
pub fn isr_complete(state: &IsrState) -> bool {
    let isr = &state.partition().isr;
    let complete =
        (0..state.brokers.len()).all(|i| state.brokers[i].status != Status::Running || isr.contains(&node(i)));
    complete || !state.has_running_leader()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(model: &IsrModel, state: &IsrState, action: IsrAction) -> IsrState {
        model.step(state, &action, &mut Choices::default()).expect("within bounds")
    }

    #[test]
    fn time_passing_again_over_a_quiet_partition_is_the_same_state() {
        let model = IsrModel::new(IsrModelOptions::default()).expect("valid");
        let mut state = model.initial();
        for follower in [2, 3] {
            state = step(&model, &state, IsrAction::Fetch(NodeId(follower)));
        }
        let once = step(&model, &state, IsrAction::TimePasses);
        let twice = step(&model, &once, IsrAction::TimePasses);
        assert_ne!(state, once, "the fetches' times became old");
        assert_eq!(once, twice, "old times are alike");
        assert!(twice.now > once.now);
    }

    #[test]
    fn a_shutdown_and_restart_comes_back_to_the_same_state_in_new_epochs() {
        let model = IsrModel::new(IsrModelOptions { clean_shutdowns: 2, ..IsrModelOptions::default() }).expect("valid");
        let cycle = |state: &IsrState| {
            let stopped = step(&model, state, IsrAction::Shutdown(NodeId(3)));
            step(&model, &stopped, IsrAction::Restart(NodeId(3)))
        };
        let once = cycle(&model.initial());
        let mut twice = cycle(&once);
        assert_ne!(once.broker_epoch(2), twice.broker_epoch(2));
        // The same but for the budget and the epochs' values.
        twice.clean_shutdowns += 1;
        twice.fingerprint = model.fingerprint(&twice);
        assert_eq!(once, twice);
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_may_keep_more() {
        let model = IsrModel::new(IsrModelOptions { clean_shutdowns: 2, ..IsrModelOptions::default() }).expect("valid");
        let mut state = model.initial();
        state = step(&model, &state, IsrAction::Append(NodeId(1)));
        let crashes: Vec<IsrAction> =
            model.actions(&state).into_iter().filter(|a| matches!(a, IsrAction::Crash(NodeId(1), _))).collect();
        assert_eq!(crashes, [IsrAction::Crash(NodeId(1), 0), IsrAction::Crash(NodeId(1), 1)]);
        state = step(&model, &state, IsrAction::Shutdown(NodeId(1)));
        state = step(&model, &state, IsrAction::Restart(NodeId(1)));
        let crashes: Vec<IsrAction> =
            model.actions(&state).into_iter().filter(|a| matches!(a, IsrAction::Crash(NodeId(1), _))).collect();
        assert_eq!(crashes, [IsrAction::Crash(NodeId(1), 1)], "the shutdown flushed the record");
    }
}
