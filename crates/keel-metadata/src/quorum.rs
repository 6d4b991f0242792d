//! A member of the controller quorum: keel-raft carrying the metadata log, the image of every
//! applied entry, and, while this node is the active controller, the [`Controller`] deciding by
//! appending records. Kafka calls this piece the `QuorumController`.
//!
//! Everything a controller node decides lives here, so the broker (with tokio, sockets and
//! files) and keel-sim (with simulated time, network and a crash-simulating Raft store) run the
//! same code:
//!
//! - committed entries and snapshots are applied to the image, and fed to the active
//!   controller; a snapshot resets it;
//! - the node becomes the active controller only once it leads and has applied everything up
//!   to its own term's first entry, so its decisions start from everything committed before
//!   (a snapshot read from its own disk at restart is applied, but is not "caught up");
//!   voters heard from before that count as alive since then
//!   ([`Controller::handle_last_contact`]);
//! - a request is decided on the active controller and its records proposed as one entry; its
//!   caller waits, under a token of the caller's choosing, until that entry is applied, and
//!   hears the decision only if the entry that committed at that index is of the term it was
//!   proposed in. A lost leadership, a term change, a failed proposal or a snapshot that
//!   overtakes the entry answers NOT_CONTROLLER instead, and a failed proposal also
//!   deactivates the controller (its working image holds records that will never commit);
//! - the Raft log is compacted into a snapshot of the image every `snapshot_entries` applied
//!   entries;
//! - [`CommittedLog`] keeps what brokers' metadata fetches get: the latest snapshot, then the
//!   applied entries after it;
//! - the periodic controller tick: the membership layer's verdicts and [`Controller::tick`].
//!
//! Like every core it never does IO or reads a clock. Inputs are `handle_*(now, ..)`; outputs
//! are pulled: [`QuorumController::drain_persists`] (make durable in order, then report each
//! with [`QuorumController::handle_persisted`]), [`QuorumController::drain_messages`],
//! [`QuorumController::drain_answers`] and [`QuorumController::poll_timeout`].

use std::collections::BTreeMap;

use keel_raft::{Apply, Config as RaftConfig, Durable, LogIndex, Message, Payload, Persist, ProposeError, Raft};
use keel_raft::{RoleKind, Term};
use keel_types::{Entropy, Instant, NodeId};

use crate::{Controller, ControllerConfig, MetadataImage, MetadataRecord};

/// How a quorum member runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumConfig {
    pub raft: RaftConfig,
    pub controller: ControllerConfig,
    /// Compact the Raft log into a snapshot of the image after this many applied entries
    /// (Kafka's `metadata.log.max.record.bytes.between.snapshots`, counted in entries).
    pub snapshot_entries: u64,
}

impl QuorumConfig {
    pub fn validate(&self) -> Result<(), String> {
        self.raft.validate().map_err(|e| e.to_string())?;
        self.controller.validate()?;
        if self.snapshot_entries == 0 {
            return Err("snapshot_entries must be at least 1".to_string());
        }
        Ok(())
    }
}

/// What the caller of [`QuorumController::handle_request`] hears, with its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<A> {
    /// The active controller's decision. `committed_at` is the index of the entry holding its
    /// records, now committed and applied (`None`: it appended nothing).
    Decided { answer: A, committed_at: Option<LogIndex> },
    /// This node is not (or stopped being) the active controller; `leader` is the Raft leader
    /// it knows of. Records it had proposed may or may not commit: the caller retries.
    NotController { leader: Option<NodeId> },
    /// Too many uncommitted entries, or a leadership transfer is under way: retry.
    Busy,
}

/// What a metadata fetch after some index gets: the latest snapshot if the fetcher is behind
/// it (index, encoded image), then committed entries (index, encoded record batch).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    pub snapshot: Option<(LogIndex, Vec<u8>)>,
    pub entries: Vec<(LogIndex, Vec<u8>)>,
}

impl MetadataDelta {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty()
    }
}

/// The committed metadata log as brokers fetch it: the latest snapshot and the applied entries
/// after it that carry records (a leader's no-op carries none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommittedLog {
    snapshot_index: LogIndex,
    snapshot: Vec<u8>,
    entries: Vec<(LogIndex, Vec<u8>)>,
}

impl CommittedLog {
    /// What a fetch after `after` gets, at most `entries_max` entries: the snapshot first when
    /// `after` lies below it (the entries before it are gone).
    pub fn after(&self, after: LogIndex, entries_max: usize) -> MetadataDelta {
        let snapshot = (after < self.snapshot_index && self.snapshot_index > 0)
            .then(|| (self.snapshot_index, self.snapshot.clone()));
        let from = if snapshot.is_some() { self.snapshot_index } else { after };
        let start = self.entries.partition_point(|(index, _)| *index <= from);
        let entries = self.entries[start..].iter().take(entries_max).cloned().collect();
        MetadataDelta { snapshot, entries }
    }

    pub fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    /// The index of the last entry with records, or the snapshot's.
    pub fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.snapshot_index, |(index, _)| *index)
    }

    fn install(&mut self, index: LogIndex, snapshot: Vec<u8>) {
        self.snapshot_index = index;
        self.snapshot = snapshot;
        self.entries.retain(|(at, _)| *at > index);
    }
}

/// A broker's replay of the committed metadata log: the image and how far it goes. The broker
/// and keel-sim's brokers apply what their metadata fetches return with
/// [`MetadataReplay::apply`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataReplay {
    pub index: LogIndex,
    pub image: MetadataImage,
}

impl MetadataReplay {
    /// Applies a fetch's answer: the snapshot replaces the image if it is ahead of it, then
    /// every entry after the index. Returns whether anything changed. On bytes that do not
    /// decode nothing changes, and the error says where.
    pub fn apply(&mut self, delta: &MetadataDelta) -> Result<bool, String> {
        let snapshot = match &delta.snapshot {
            Some((at, bytes)) if *at > self.index => {
                Some((*at, MetadataImage::decode(bytes).map_err(|e| format!("the snapshot at {at}: {e}"))?))
            }
            _ => None,
        };
        let from = snapshot.as_ref().map_or(self.index, |(at, _)| *at);
        let batches = delta
            .entries
            .iter()
            .filter(|(at, _)| *at > from)
            .map(|(at, bytes)| {
                MetadataRecord::decode_batch(bytes)
                    .map(|batch| (*at, batch))
                    .map_err(|e| format!("the entry at {at}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        if snapshot.is_none() && batches.is_empty() {
            return Ok(false);
        }
        if let Some((at, image)) = snapshot {
            self.index = at;
            self.image = image;
        }
        for (at, batch) in batches {
            batch.iter().for_each(|record| self.image.apply(record));
            self.index = at;
        }
        Ok(true)
    }
}

/// A request waiting for its entry to commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiter<T, A> {
    term: Term,
    token: T,
    answer: A,
}

/// The active controller and the term it is active in.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Active {
    term: Term,
    controller: Controller,
}

/// One member of the controller quorum. `T` is the caller's token for a request (a reply
/// channel, a message address), `A` what the controller's decision answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumController<T, A> {
    raft: Raft,
    config: QuorumConfig,
    /// The image of every applied entry.
    image: MetadataImage,
    active: Option<Active>,
    /// When each other voter last sent this node a Raft message.
    heard: BTreeMap<NodeId, Instant>,
    waiters: BTreeMap<LogIndex, Waiter<T, A>>,
    committed: CommittedLog,
    answers: Vec<(T, Answer<A>)>,
    /// Set when a committed entry or snapshot cannot be decoded: the node stops (fail-stop),
    /// since applying the rest would build a different image than the other members'.
    failure: Option<String>,
}

impl<T, A> QuorumController<T, A> {
    /// A member starting from what its Raft store holds (nothing on a first start). The
    /// snapshot on disk, if any, is applied at once; the node is not the active controller
    /// until it leads and has caught up. Panics on an invalid config: validate it first.
    pub fn restart(config: QuorumConfig, durable: Durable, now: Instant, rng: &mut impl Entropy) -> Self {
        if let Err(error) = config.validate() {
            panic!("invalid controller quorum config: {error}");
        }
        let raft = Raft::restart(config.raft.clone(), durable, now, rng);
        let mut node = QuorumController {
            raft,
            config,
            image: MetadataImage::default(),
            active: None,
            heard: BTreeMap::new(),
            waiters: BTreeMap::new(),
            committed: CommittedLog::default(),
            answers: Vec::new(),
            failure: None,
        };
        node.settle(now);
        node
    }

    // ---- inputs -------------------------------------------------------------------------

    /// A Raft message from another member.
    pub fn handle_message(&mut self, now: Instant, rng: &mut impl Entropy, from: NodeId, message: Message) {
        if self.failure.is_some() {
            return;
        }
        self.heard.insert(from, now);
        self.raft.handle_message(now, rng, from, message);
        self.settle(now);
    }

    /// Raft's timers: call at [`QuorumController::poll_timeout`].
    pub fn handle_timeout(&mut self, now: Instant, rng: &mut impl Entropy) {
        if self.failure.is_some() {
            return;
        }
        self.raft.handle_tick(now, rng);
        self.settle(now);
    }

    /// The persist with this id (and every one before it) is durable.
    pub fn handle_persisted(&mut self, now: Instant, id: u64) {
        if self.failure.is_some() {
            return;
        }
        self.raft.handle_persisted(now, id);
        self.settle(now);
    }

    /// A request for the active controller: `decide` takes the decision (the answer and the
    /// records to append, already applied to the controller's working image; a refusal is an
    /// answer without records). The answer comes out of [`QuorumController::drain_answers`]
    /// with `token`: at once if this node is not the active controller or nothing is
    /// appended, else once the records' entry is applied.
    pub fn handle_request(
        &mut self,
        now: Instant,
        token: T,
        decide: impl FnOnce(&mut Controller) -> (A, Vec<MetadataRecord>),
    ) {
        let Some(active) = self.active.as_mut().filter(|_| self.failure.is_none()) else {
            self.answers.push((token, Answer::NotController { leader: self.raft.leader() }));
            return;
        };
        let (answer, records) = decide(&mut active.controller);
        if records.is_empty() {
            self.answers.push((token, Answer::Decided { answer, committed_at: None }));
            return;
        }
        match self.propose(now, &records) {
            Ok(index) => {
                let term = self.raft.term();
                assert!(!self.waiters.contains_key(&index), "one proposal per index in a term");
                self.waiters.insert(index, Waiter { term, token, answer });
            }
            Err(refusal) => self.answers.push((token, refusal)),
        }
        self.settle(now);
    }

    /// The periodic controller tick (every 50 to 100 ms): the membership layer's verdicts
    /// (node, incarnation, alive) and [`Controller::tick`]'s session expiry and preferred
    /// leaders. Returns the records proposed, for logging. Does nothing on a node that is not
    /// the active controller.
    pub fn handle_controller_tick(
        &mut self,
        now: Instant,
        membership: impl IntoIterator<Item = (NodeId, u64, bool)>,
    ) -> Vec<MetadataRecord> {
        let Some(active) = self.active.as_mut().filter(|_| self.failure.is_none()) else { return Vec::new() };
        let mut records = Vec::new();
        // A member the membership layer holds dead (or left) is fenced, and stays fenced
        // until it is seen alive at a higher incarnation.
        for (node, incarnation, alive) in membership {
            records.extend(active.controller.handle_membership(node, incarnation, alive).records);
        }
        records.extend(active.controller.tick(now));
        if !records.is_empty() && self.propose(now, &records).is_err() {
            records.clear();
        }
        self.settle(now);
        records
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Writes to make durable, in order; report each with
    /// [`QuorumController::handle_persisted`].
    pub fn drain_persists(&mut self) -> Vec<Persist> {
        self.raft.drain_persists()
    }

    /// Raft messages that may be sent now.
    pub fn drain_messages(&mut self) -> Vec<(NodeId, Message)> {
        self.raft.drain_messages()
    }

    /// Answers to requests, with their tokens.
    pub fn drain_answers(&mut self) -> Vec<(T, Answer<A>)> {
        std::mem::take(&mut self.answers)
    }

    /// When to call [`QuorumController::handle_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.raft.poll_timeout()
    }

    // ---- queries ------------------------------------------------------------------------

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn config(&self) -> &QuorumConfig {
        &self.config
    }

    /// The image of every applied entry.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    /// What metadata fetches get.
    pub fn committed(&self) -> &CommittedLog {
        &self.committed
    }

    /// The active controller, while this node is it.
    pub fn active(&self) -> Option<&Controller> {
        self.active.as_ref().map(|a| &a.controller)
    }

    /// Requests waiting for their entry to commit.
    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// Why this node stopped, if it did: a committed entry or snapshot that does not decode.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Raft's invariants, the image's and the active controller's, and this node's own: the
    /// committed log ends at or before the applied index and starts after the snapshot Raft
    /// holds, waiters wait for entries not yet applied, and only an active controller has any.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.raft.check_invariants()?;
        self.image.check_invariants().map_err(|e| format!("the applied image: {e}"))?;
        if let Some(active) = &self.active {
            active.controller.check_invariants().map_err(|e| format!("the active controller: {e}"))?;
            if active.controller.committed() != &self.image {
                return Err("the active controller's committed image is not the applied image".to_string());
            }
            if self.raft.role() != RoleKind::Leader || active.term != self.raft.term() {
                return Err(format!(
                    "active in term {} while {:?} in term {}",
                    active.term,
                    self.raft.role(),
                    self.raft.term()
                ));
            }
        } else if !self.waiters.is_empty() {
            return Err(format!("{} requests wait on a node that is not the active controller", self.waiters.len()));
        }
        let applied = self.raft.applied_index();
        if let Some((&index, _)) = self.waiters.first_key_value().filter(|(&index, _)| index <= applied) {
            return Err(format!("a request waits for entry {index}, already applied (applied {applied})"));
        }
        let raft_snapshot = self.raft.snapshot().map_or(0, |s| s.index);
        if self.failure.is_none() && self.committed.snapshot_index != raft_snapshot {
            return Err(format!(
                "the committed log's snapshot is at {}, Raft's at {raft_snapshot}",
                self.committed.snapshot_index
            ));
        }
        let indexes = self.committed.entries.iter().map(|(index, _)| *index);
        if indexes.clone().zip(indexes.clone().skip(1)).any(|(a, b)| a >= b)
            || self.committed.entries.first().is_some_and(|(index, _)| *index <= self.committed.snapshot_index)
            || self.committed.last_index() > applied
        {
            return Err(format!(
                "the committed log's entries are out of order or beyond the applied index {applied}: snapshot {}, \
                 entries {:?}",
                self.committed.snapshot_index,
                self.committed.entries.iter().map(|(index, _)| index).collect::<Vec<_>>()
            ));
        }
        Ok(())
    }

    // ---- steps --------------------------------------------------------------------------

    /// Proposes records the active controller decided (already applied to its working
    /// image). If Raft refuses, the working image holds records that will never commit: the
    /// controller stops being active (and starts over from the applied image once this node
    /// is caught up again).
    fn propose(&mut self, now: Instant, records: &[MetadataRecord]) -> Result<LogIndex, Answer<A>> {
        match self.raft.propose(now, MetadataRecord::encode_batch(records)) {
            Ok(index) => Ok(index),
            Err(error) => {
                self.deactivate();
                Err(match error {
                    ProposeError::NotLeader { leader } => Answer::NotController { leader },
                    ProposeError::Busy => Answer::Busy,
                })
            }
        }
    }

    /// After every input: apply what committed, compact, and take or give up the active role.
    fn settle(&mut self, now: Instant) {
        if let Err(error) = self.apply(now) {
            self.failure = Some(error);
            self.deactivate();
            return;
        }
        self.update_role(now);
    }

    fn apply(&mut self, now: Instant) -> Result<(), String> {
        let mut any = false;
        while let Some(apply) = self.raft.poll_apply() {
            any = true;
            match apply {
                Apply::Snapshot(snapshot) => {
                    self.image = MetadataImage::decode(&snapshot.data)
                        .map_err(|e| format!("the metadata snapshot at {} cannot be decoded: {e}", snapshot.index))?;
                    self.committed.install(snapshot.index, snapshot.data);
                    self.fail_waiters_up_to(snapshot.index);
                    if let Some(active) = self.active.as_mut() {
                        active.controller.reset(self.image.clone(), now);
                    }
                }
                Apply::Entry(entry) => {
                    if let Payload::Command(command) = &entry.payload {
                        let records = MetadataRecord::decode_batch(command)
                            .map_err(|e| format!("metadata entry {} cannot be decoded: {e}", entry.index))?;
                        for record in &records {
                            self.image.apply(record);
                            if let Some(active) = self.active.as_mut() {
                                active.controller.handle_committed(record);
                            }
                        }
                        self.committed.entries.push((entry.index, command.clone()));
                    }
                    if let Some(waiter) = self.waiters.remove(&entry.index) {
                        // Another leader's entry at this index means the decision was lost.
                        let answer = if waiter.term == entry.term {
                            Answer::Decided { answer: waiter.answer, committed_at: Some(entry.index) }
                        } else {
                            Answer::NotController { leader: self.raft.leader() }
                        };
                        self.answers.push((waiter.token, answer));
                    }
                }
            }
        }
        if any {
            self.maybe_compact();
        }
        Ok(())
    }

    fn fail_waiters_up_to(&mut self, index: LogIndex) {
        let later = self.waiters.split_off(&(index + 1));
        let leader = self.raft.leader();
        for (_, waiter) in std::mem::replace(&mut self.waiters, later) {
            self.answers.push((waiter.token, Answer::NotController { leader }));
        }
    }

    fn maybe_compact(&mut self) {
        let applied = self.raft.applied_index();
        let base = self.raft.snapshot().map_or(0, |s| s.index);
        if applied.saturating_sub(base) < self.config.snapshot_entries {
            return;
        }
        let data = self.image.encode();
        self.raft.compact(applied, data.clone());
        self.committed.install(applied, data);
    }

    /// Becomes the active controller once leader and caught up with everything before its
    /// term (its first entry of the term committed and applied); stops being it on losing
    /// leadership or on a term change.
    fn update_role(&mut self, now: Instant) {
        let leading = self.raft.role() == RoleKind::Leader;
        let term = self.raft.term();
        if self.active.as_ref().is_some_and(|active| !leading || active.term != term) {
            self.deactivate();
        }
        if !leading || self.active.is_some() {
            return;
        }
        let last = self.raft.last_index();
        let caught_up = self.raft.applied_index() == last && self.raft.term_at(last) == Some(term);
        if caught_up {
            let mut controller = Controller::new(self.config.controller.clone(), self.image.clone(), now);
            // In combined mode a voter's Raft messages show its process alive; one that went
            // silent (typically with the previous active controller) is fenced a session after
            // it did, not a whole session after this election.
            for (&node, &at) in &self.heard {
                controller.handle_last_contact(node, at);
            }
            self.active = Some(Active { term, controller });
        }
    }

    fn deactivate(&mut self) {
        self.active = None;
        let leader = self.raft.leader();
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            self.answers.push((waiter.token, Answer::NotController { leader }));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use keel_types::{BrokerEpoch, Duration, Rng};

    use super::*;
    use crate::BrokerRegistrationRequest;

    type Node = QuorumController<u32, BrokerEpoch>;

    /// Controller quorum members on a network that delivers everything at once unless a link
    /// is cut, each with a disk that makes every write durable as soon as it is handed out.
    struct Quorum {
        nodes: BTreeMap<NodeId, Node>,
        disks: BTreeMap<NodeId, Durable>,
        cut: BTreeSet<NodeId>,
        /// (node, term) pairs in which a node has been the active controller.
        active_in: BTreeSet<(NodeId, Term)>,
        answers: Vec<(NodeId, u32, Answer<BrokerEpoch>)>,
        now: Instant,
        rng: Rng,
        snapshot_entries: u64,
    }

    fn config(id: NodeId, voters: &[NodeId], snapshot_entries: u64) -> QuorumConfig {
        QuorumConfig {
            raft: RaftConfig::new(id, voters.to_vec()),
            controller: ControllerConfig::default(),
            snapshot_entries,
        }
    }

    /// A registration of broker `node`: its broker epoch and its records.
    fn register(node: i32) -> impl FnOnce(&mut Controller) -> (BrokerEpoch, Vec<MetadataRecord>) {
        move |controller| {
            let request = BrokerRegistrationRequest {
                node: NodeId(node),
                listeners: Vec::new(),
                rack: None,
                previous_broker_epoch: None,
                process_id: 1,
                incarnation: 1,
            };
            let decision = controller.register_broker(Instant::ZERO, request).expect("a registration");
            (decision.reply, decision.records)
        }
    }

    impl Quorum {
        fn new(voters: usize, snapshot_entries: u64) -> Quorum {
            let ids: Vec<NodeId> = (1..=voters as i32).map(NodeId).collect();
            let mut rng = Rng::new(11);
            let nodes = ids
                .iter()
                .map(|&id| {
                    let node =
                        Node::restart(config(id, &ids, snapshot_entries), Durable::default(), Instant::ZERO, &mut rng);
                    (id, node)
                })
                .collect();
            let disks = ids.iter().map(|&id| (id, Durable::default())).collect();
            let mut quorum = Quorum {
                nodes,
                disks,
                cut: BTreeSet::new(),
                active_in: BTreeSet::new(),
                answers: Vec::new(),
                now: Instant::ZERO,
                rng,
                snapshot_entries,
            };
            quorum.pump();
            quorum
        }

        /// Carries out every node's effects until there are none.
        fn pump(&mut self) {
            loop {
                let mut wire = Vec::new();
                for (&id, node) in &mut self.nodes {
                    for persist in node.drain_persists() {
                        self.disks.get_mut(&id).expect("a disk").apply(&persist);
                        node.handle_persisted(self.now, persist.id);
                    }
                    for (to, message) in node.drain_messages() {
                        wire.push((id, to, message));
                    }
                    for (token, answer) in node.drain_answers() {
                        self.answers.push((id, token, answer));
                    }
                    node.check_invariants().unwrap_or_else(|e| panic!("n{id}: {e}"));
                    // A node becomes active only once it has applied an entry of its own term:
                    // everything committed before its term is in the image it decides on.
                    if node.active().is_some() && self.active_in.insert((id, node.raft().term())) {
                        let raft = node.raft();
                        assert_eq!(raft.term_at(raft.applied_index()), Some(raft.term()), "n{id} active too early");
                        assert_eq!(raft.applied_index(), raft.last_index(), "n{id} active too early");
                    }
                }
                if wire.is_empty() {
                    return;
                }
                for (from, to, message) in wire {
                    if self.cut.contains(&from) || self.cut.contains(&to) {
                        continue;
                    }
                    if let Some(node) = self.nodes.get_mut(&to) {
                        node.handle_message(self.now, &mut self.rng, from, message);
                    }
                }
            }
        }

        /// Lets time pass in 10 ms steps until `done` holds (at most a minute).
        fn run_until(&mut self, what: &str, done: impl Fn(&Quorum) -> bool) {
            for _ in 0..6_000 {
                if done(self) {
                    return;
                }
                self.now = self.now + Duration::from_millis(10);
                for node in self.nodes.values_mut() {
                    if node.poll_timeout().is_some_and(|at| at <= self.now) {
                        node.handle_timeout(self.now, &mut self.rng);
                    }
                }
                self.pump();
            }
            panic!("{what} did not happen within a minute");
        }

        /// The active controller in the highest term (a leader cut off stays active until it
        /// notices it lost its quorum).
        fn active(&self) -> Option<NodeId> {
            let active = self.nodes.iter().filter(|(_, n)| n.active().is_some());
            active.max_by_key(|(_, n)| n.raft().term()).map(|(&id, _)| id)
        }

        fn elect(&mut self) -> NodeId {
            self.run_until("an active controller", |q| q.active().is_some());
            self.active().expect("active")
        }

        fn request(
            &mut self,
            on: NodeId,
            token: u32,
            decide: impl FnOnce(&mut Controller) -> (BrokerEpoch, Vec<MetadataRecord>),
        ) {
            self.nodes.get_mut(&on).expect("a node").handle_request(self.now, token, decide);
            self.pump();
        }

        fn answer(&self, token: u32) -> Vec<&Answer<BrokerEpoch>> {
            self.answers.iter().filter(|(_, t, _)| *t == token).map(|(_, _, a)| a).collect()
        }

        /// The node crashes and starts again from its disk.
        fn restart(&mut self, id: NodeId) {
            let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
            let durable = self.disks[&id].clone();
            let node = Node::restart(config(id, &ids, self.snapshot_entries), durable, self.now, &mut self.rng);
            self.nodes.insert(id, node);
        }
    }

    #[test]
    fn a_request_is_answered_once_its_entry_commits_and_a_follower_points_at_the_leader() {
        let mut quorum = Quorum::new(3, 1000);
        let leader = quorum.elect();
        quorum.request(leader, 1, register(1));
        let index = match quorum.answer(1)[..] {
            [Answer::Decided { answer: BrokerEpoch(1), committed_at: Some(index) }] => *index,
            ref other => panic!("{other:?}"),
        };
        quorum.run_until("every member commits it", |q| q.nodes.values().all(|n| n.raft().commit_index() >= index));
        assert!(quorum.nodes[&leader].image().broker(NodeId(1)).is_some());
        let follower = *quorum.nodes.keys().find(|&&id| id != leader).expect("a follower");
        quorum.request(follower, 2, |_| panic!("a follower does not decide"));
        assert_eq!(quorum.answer(2), [&Answer::NotController { leader: Some(leader) }]);
    }

    #[test]
    fn a_waiter_fails_when_the_term_changes_before_its_entry_commits() {
        let mut quorum = Quorum::new(3, 1000);
        let old = quorum.elect();
        // Cut off, the leader proposes; the others elect a new leader meanwhile.
        quorum.cut.insert(old);
        quorum.request(old, 1, register(1));
        assert!(quorum.answer(1).is_empty(), "nothing commits without a quorum");
        assert_eq!(quorum.nodes[&old].waiting(), 1);
        quorum
            .run_until("a new active controller", |q| q.nodes.iter().any(|(&id, n)| id != old && n.active().is_some()));
        quorum.cut.clear();
        quorum.run_until("the old leader steps down", |q| q.nodes[&old].active().is_none());
        let new = quorum.active().expect("one active controller");
        assert_ne!(new, old);
        assert!(
            matches!(quorum.answer(1)[..], [Answer::NotController { .. }]),
            "the waiter hears NOT_CONTROLLER once: {:?}",
            quorum.answer(1)
        );
        quorum.run_until("the old leader catches up", |q| q.nodes[&old].image() == q.nodes[&new].image());
        assert!(quorum.nodes[&old].image().broker(NodeId(1)).is_none(), "the lost decision is in no image");
    }

    #[test]
    fn a_waiter_overtaken_by_a_snapshot_fails_and_the_node_takes_the_snapshot() {
        let mut quorum = Quorum::new(3, 2);
        let old = quorum.elect();
        quorum.cut.insert(old);
        quorum.request(old, 1, register(1));
        quorum
            .run_until("a new active controller", |q| q.nodes.iter().any(|(&id, n)| id != old && n.active().is_some()));
        let new = quorum.active().expect("active");
        for broker in 2..8 {
            quorum.request(new, broker as u32, register(broker));
        }
        let snapshot = quorum.nodes[&new].committed().snapshot_index();
        assert!(snapshot > quorum.nodes[&old].raft().last_index(), "the snapshot covers the old leader's entry");
        quorum.cut.clear();
        quorum
            .run_until("the old leader takes the snapshot", |q| q.nodes[&old].committed().snapshot_index() >= snapshot);
        assert!(matches!(quorum.answer(1)[..], [Answer::NotController { .. }]), "{:?}", quorum.answer(1));
        quorum.run_until("the old leader catches up", |q| q.nodes[&old].image() == q.nodes[&new].image());
    }

    #[test]
    fn compaction_keeps_the_entries_after_the_snapshot_and_fetches_below_it_get_the_snapshot() {
        let mut quorum = Quorum::new(1, 3);
        let node = quorum.elect();
        for broker in 1..=4 {
            quorum.request(node, broker as u32, register(broker));
        }
        let n = &quorum.nodes[&node];
        // The no-op and three registrations were compacted; the fourth follows the snapshot.
        let committed = n.committed();
        assert_eq!(committed.snapshot_index(), 3);
        assert_eq!(n.raft().snapshot().map(|s| s.index), Some(3));
        assert_eq!(n.raft().entries().iter().map(|e| e.index).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(committed.last_index(), 5);
        let after_snapshot = committed.after(3, usize::MAX);
        assert_eq!(after_snapshot.snapshot, None);
        assert_eq!(after_snapshot.entries.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [4, 5]);
        assert_eq!(committed.after(5, usize::MAX), MetadataDelta::default());
        assert_eq!(committed.after(3, 1).entries.len(), 1, "a fetch is bounded");
        // A broker that fetched up to 1 is behind the snapshot: it gets it, then the rest.
        let mut replay = MetadataReplay::default();
        let behind = committed.after(0, usize::MAX);
        assert_eq!(behind.snapshot.as_ref().map(|(i, _)| *i), Some(3));
        assert!(replay.apply(&behind).unwrap());
        assert_eq!((replay.index, &replay.image), (5, n.image()));
        assert!(!replay.apply(&behind).unwrap(), "nothing new the second time");
        let mut partial = MetadataReplay::default();
        partial.apply(&committed.after(0, 1)).unwrap();
        assert_eq!(partial.index, 4);
        partial.apply(&committed.after(partial.index, usize::MAX)).unwrap();
        assert_eq!(partial, replay);
        let mut corrupt = committed.after(0, usize::MAX);
        corrupt.entries[0].1 = vec![0xff];
        assert!(partial.clone().apply(&corrupt).is_ok(), "entries it holds are skipped unread");
        let mut fresh = MetadataReplay::default();
        assert!(fresh.apply(&corrupt).unwrap_err().contains("the entry at 4"));
        assert_eq!(fresh, MetadataReplay::default(), "a failed replay changes nothing");
    }

    #[test]
    fn a_snapshot_read_at_restart_is_applied_but_the_node_is_not_active_until_caught_up() {
        let mut quorum = Quorum::new(3, 3);
        let leader = quorum.elect();
        for broker in 1..=5 {
            quorum.request(leader, broker as u32, register(broker));
        }
        let image = quorum.nodes[&leader].image().clone();
        assert!(quorum.disks[&leader].snapshot.is_some(), "the leader compacted");
        quorum.restart(leader);
        let restarted = &quorum.nodes[&leader];
        // At restart the node knows only its snapshot as committed; the entries after it
        // commit again once a leader tells it.
        let snapshot = quorum.disks[&leader].snapshot.as_ref().map(|s| s.index).expect("a snapshot");
        assert_eq!(restarted.raft().applied_index(), snapshot);
        assert_eq!(restarted.committed().snapshot_index(), snapshot);
        assert_eq!(
            restarted.image(),
            &MetadataImage::decode(&quorum.disks[&leader].snapshot.as_ref().unwrap().data).unwrap()
        );
        assert!(restarted.active().is_none(), "not active before it leads and catches up");
        // Leading again alone is not enough: a one-voter quorum restarted with entries after
        // its snapshot becomes active only once it has committed and applied them in its term.
        quorum.run_until("an active controller", |q| q.active().is_some());
        let active = quorum.active().expect("active");
        let node = &quorum.nodes[&active];
        assert_eq!(node.image(), node.active().expect("active").committed());
        assert_eq!(node.raft().applied_index(), node.raft().last_index());
        assert_eq!(node.image().brokers(), image.brokers());
        quorum.run_until("everyone caught up", |q| q.nodes.values().all(|n| n.image().brokers() == image.brokers()));
    }

    #[test]
    fn a_restarted_single_voter_applies_its_snapshot_and_activates_only_after_its_noop() {
        let mut quorum = Quorum::new(1, 2);
        let node = quorum.elect();
        for broker in 1..=3 {
            quorum.request(node, broker as u32, register(broker));
        }
        let image = quorum.nodes[&node].image().clone();
        quorum.restart(node);
        let restarted = &quorum.nodes[&node];
        assert!(restarted.committed().snapshot_index() > 0);
        assert!(restarted.active().is_none());
        assert!(restarted.raft().last_index() > restarted.raft().applied_index(), "entries after the snapshot");
        quorum.request(node, 9, |_| panic!("not active yet"));
        assert_eq!(quorum.answer(9), [&Answer::NotController { leader: None }]);
        quorum.elect();
        let node = &quorum.nodes[&node];
        assert_eq!(node.image(), &image);
        assert_eq!(node.raft().term_at(node.raft().applied_index()), Some(node.raft().term()));
    }
}
