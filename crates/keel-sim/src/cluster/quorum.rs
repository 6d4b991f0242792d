//! The controller quorum of the cluster scenario: keel-metadata's [`QuorumController`] (the
//! code the broker's controller task drives) on the first brokers (combined mode), each over a
//! simulated durable Raft store, talking Raft over the simulated network.
//!
//! The simulator only carries effects: a member's persists go to its [`RaftStore`] and are
//! reported when the simulated disk completes them, its messages go on the network, its
//! answers go back to the broker (or operator) that asked, and its Raft timer is re-armed at
//! [`QuorumController::poll_timeout`]. What a request decides is `decide` below: the same
//! `Controller` methods the broker's `cluster::decide` calls.
//!
//! [`CommittedView`] is the oracle's view of the metadata log: the image of the member that
//! has applied the most, and, per applied index, a hash of the image every member must have
//! there (state machine safety across members, crashes and snapshots).

use std::collections::BTreeMap;

use keel_metadata::{
    AlterIsr, Answer, BrokerRegistrationRequest, Controller, HeartbeatReply, MetadataImage, MetadataRecord,
    PartitionRegistration, ProducerIdBlock, QuorumController, MIN_INSYNC_REPLICAS,
};
use keel_raft::LogIndex;
use keel_types::{BrokerEpoch, Duration, ErrorCode, Instant, LeaderEpoch, NodeId, Rng, TopicId};

use super::{show_registration, Event, Message, Sim, TOPIC};
use crate::raft::store::{CrashLoss, RaftStore};
use crate::trace::Fnv1a;

/// How often the active controller ticks (session expiry, preferred leaders).
pub(super) const CONTROLLER_TICK: Duration = Duration(50_000_000);
/// Most metadata entries one fetch returns.
pub(super) const METADATA_ENTRIES_MAX: usize = 500;

/// A request for the active controller, carried back with its answer as the member's token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    Register {
        previous_broker_epoch: Option<BrokerEpoch>,
    },
    Heartbeat {
        broker_epoch: BrokerEpoch,
        caught_up: bool,
        want_shutdown: bool,
    },
    AlterIsr {
        broker_epoch: BrokerEpoch,
        partition: usize,
        request: AlterIsr,
        added: Vec<(NodeId, BrokerEpoch)>,
    },
    AllocateProducerIds {
        broker_epoch: BrokerEpoch,
        request: u64,
    },
    /// The operator sets the topic's `min.insync.replicas` (IncrementalAlterConfigs).
    AlterMinIsr {
        min_isr: usize,
    },
}

/// Who asked: a broker process, or the operator (`None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Token {
    pub(super) from: Option<(usize, u64)>,
    pub(super) call: Call,
}

/// What the active controller decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decided {
    Registered(BrokerEpoch),
    Heartbeat(HeartbeatReply),
    AlterPartition(PartitionRegistration),
    ProducerIds(ProducerIdBlock),
    Done,
    Refused(ErrorCode, String),
}

pub(super) type Member = QuorumController<Token, Decided>;

/// A controller node: its quorum member while the node runs, and its Raft state on disk.
#[derive(Debug)]
pub(super) struct Voter {
    pub(super) member: Option<Member>,
    pub(super) store: RaftStore,
    pub(super) rng: Rng,
    /// The queue key of the armed Raft timer.
    pub(super) timer: Option<(Instant, u64)>,
    /// The snapshot index last seen, to count compactions and installs.
    pub(super) snapshot_index: LogIndex,
    /// The applied index last checked against the other members'.
    pub(super) observed: Option<LogIndex>,
}

/// The oracle's view of the committed metadata log.
#[derive(Debug, Default)]
pub(super) struct CommittedView {
    pub(super) index: LogIndex,
    pub(super) image: MetadataImage,
    /// A hash of the image at each index some member was seen to have applied.
    hashes: BTreeMap<LogIndex, u64>,
    min_isr: usize,
}

fn image_hash(image: &MetadataImage) -> u64 {
    let mut hasher = Fnv1a::new();
    hasher.write(&image.encode());
    hasher.finish()
}

/// A request decided on the active controller: the `Controller` methods the broker's
/// `cluster::decide` calls for the same requests.
fn decide(
    controller: &mut Controller,
    now: Instant,
    (node, process): (NodeId, u64),
    call: &Call,
    topic_id: TopicId,
) -> (Decided, Vec<MetadataRecord>) {
    let refused = |e: keel_types::Refusal| (Decided::Refused(e.code, e.message), Vec::new());
    match call {
        Call::Register { previous_broker_epoch } => {
            let request = BrokerRegistrationRequest {
                node,
                listeners: Vec::new(),
                rack: None,
                previous_broker_epoch: *previous_broker_epoch,
                process_id: u128::from(process),
                incarnation: process,
            };
            match controller.register_broker(now, request) {
                Ok(d) => (Decided::Registered(d.reply), d.records),
                Err(e) => refused(e),
            }
        }
        Call::Heartbeat { broker_epoch, caught_up, want_shutdown } => {
            match controller.heartbeat(now, node, *broker_epoch, *caught_up, *want_shutdown) {
                Ok(d) => (Decided::Heartbeat(d.reply), d.records),
                Err(e) => refused(e),
            }
        }
        Call::AlterIsr { broker_epoch, partition, request, added } => {
            match controller.alter_partition(node, *broker_epoch, topic_id, *partition as i32, request, added) {
                Ok(d) => (Decided::AlterPartition(d.reply), d.records),
                Err(e) => refused(e),
            }
        }
        Call::AllocateProducerIds { broker_epoch, .. } => match controller.allocate_producer_ids(node, *broker_epoch) {
            Ok(d) => (Decided::ProducerIds(d.reply), d.records),
            Err(e) => refused(e),
        },
        Call::AlterMinIsr { min_isr } => {
            let configs = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), min_isr.to_string())]);
            match controller.alter_configs(TOPIC, configs) {
                Ok(d) => (Decided::Done, d.records),
                Err(e) => refused(e),
            }
        }
    }
}

impl Sim<'_> {
    /// The voters: brokers `0..controllers`.
    pub(super) fn is_voter(&self, b: usize) -> bool {
        b < self.voters.len()
    }

    /// The member on broker `b`, if it runs.
    pub(super) fn member(&self, b: usize) -> Option<&Member> {
        self.voters.get(b).and_then(|v| v.member.as_ref())
    }

    /// The active controller in the highest term (a leader cut off stays active until it
    /// notices it lost its quorum), as a broker index.
    pub(super) fn active_controller(&self) -> Option<usize> {
        (0..self.voters.len())
            .filter(|&b| self.member(b).is_some_and(|m| m.active().is_some()))
            .max_by_key(|&b| self.member(b).map(|m| m.raft().term()))
    }

    /// Starts (or restarts) the member on broker `b` from its Raft store.
    pub(super) fn start_member(&mut self, b: usize) -> Result<(), String> {
        let now = self.harness.now;
        let voters: Vec<NodeId> = (0..self.voters.len()).map(|v| NodeId(v as i32 + 1)).collect();
        let config = self.options.quorum_config(NodeId(b as i32 + 1), voters, self.snapshot_entries);
        let voter = &mut self.voters[b];
        voter.store.restart(now);
        let from_snapshot = voter.store.durable().snapshot.as_ref().map(|s| s.index);
        let member = Member::restart(config, voter.store.durable().clone(), now, &mut voter.rng);
        voter.snapshot_index = member.committed().snapshot_index();
        voter.observed = None;
        voter.member = Some(member);
        if let Some(index) = from_snapshot.filter(|&index| index > self.setup_index) {
            self.stats.controller_restarts_from_snapshot += 1;
            self.harness.trace.line(now, format_args!("b{} controller restarts from its snapshot at {index}", b + 1));
        }
        let process = self.brokers[b].process;
        self.harness.schedule(now + CONTROLLER_TICK, Event::ControllerTick { broker: b, process });
        self.after_member(b)
    }

    /// The node stops: a clean stop completes the Raft writes in flight, a crash keeps a
    /// random prefix of them (the next one possibly torn).
    pub(super) fn stop_member(&mut self, b: usize, clean: bool) -> String {
        let Some(voter) = self.voters.get_mut(b) else { return String::new() };
        if voter.member.take().is_none() {
            return String::new();
        }
        if let Some(key) = voter.timer.take() {
            self.harness.cancel(key);
        }
        if clean {
            voter.store.sync_all();
            return String::new();
        }
        let CrashLoss { survivors, pending, torn } = voter.store.crash(&mut self.disk_rng, true);
        format!(
            "; its controller keeps {survivors} of {pending} unsynced Raft writes{}",
            if torn { ", the next one torn" } else { "" }
        )
    }

    /// Runs one input on the member of broker `b`, then carries out its effects.
    pub(super) fn with_member(
        &mut self,
        b: usize,
        input: impl FnOnce(&mut Member, Instant, &mut Rng),
    ) -> Result<(), String> {
        let now = self.harness.now;
        let Some(voter) = self.voters.get_mut(b) else { return Ok(()) };
        let Some(member) = voter.member.as_mut() else { return Ok(()) };
        input(member, now, &mut voter.rng);
        self.after_member(b)
    }

    /// Carries out a member's effects, re-arms its timer, checks it and observes what it
    /// applied.
    fn after_member(&mut self, b: usize) -> Result<(), String> {
        let now = self.harness.now;
        let id = NodeId(b as i32 + 1);
        let slow = now < self.brokers[b].slow_disk_until;
        let Some(member) = self.voters[b].member.as_mut() else { return Ok(()) };
        if let Some(failure) = member.failure() {
            return Err(format!("b{id}'s controller stopped: {failure}"));
        }
        let persists = member.drain_persists();
        let messages = member.drain_messages();
        let answers = member.drain_answers();
        let timeout = member.poll_timeout();
        member.check_invariants().map_err(|e| format!("b{id}'s controller: {e}"))?;
        let process = self.brokers[b].process;
        for persist in persists {
            let latency_us = if slow {
                self.disk_rng.range_inclusive(50_000, 800_000)
            } else {
                self.disk_rng.range_inclusive(20, 2_000)
            };
            let done = self.voters[b].store.write(persist, now, Duration(latency_us * 1_000));
            self.harness.schedule(done, Event::RaftWrite { broker: b, process });
        }
        for (to, message) in messages {
            self.send(b, to.0 as usize - 1, Message::Raft { from: id, message });
        }
        for (token, answer) in answers {
            self.deliver_answer(b, token, answer);
        }
        if let Some(key) = self.voters[b].timer.take() {
            self.harness.cancel(key);
        }
        if let Some(at) = timeout {
            let key = self.harness.schedule(at, Event::RaftTimer { broker: b, process });
            self.voters[b].timer = Some(key);
        }
        self.observe_member(b)
    }

    /// A Raft write of the member on `b` completed.
    pub(super) fn raft_write_done(&mut self, b: usize) -> Result<(), String> {
        let Some(persist) = self.voters[b].store.complete() else {
            return Err(format!("simulator bug: a Raft write of b{} completed with none pending", b + 1));
        };
        self.with_member(b, |member, now, _| member.handle_persisted(now, persist.id))
    }

    /// A request reaches the member on `b`.
    pub(super) fn controller_request(&mut self, b: usize, token: Token) -> Result<(), String> {
        let (node, process) = match token.from {
            Some((broker, process)) => (NodeId(broker as i32 + 1), process),
            None => (NodeId(-1), 0),
        };
        let topic_id = self.topic_id;
        self.harness.current = format!("b{} controller decides {:?} from {node}", b + 1, token.call);
        let call = token.call.clone();
        self.with_member(b, |member, now, _| {
            member.handle_request(now, token, |controller| decide(controller, now, (node, process), &call, topic_id))
        })
    }

    /// Sends an answer back to whoever asked.
    fn deliver_answer(&mut self, b: usize, token: Token, answer: Answer<Decided>) {
        if let Answer::Decided { answer: Decided::AlterPartition(_), committed_at: Some(_) } = &answer {
            self.stats.isr_changes += 1;
        }
        match token.from {
            Some((broker, process)) => {
                let message = Message::ControllerAnswer { from: b, process, call: token.call, answer };
                self.send(b, broker, message);
            }
            None => self
                .harness
                .trace
                .line(self.harness.now, format_args!("operator: {:?} answered {answer:?}", token.call)),
        }
    }

    /// The member on `b` after an input: compactions and snapshot installs are counted, its
    /// image is checked against what other members applied at the same index, and a newer
    /// committed image becomes the oracle's view.
    fn observe_member(&mut self, b: usize) -> Result<(), String> {
        let voter = &mut self.voters[b];
        let Some(member) = voter.member.as_ref() else { return Ok(()) };
        let snapshot_index = member.committed().snapshot_index();
        if snapshot_index > voter.snapshot_index {
            voter.snapshot_index = snapshot_index;
            self.stats.controller_snapshots += 1;
        }
        let index = member.raft().applied_index();
        if voter.observed == Some(index) {
            return Ok(());
        }
        voter.observed = Some(index);
        let hash = image_hash(member.image());
        match self.committed.hashes.get(&index) {
            Some(&seen) if seen != hash => {
                return Err(format!(
                    "b{}'s controller applied a different metadata image at index {index} than another member",
                    b + 1
                ))
            }
            Some(_) => return Ok(()),
            None => {
                self.committed.hashes.insert(index, hash);
            }
        }
        if index <= self.committed.index {
            return Ok(());
        }
        let member = self.voters[b].member.as_ref().expect("checked above");
        let before = self.committed.index;
        let delta = member.committed().after(before, usize::MAX);
        let image = member.image().clone();
        self.committed.index = index;
        for (at, bytes) in &delta.entries {
            let records = MetadataRecord::decode_batch(bytes).map_err(|e| format!("metadata entry {at}: {e}"))?;
            for record in &records {
                self.trace_record(*at, record);
            }
        }
        if delta.snapshot.is_some() {
            // The member compacted in the same step: what changed is read off the images.
            self.harness
                .trace
                .line(self.harness.now, format_args!("metadata committed up to {index} (b{} compacted)", b + 1));
            self.trace_image_change(&image);
        }
        self.observe_image(image)
    }

    fn trace_record(&mut self, index: LogIndex, record: &MetadataRecord) {
        match record {
            MetadataRecord::Partition { index: p, registration, .. } => {
                let text = show_registration(registration);
                self.harness.trace.line(self.harness.now, format_args!("metadata {index}: p{p} {text}"));
            }
            MetadataRecord::FenceBroker { node, broker_epoch } => {
                self.stats.fences += 1;
                self.harness
                    .trace
                    .line(self.harness.now, format_args!("metadata {index}: fence b{node} epoch {broker_epoch}"));
            }
            other => self.harness.trace.line(self.harness.now, format_args!("metadata {index}: {other:?}")),
        }
    }

    /// What changed from the committed image to `image`, for entries compacted away before the
    /// simulator saw them.
    fn trace_image_change(&mut self, image: &MetadataImage) {
        for (node, broker) in image.brokers() {
            if self.committed.image.broker(*node) != Some(broker) {
                self.harness.trace.line(self.harness.now, format_args!("  b{node}: {broker:?}"));
            }
        }
        for p in 0..self.options.partitions {
            let registration = image.partition(self.topic_id, p as i32);
            if let Some(registration) =
                registration.filter(|&r| self.committed.image.partition(self.topic_id, p as i32) != Some(r))
            {
                let text = show_registration(registration);
                self.harness.trace.line(self.harness.now, format_args!("  p{p} {text}"));
            }
        }
    }

    /// A newer committed image: leader changes and min ISR changes are taken from it.
    fn observe_image(&mut self, image: MetadataImage) -> Result<(), String> {
        image.check_invariants().map_err(|e| format!("the committed image: {e}"))?;
        for p in 0..self.options.partitions {
            let epoch = image.partition(self.topic_id, p as i32).map_or(LeaderEpoch(0), |r| r.leader_epoch);
            if epoch > self.leader_epochs[p] {
                self.leader_epochs[p] = epoch;
                self.stats.leader_changes += 1;
            }
        }
        let min_isr = image.topic(self.topic_id).map_or(self.committed.min_isr, |t| t.min_isr());
        if min_isr != self.committed.min_isr {
            self.committed.min_isr = min_isr;
            self.stats.min_isr_changes += 1;
            self.oracle.handle_min_isr(min_isr, self.harness.now);
        }
        self.committed.image = image;
        Ok(())
    }

    /// The setup image is committed at `index` before anything runs.
    pub(super) fn observe_setup(&mut self, index: LogIndex, image: MetadataImage) {
        self.committed.index = index;
        self.committed.min_isr = self.options.min_isr;
        self.committed.hashes.insert(index, image_hash(&image));
        self.committed.image = image;
    }

    /// Where broker `b` sends its next controller request: the controller it believes active,
    /// else the next voter in turn. A request with no answer for a while sends it to the next.
    pub(super) fn send_call(&mut self, b: usize, call: Call) {
        let now = self.harness.now;
        let voters = self.voters.len();
        let broker = &mut self.brokers[b];
        if broker.call_since.is_some_and(|since| now >= since + CALL_TIMEOUT) {
            broker.controller_hint = None;
            broker.controller_cursor += 1;
            broker.call_since = None;
        }
        let to = broker.controller_hint.unwrap_or(broker.controller_cursor % voters);
        broker.call_since.get_or_insert(now);
        let process = broker.process;
        self.send(b, to, Message::ControllerRequest { broker: b, process, call });
    }

    /// Broker `b` hears from controller `from`: whom to ask next time.
    pub(super) fn heard_from_controller(&mut self, b: usize, from: usize, answer: &Answer<Decided>) {
        let broker = &mut self.brokers[b];
        broker.call_since = None;
        match answer {
            Answer::NotController { leader } => {
                broker.controller_hint = leader.map(|l| l.0 as usize - 1).filter(|&l| l != from);
                if broker.controller_hint.is_none() {
                    broker.controller_cursor += 1;
                }
            }
            Answer::Decided { .. } | Answer::Busy => broker.controller_hint = Some(from),
        }
    }

    /// The operator sets min.insync.replicas through the active controller, if there is one.
    pub(super) fn change_min_isr(&mut self, min_isr: usize) -> Result<(), String> {
        let Some(active) = self.active_controller() else {
            self.harness.trace.line(
                self.harness.now,
                format_args!("operator: no active controller for min.insync.replicas={min_isr}"),
            );
            return Ok(());
        };
        self.harness
            .trace
            .line(self.harness.now, format_args!("operator: min.insync.replicas={min_isr} via b{}", active + 1));
        self.controller_request(active, Token { from: None, call: Call::AlterMinIsr { min_isr } })
    }

    /// One line per member, for a run that did not converge.
    pub(super) fn describe_members(&self) -> String {
        let mut text = String::new();
        for (b, voter) in self.voters.iter().enumerate() {
            let line = match &voter.member {
                None => "down".to_string(),
                Some(m) => format!(
                    "{:?} term {} leader {:?} commit {} applied {} snapshot {} active {} waiting {}",
                    m.raft().role(),
                    m.raft().term(),
                    m.raft().leader(),
                    m.raft().commit_index(),
                    m.raft().applied_index(),
                    m.committed().snapshot_index(),
                    m.active().is_some(),
                    m.waiting()
                ),
            };
            text.push_str(&format!("\n  controller b{}: {line}", b + 1));
        }
        text
    }
}

/// A broker sends its controller requests elsewhere after this long without any answer.
pub(super) const CALL_TIMEOUT: Duration = Duration(500_000_000);
