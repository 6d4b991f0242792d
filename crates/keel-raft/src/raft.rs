//! The Raft node: roles, elections, replication, commitment.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_types::{Duration, Entropy, Instant, NodeId};

use crate::config::{quorum_index, Config, Mutation};
use crate::log::RaftLog;
use crate::message::{Durable, Entry, HardState, LogIndex, Message, Payload, Persist, Recovery, Snapshot, Term};

/// What a node is doing in its current term. Leader-only state lives in the leader variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Role {
    Follower {
        leader: Option<NodeId>,
    },
    /// Asking for pre-votes for `term + 1` without having changed its own term.
    PreCandidate {
        granted: BTreeSet<NodeId>,
    },
    Candidate {
        granted: BTreeSet<NodeId>,
    },
    Leader(LeaderState),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    heartbeat_deadline: Instant,
    /// When the leader next checks that an election quorum answered it since the last check.
    check_quorum_deadline: Instant,
    /// A leadership transfer in progress: target and when to give up.
    transfer: Option<(NodeId, Instant)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Progress {
    next_index: LogIndex,
    match_index: LogIndex,
    /// Answered since the last quorum check.
    recently_heard: bool,
}

/// The role of a node, for callers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RoleKind {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// Something for the application, in log order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    /// Replace the state machine with this snapshot.
    Snapshot(Snapshot),
    Entry(Entry),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposeError {
    /// Only the leader accepts proposals; `leader` is the one this node knows of.
    NotLeader { leader: Option<NodeId> },
    /// Too many uncommitted entries, or a leadership transfer is under way: retry later.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferError {
    NotLeader,
    /// The target is not a voter, or is this node.
    InvalidTarget,
}

/// One Raft node as a pure state machine. See the crate documentation for the contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Raft {
    config: Config,
    hard_state: HardState,
    log: RaftLog,
    commit_index: LogIndex,
    /// The last index handed to the application through [`Raft::poll_apply`].
    applied_index: LogIndex,
    /// A snapshot the application must load before any further entry.
    snapshot_to_apply: Option<Snapshot>,
    role: Role,
    election_deadline: Instant,
    /// Until when this node trusts its current leader to be alive (it heard from it within the
    /// minimum election timeout). Votes for other candidates are refused meanwhile.
    lease_until: Option<Instant>,
    persist_next_id: u64,
    /// Issued and not yet taken by the shell.
    persists_ready: Vec<Persist>,
    /// Issued and not yet reported done: id and the log's last index once it is done.
    persists_in_flight: VecDeque<(u64, LogIndex)>,
    /// The last index known to be on disk.
    durable_last_index: LogIndex,
    messages_ready: Vec<(NodeId, Message)>,
    /// Messages that may leave only once the persist with this id (and all before it) is done.
    messages_gated: Vec<(u64, NodeId, Message)>,
    /// Whether this node's disk can be trusted (see [`Recovery`]); anything but `Trusted`
    /// keeps it from voting and from standing for election.
    recovery: Recovery,
    /// While probing: each other voter's answer (its term and its log's last term and index).
    probe_answers: BTreeMap<NodeId, (Term, Term, LogIndex)>,
    /// While probing: when to ask again those that have not answered.
    probe_deadline: Instant,
    /// Drawn at every start: answers must echo it (see [`Message::Probe`]).
    probe_nonce: u64,
}

impl Raft {
    /// A node starting for the first time, with an empty log.
    pub fn new(config: Config, now: Instant, rng: &mut impl Entropy) -> Raft {
        Raft::restart(config, Durable::default(), now, rng)
    }

    /// A node starting from what it persisted. Panics if the config is invalid: a node must
    /// never run with quorums that break Raft's safety (see [`Config::validate`]).
    pub fn restart(config: Config, durable: Durable, now: Instant, rng: &mut impl Entropy) -> Raft {
        if let Err(e) = config.validate() {
            panic!("invalid Raft config: {e}");
        }
        let mut hard_state = durable.hard_state;
        if config.mutated(Mutation::ForgetVoteOnRestart) {
            hard_state.voted_for = None;
        }
        let recovery = if config.mutated(Mutation::TrustLostState) || !config.is_voter() {
            Recovery::Trusted
        } else {
            durable.recovery
        };
        let log = RaftLog { snapshot: durable.snapshot, entries: durable.entries };
        let snapshot_index = log.snapshot_index();
        let durable_last_index = log.last_index();
        let mut raft = Raft {
            config,
            hard_state,
            snapshot_to_apply: log.snapshot.clone(),
            log,
            commit_index: snapshot_index,
            applied_index: snapshot_index,
            role: Role::Follower { leader: None },
            election_deadline: now,
            lease_until: None,
            persist_next_id: 1,
            persists_ready: Vec::new(),
            persists_in_flight: VecDeque::new(),
            durable_last_index,
            messages_ready: Vec::new(),
            messages_gated: Vec::new(),
            recovery,
            probe_answers: BTreeMap::new(),
            probe_deadline: now,
            probe_nonce: if recovery == Recovery::Probing { rng.nonce() } else { 0 },
        };
        raft.reset_election_timer(now, rng);
        raft.probe(now);
        raft.advance_recovery();
        raft
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Fires whatever timers are due at `now`. Call it at [`Raft::poll_timeout`] (earlier calls
    /// do nothing harmful).
    pub fn handle_tick(&mut self, now: Instant, rng: &mut impl Entropy) {
        if let Role::Leader(leader) = &mut self.role {
            if leader.transfer.is_some_and(|(_, deadline)| now >= deadline) {
                leader.transfer = None;
            }
            if now >= leader.check_quorum_deadline {
                let heard = self
                    .config
                    .voters
                    .iter()
                    .filter(|v| **v == self.config.id || leader.progress.get(v).is_some_and(|p| p.recently_heard))
                    .count();
                for progress in leader.progress.values_mut() {
                    progress.recently_heard = false;
                }
                if heard < self.config.election_quorum {
                    // Cut off from an election quorum: another leader may be elected any moment.
                    let term = self.hard_state.term;
                    self.become_follower(now, rng, term, None);
                    return;
                }
                leader.check_quorum_deadline = now + self.config.election_timeout_min;
            }
            let Role::Leader(leader) = &mut self.role else { unreachable!() };
            if now >= leader.heartbeat_deadline {
                leader.heartbeat_deadline = now + self.config.heartbeat_interval;
                self.broadcast_append();
            }
            return;
        }
        if self.recovery == Recovery::Probing && now >= self.probe_deadline {
            self.probe(now);
        }
        if self.config.is_voter() && now >= self.election_deadline {
            if self.recovery == Recovery::Trusted {
                self.start_pre_vote(now, rng);
            } else {
                // A recovering voter never stands for election.
                self.reset_election_timer(now, rng);
            }
        }
    }

    /// A message from `from`.
    pub fn handle_message(&mut self, now: Instant, rng: &mut impl Entropy, from: NodeId, message: Message) {
        if from == self.config.id || !self.config.peers().any(|p| p == from) {
            return;
        }
        let term = message.term();
        match message {
            // Probes never change anyone's term either.
            Message::Probe { nonce, .. } => {
                // A voter still catching up answers with the log it knows of, not its own
                // shorter one: both voters' forgotten acknowledgements must stay covered.
                let mut last = (self.log.last_term(), self.log.last_index());
                if let Recovery::CatchingUp { last_log_index, last_log_term } = self.recovery {
                    last = last.max((last_log_term, last_log_index));
                }
                let reply = Message::ProbeResponse {
                    term: self.hard_state.term,
                    nonce,
                    last_log_index: last.1,
                    last_log_term: last.0,
                };
                // Gated: the answer speaks for what is on disk.
                self.send(from, reply);
                return;
            }
            Message::ProbeResponse { term, nonce, last_log_index, last_log_term } => {
                let ours = nonce == self.probe_nonce;
                if self.recovery == Recovery::Probing && ours && self.config.voters.contains(&from) {
                    self.probe_answers.insert(from, (term, last_log_term, last_log_index));
                    self.advance_recovery();
                }
                return;
            }
            // Pre-votes never change anyone's term.
            Message::PreVote { term, last_log_index, last_log_term } => {
                self.handle_pre_vote(now, from, term, last_log_index, last_log_term);
                return;
            }
            Message::PreVoteResponse { term, granted } => {
                if !granted && term > self.hard_state.term {
                    self.become_follower(now, rng, term, None);
                } else if granted && term == Term(self.hard_state.term.0 + 1) {
                    self.count_pre_vote(now, rng, from);
                }
                return;
            }
            _ => {}
        }
        if term > self.hard_state.term {
            if matches!(message, Message::RequestVote { transfer: false, .. }) && self.in_lease(now) {
                // A leader we heard from recently is alive: this candidate is disruptive.
                return;
            }
            let leader = match message {
                Message::AppendEntries { .. } | Message::InstallSnapshot { .. } => Some(from),
                _ => None,
            };
            self.become_follower(now, rng, term, leader);
        }
        if term < self.hard_state.term {
            // Tell a stale sender the current term so it steps down; ignore stale answers.
            let my_term = self.hard_state.term;
            let reply = match message {
                Message::AppendEntries { .. } => {
                    Some(Message::AppendEntriesResponse { term: my_term, success: false, match_index: 0 })
                }
                Message::InstallSnapshot { .. } => {
                    Some(Message::InstallSnapshotResponse { term: my_term, match_index: 0 })
                }
                Message::RequestVote { .. } => Some(Message::RequestVoteResponse { term: my_term, granted: false }),
                _ => None,
            };
            if let Some(reply) = reply {
                self.send(from, reply);
            }
            return;
        }
        match message {
            Message::RequestVote { last_log_index, last_log_term, .. } => {
                self.handle_request_vote(now, rng, from, last_log_index, last_log_term)
            }
            Message::RequestVoteResponse { granted, .. } => {
                if let Role::Candidate { granted: votes } = &mut self.role {
                    if granted && self.config.voters.contains(&from) {
                        votes.insert(from);
                        if votes.len() >= self.config.election_quorum {
                            self.become_leader(now);
                        }
                    }
                }
            }
            Message::AppendEntries { prev_log_index, prev_log_term, entries, leader_commit, .. } => {
                if !self.accept_leader(now, rng, from) {
                    return;
                }
                self.handle_append_entries(from, prev_log_index, prev_log_term, entries, leader_commit);
            }
            Message::AppendEntriesResponse { success, match_index, .. } => {
                self.handle_append_response(from, success, match_index)
            }
            Message::InstallSnapshot { snapshot, .. } => {
                if !self.accept_leader(now, rng, from) {
                    return;
                }
                self.handle_install_snapshot(from, snapshot);
            }
            Message::InstallSnapshotResponse { match_index, .. } => {
                self.handle_append_response(from, true, match_index)
            }
            Message::TimeoutNow { .. } => {
                if self.config.is_voter() && self.recovery == Recovery::Trusted && !matches!(self.role, Role::Leader(_))
                {
                    self.start_election(now, rng, true);
                }
            }
            Message::PreVote { .. }
            | Message::PreVoteResponse { .. }
            | Message::Probe { .. }
            | Message::ProbeResponse { .. } => unreachable!("handled above"),
        }
        self.advance_recovery();
    }

    /// The shell made persist `id` (and every earlier one) durable.
    pub fn handle_persisted(&mut self, now: Instant, id: u64) {
        while let Some(&(front, last_index)) = self.persists_in_flight.front() {
            if front > id {
                break;
            }
            self.persists_in_flight.pop_front();
            self.durable_last_index = last_index;
        }
        let completed = id;
        let mut still_gated = Vec::new();
        for (gate, to, message) in std::mem::take(&mut self.messages_gated) {
            if gate <= completed {
                self.messages_ready.push((to, message));
            } else {
                still_gated.push((gate, to, message));
            }
        }
        self.messages_gated = still_gated;
        if matches!(self.role, Role::Leader(_)) {
            self.maybe_commit();
        }
        if matches!(self.role, Role::Candidate { .. })
            && self.config.election_quorum <= 1
            && self.persists_in_flight.is_empty()
        {
            self.become_leader(now);
        }
    }

    /// Appends a command if this node leads. Returns the index it will have once committed.
    pub fn propose(&mut self, _now: Instant, command: Vec<u8>) -> Result<LogIndex, ProposeError> {
        let Role::Leader(leader) = &self.role else {
            return Err(ProposeError::NotLeader { leader: self.leader() });
        };
        if leader.transfer.is_some()
            || self.log.last_index() - self.commit_index >= self.config.uncommitted_entries_max as u64
        {
            return Err(ProposeError::Busy);
        }
        let index = self.append_as_leader(Payload::Command(command));
        self.broadcast_append();
        Ok(index)
    }

    /// Hands leadership to `target`: once it has every entry it gets TimeoutNow and starts an
    /// election it wins without waiting out its timeout. Proposals are refused meanwhile.
    pub fn transfer_leadership(&mut self, now: Instant, target: NodeId) -> Result<(), TransferError> {
        let Role::Leader(leader) = &mut self.role else { return Err(TransferError::NotLeader) };
        if target == self.config.id || !self.config.voters.contains(&target) {
            return Err(TransferError::InvalidTarget);
        }
        leader.transfer = Some((target, now + self.config.transfer_timeout));
        let caught_up = leader.progress[&target].match_index == self.log.last_index();
        if caught_up {
            let term = self.hard_state.term;
            self.send(target, Message::TimeoutNow { term });
        } else {
            self.send_append(target);
        }
        Ok(())
    }

    /// The application took a snapshot of its state after applying `index`: drop the log up
    /// to it. `index` must be applied already.
    pub fn compact(&mut self, index: LogIndex, data: Vec<u8>) {
        assert!(index <= self.applied_index, "snapshot at {index} beyond applied {}", self.applied_index);
        if index <= self.log.snapshot_index() {
            return;
        }
        let term = self.log.term_at(index).expect("applied entries are in the log");
        let snapshot = Snapshot { index, term, data };
        self.log.install(snapshot.clone());
        self.persist(false, Some(snapshot), None, Vec::new());
    }

    /// Moves every stored instant `earlier_by` into the past and lowers every term by
    /// `lower_terms_by`. Raft compares times and terms only with each other, so a node
    /// relabelled this way behaves exactly as before if later inputs are relabelled the same
    /// way. The model checker uses it to keep states independent of absolute time and terms;
    /// a lease that has run out by `now_after` is forgotten so equal behaviour means equal state.
    pub fn relabel(&mut self, earlier_by: Duration, lower_terms_by: u64, now_after: Instant) {
        let shift = |t: &mut Instant| t.0 = t.0.saturating_sub(earlier_by.0);
        let lower = |t: &mut Term| {
            if t.0 != 0 {
                assert!(t.0 > lower_terms_by, "relabelling would move term {} to or below zero", t.0);
                t.0 -= lower_terms_by;
            }
        };
        shift(&mut self.election_deadline);
        shift(&mut self.probe_deadline);
        if let Some(lease) = &mut self.lease_until {
            shift(lease);
        }
        if self.lease_until.is_some_and(|l| l <= now_after) {
            self.lease_until = None;
        }
        if let Role::Leader(leader) = &mut self.role {
            shift(&mut leader.heartbeat_deadline);
            shift(&mut leader.check_quorum_deadline);
            if let Some((_, deadline)) = &mut leader.transfer {
                shift(deadline);
            }
        }
        if !self.config.is_voter() || matches!(self.role, Role::Leader(_)) {
            // The election timer is not running; keep its value from telling states apart.
            self.election_deadline = Instant::ZERO;
        }
        if self.recovery != Recovery::Probing {
            self.probe_deadline = Instant::ZERO;
        }
        lower(&mut self.hard_state.term);
        if let Recovery::CatchingUp { last_log_term, .. } = &mut self.recovery {
            lower(last_log_term);
        }
        for (term, last_log_term, _) in self.probe_answers.values_mut() {
            lower(term);
            lower(last_log_term);
        }
        if let Some(s) = &mut self.log.snapshot {
            lower(&mut s.term);
        }
        for e in &mut self.log.entries {
            lower(&mut e.term);
        }
        if let Some(s) = &mut self.snapshot_to_apply {
            lower(&mut s.term);
        }
        for p in &mut self.persists_ready {
            if let Some(h) = &mut p.hard_state {
                lower(&mut h.term);
            }
            if let Some(Recovery::CatchingUp { last_log_term, .. }) = &mut p.recovery {
                lower(last_log_term);
            }
            if let Some(s) = &mut p.snapshot {
                lower(&mut s.term);
            }
            for e in &mut p.append {
                lower(&mut e.term);
            }
        }
        for (_, m) in &mut self.messages_ready {
            m.lower_terms(lower_terms_by);
        }
        for (_, _, m) in &mut self.messages_gated {
            m.lower_terms(lower_terms_by);
        }
        if self.persists_ready.is_empty() && self.persists_in_flight.is_empty() {
            // Persist ids only order writes that are still outstanding.
            self.persist_next_id = 1;
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// Writes to make durable, in order. Report each with [`Raft::handle_persisted`].
    pub fn drain_persists(&mut self) -> Vec<Persist> {
        std::mem::take(&mut self.persists_ready)
    }

    /// Messages that may be sent now.
    pub fn drain_messages(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.messages_ready)
    }

    /// The next committed entry (or snapshot) for the application.
    pub fn poll_apply(&mut self) -> Option<Apply> {
        if let Some(snapshot) = self.snapshot_to_apply.take() {
            return Some(Apply::Snapshot(snapshot));
        }
        if self.applied_index >= self.commit_index {
            return None;
        }
        let entry =
            self.log.entry(self.applied_index + 1).expect("committed entries after the snapshot are in the log");
        self.applied_index += 1;
        Some(Apply::Entry(entry.clone()))
    }

    /// When [`Raft::handle_tick`] next has something to do; `None` for an observer, which has
    /// no timers.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.role {
            Role::Leader(leader) => {
                let mut next = leader.heartbeat_deadline.min(leader.check_quorum_deadline);
                if let Some((_, deadline)) = leader.transfer {
                    next = next.min(deadline);
                }
                Some(next)
            }
            _ if self.recovery == Recovery::Probing => Some(self.election_deadline.min(self.probe_deadline)),
            _ if self.config.is_voter() => Some(self.election_deadline),
            _ => None,
        }
    }

    // ---- queries ------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn term(&self) -> Term {
        self.hard_state.term
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Whether this node trusts its own state (see [`Recovery`]).
    pub fn recovery(&self) -> Recovery {
        self.recovery
    }

    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower { .. } => RoleKind::Follower,
            Role::PreCandidate { .. } => RoleKind::PreCandidate,
            Role::Candidate { .. } => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }

    /// The leader of the current term as far as this node knows.
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Follower { leader } => leader,
            Role::Leader(_) => Some(self.config.id),
            _ => None,
        }
    }

    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    pub fn applied_index(&self) -> LogIndex {
        self.applied_index
    }

    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    pub fn last_term(&self) -> Term {
        self.log.last_term()
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.log.snapshot.as_ref()
    }

    /// Entries after the snapshot.
    pub fn entries(&self) -> &[Entry] {
        &self.log.entries
    }

    /// The term at `index` if the log knows it (see the snapshot for compacted indexes).
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// Every term this node holds (current term, log and snapshot terms, queued messages).
    pub fn terms(&self) -> Vec<Term> {
        let mut terms = vec![self.hard_state.term, self.log.snapshot_term()];
        if let Recovery::CatchingUp { last_log_term, .. } = self.recovery {
            terms.push(last_log_term);
        }
        terms.extend(self.probe_answers.values().flat_map(|(term, last_log_term, _)| [*term, *last_log_term]));
        for p in &self.persists_ready {
            terms.extend(p.hard_state.map(|h| h.term));
            if let Some(Recovery::CatchingUp { last_log_term, .. }) = p.recovery {
                terms.push(last_log_term);
            }
            terms.extend(p.snapshot.as_ref().map(|s| s.term));
            terms.extend(p.append.iter().map(|e| e.term));
        }
        terms.extend(self.log.entries.iter().map(|e| e.term));
        terms.extend(self.messages_ready.iter().flat_map(|(_, m)| m.terms()));
        terms.extend(self.messages_gated.iter().flat_map(|(_, _, m)| m.terms()));
        terms.retain(|t| t.0 != 0);
        terms
    }

    /// One line for traces: role, term, vote, log (index:term), commit.
    pub fn describe(&self) -> String {
        let role = match &self.role {
            Role::Follower { leader: Some(l) } => format!("follower of n{}", l.0),
            Role::Follower { leader: None } => "follower".to_string(),
            Role::PreCandidate { granted } => format!("pre-candidate ({} pre-votes)", granted.len()),
            Role::Candidate { granted } => format!("candidate ({} votes)", granted.len()),
            Role::Leader(_) => "LEADER".to_string(),
        };
        let vote = self.hard_state.voted_for.map_or("-".to_string(), |v| format!("n{}", v.0));
        let role = match self.recovery {
            Recovery::Trusted => role,
            Recovery::Probing => format!("{role}, recovering: probing"),
            Recovery::CatchingUp { last_log_index, last_log_term } => {
                format!("{role}, recovering: catching up to {last_log_index}:t{last_log_term}")
            }
        };
        let mut log = String::new();
        if let Some(s) = &self.log.snapshot {
            log.push_str(&format!("snap@{}:{} ", s.index, s.term));
        }
        for e in &self.log.entries {
            log.push_str(&format!("{e} "));
        }
        format!(
            "n{} t{} vote {} {} commit {} log [{}]",
            self.config.id.0,
            self.hard_state.term,
            vote,
            role,
            self.commit_index,
            log.trim_end()
        )
    }

    /// Invariants that hold for one node at every step. Cluster-wide properties are checked by
    /// the simulator and the model checker, which see every node.
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("n{}: {m}", self.config.id.0));
        let snapshot_index = self.log.snapshot_index();
        let mut previous_term = self.log.snapshot_term();
        for (expected, e) in (snapshot_index + 1..).zip(&self.log.entries) {
            if e.index != expected {
                return fail(format!("log has a gap: entry {} where {expected} belongs", e.index));
            }
            if e.term < previous_term {
                return fail(format!(
                    "entry {} has term {} below the term before it ({previous_term})",
                    e.index, e.term
                ));
            }
            previous_term = e.term;
        }
        if self.log.last_term() > self.hard_state.term {
            return fail(format!(
                "last log term {} exceeds current term {}",
                self.log.last_term(),
                self.hard_state.term
            ));
        }
        if !(snapshot_index <= self.applied_index
            && self.applied_index <= self.commit_index
            && self.commit_index <= self.log.last_index())
        {
            return fail(format!(
                "expected snapshot {snapshot_index} <= applied {} <= commit {} <= last {}",
                self.applied_index,
                self.commit_index,
                self.log.last_index()
            ));
        }
        match &self.role {
            Role::Leader(leader) => {
                if self.config.is_voter() && self.hard_state.voted_for != Some(self.config.id) {
                    return fail("a leader must have voted for itself".into());
                }
                for (peer, p) in &leader.progress {
                    if p.match_index > self.log.last_index() || p.next_index <= p.match_index {
                        return fail(format!("progress of n{} is inconsistent: {p:?}", peer.0));
                    }
                }
            }
            Role::Candidate { granted } => {
                if self.hard_state.voted_for != Some(self.config.id) || !granted.contains(&self.config.id) {
                    return fail("a candidate votes for itself".into());
                }
            }
            Role::PreCandidate { .. } | Role::Follower { .. } => {}
        }
        if !self.config.is_voter() && !matches!(self.role, Role::Follower { .. }) {
            return fail("an observer only ever follows".into());
        }
        Ok(())
    }

    // ---- elections ----------------------------------------------------------------------

    fn in_lease(&self, now: Instant) -> bool {
        matches!(self.role, Role::Leader(_)) || self.lease_until.is_some_and(|l| now < l)
    }

    fn reset_election_timer(&mut self, now: Instant, rng: &mut impl Entropy) {
        let (min, max) = (self.config.election_timeout_min.0, self.config.election_timeout_max.0);
        let timeout = if self.config.mutated(Mutation::FixedElectionTimeout) || min == max {
            min
        } else {
            // Whole milliseconds keep the model checker's branching small; jitter finer than
            // that buys nothing on a real network.
            let (min_ms, max_ms) = (min / 1_000_000, max / 1_000_000);
            if min_ms < max_ms && min % 1_000_000 == 0 {
                rng.range_inclusive(min_ms, max_ms) * 1_000_000
            } else {
                rng.range_inclusive(min, max)
            }
        };
        self.election_deadline = now + Duration(timeout);
    }

    fn log_up_to_date(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        (last_log_term, last_log_index) >= (self.log.last_term(), self.log.last_index())
    }

    /// Whether a candidate's log earns this node's vote: at least as up to date as its own, and
    /// while it recovers, as the most up-to-date log it heard of (none while it still probes).
    fn may_vote_for(&self, last_log_index: LogIndex, last_log_term: Term) -> bool {
        let recovered = match self.recovery {
            Recovery::Trusted => true,
            Recovery::Probing => false,
            Recovery::CatchingUp { last_log_index: index, last_log_term: term } => {
                (last_log_term, last_log_index) >= (term, index)
            }
        };
        recovered && self.log_up_to_date(last_log_index, last_log_term)
    }

    fn start_pre_vote(&mut self, now: Instant, rng: &mut impl Entropy) {
        self.reset_election_timer(now, rng);
        self.lease_until = None;
        self.role = Role::PreCandidate { granted: BTreeSet::from([self.config.id]) };
        if self.config.election_quorum <= 1 {
            self.start_election(now, rng, false);
            return;
        }
        let message = Message::PreVote {
            term: Term(self.hard_state.term.0 + 1),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
        };
        for voter in self.config.voters.clone() {
            if voter != self.config.id {
                self.send_now(voter, message.clone());
            }
        }
    }

    fn count_pre_vote(&mut self, now: Instant, rng: &mut impl Entropy, from: NodeId) {
        let Role::PreCandidate { granted } = &mut self.role else { return };
        if !self.config.voters.contains(&from) {
            return;
        }
        granted.insert(from);
        if granted.len() >= self.config.election_quorum {
            self.start_election(now, rng, false);
        }
    }

    fn handle_pre_vote(
        &mut self,
        now: Instant,
        from: NodeId,
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let granted = self.config.is_voter()
            && term > self.hard_state.term
            && !self.in_lease(now)
            && self.may_vote_for(last_log_index, last_log_term);
        // A grant answers with the term asked about; a refusal with our own, so a candidate
        // that is behind learns the current term.
        let reply_term = if granted { term } else { self.hard_state.term };
        self.send_now(from, Message::PreVoteResponse { term: reply_term, granted });
    }

    fn start_election(&mut self, now: Instant, rng: &mut impl Entropy, transfer: bool) {
        self.hard_state.term = Term(self.hard_state.term.0 + 1);
        self.hard_state.voted_for = Some(self.config.id);
        self.persist(true, None, None, Vec::new());
        self.reset_election_timer(now, rng);
        self.lease_until = None;
        self.role = Role::Candidate { granted: BTreeSet::from([self.config.id]) };
        if self.config.election_quorum <= 1 {
            // Its own vote is the quorum, but a leader's messages carry its term, which must
            // be on disk first or a crash could reuse the term for other entries: it leads
            // once the vote is durable (see handle_persisted).
            return;
        }
        let message = Message::RequestVote {
            term: self.hard_state.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        for voter in self.config.voters.clone() {
            if voter != self.config.id {
                self.send(voter, message.clone());
            }
        }
    }

    fn handle_request_vote(
        &mut self,
        now: Instant,
        rng: &mut impl Entropy,
        from: NodeId,
        last_log_index: LogIndex,
        last_log_term: Term,
    ) {
        let vote_free = self.hard_state.voted_for.is_none_or(|v| v == from);
        let granted = self.config.is_voter()
            && self.config.voters.contains(&from)
            && matches!(self.role, Role::Follower { .. } | Role::PreCandidate { .. })
            && vote_free
            && self.may_vote_for(last_log_index, last_log_term);
        if granted {
            if self.hard_state.voted_for.is_none() {
                self.hard_state.voted_for = Some(from);
                self.persist(true, None, None, Vec::new());
            }
            self.role = Role::Follower { leader: None };
            self.reset_election_timer(now, rng);
        }
        let term = self.hard_state.term;
        // Gated: a grant must be on disk before the candidate can count it.
        self.send(from, Message::RequestVoteResponse { term, granted });
    }

    // ---- recovery -----------------------------------------------------------------------
    //
    // A voter whose Raft state is gone may have voted, in a term it no longer knows, for a
    // candidate still collecting votes, and may have acknowledged entries that were committed
    // with its help and that some other voters lack. Raft's safety rests on neither being
    // forgotten. So it asks every other voter for its term and log end. Every candidate it
    // voted for had persisted that term before asking, and every leader it acknowledged held
    // those entries, so once all have answered: no term up to the highest it heard of is safe
    // to vote in (it takes that term and counts its vote as spent in it), and no candidate is
    // safe to vote for whose log is behind the most up-to-date one it heard of, because that
    // log holds every entry committed with the forgotten acknowledgements (the committing
    // quorum's other members all answered). It votes again once its own log has caught up
    // with that one, and meanwhile votes only for candidates whose log is at least that up to
    // date (so voters recovering together can still elect the one that holds everything).
    // Hearing from a majority would not do: a candidate it voted for, or the only other
    // holder of an entry, may be among those that did not answer.

    /// Asks every other voter that has not answered yet, and again after the minimum election
    /// timeout (a leader's heartbeats do not hold that timer back).
    fn probe(&mut self, now: Instant) {
        if self.recovery != Recovery::Probing {
            return;
        }
        self.probe_deadline = now + self.config.election_timeout_min;
        let message = Message::Probe { term: self.hard_state.term, nonce: self.probe_nonce };
        for voter in self.config.voters.clone() {
            if voter != self.config.id && !self.probe_answers.contains_key(&voter) {
                self.send_now(voter, message.clone());
            }
        }
    }

    /// Moves through recovery as far as the answers and the log allow.
    fn advance_recovery(&mut self) {
        if self.recovery == Recovery::Probing {
            let id = self.config.id;
            if !self.config.voters.iter().all(|v| *v == id || self.probe_answers.contains_key(v)) {
                return;
            }
            let answers = std::mem::take(&mut self.probe_answers);
            let highest_term = answers.values().map(|a| a.0).max().unwrap_or_default();
            let (last_log_term, last_log_index) = answers.values().map(|a| (a.1, a.2)).max().unwrap_or_default();
            if highest_term > self.hard_state.term {
                self.hard_state.term = highest_term;
                self.hard_state.voted_for = None;
                self.role = Role::Follower { leader: None };
            }
            if highest_term == self.hard_state.term && self.hard_state.voted_for.is_none() {
                // Its vote in that term may be spent already.
                self.hard_state.voted_for = Some(id);
            }
            self.recovery = Recovery::CatchingUp { last_log_index, last_log_term };
            self.persist_recovery(true);
        }
        if let Recovery::CatchingUp { last_log_index, last_log_term } = self.recovery {
            if (self.log.last_term(), self.log.last_index()) < (last_log_term, last_log_index) {
                return;
            }
            self.recovery = Recovery::Trusted;
            self.persist_recovery(false);
        }
    }

    fn become_follower(&mut self, now: Instant, rng: &mut impl Entropy, term: Term, leader: Option<NodeId>) {
        let was_leader = matches!(self.role, Role::Leader(_));
        if term > self.hard_state.term {
            self.hard_state = HardState { term, voted_for: None };
            self.persist(true, None, None, Vec::new());
        }
        self.role = Role::Follower { leader };
        if was_leader {
            self.lease_until = None;
            self.reset_election_timer(now, rng);
        }
    }

    /// A leader of the current term spoke. Returns false if this node is itself a leader of
    /// that term, which only a broken quorum configuration allows; the message is ignored.
    fn accept_leader(&mut self, now: Instant, rng: &mut impl Entropy, leader: NodeId) -> bool {
        if matches!(self.role, Role::Leader(_)) {
            return false;
        }
        self.role = Role::Follower { leader: Some(leader) };
        self.lease_until = Some(now + self.config.election_timeout_min);
        self.reset_election_timer(now, rng);
        true
    }

    fn become_leader(&mut self, now: Instant) {
        let next_index = self.log.last_index() + 1;
        let progress =
            self.config.peers().map(|p| (p, Progress { next_index, match_index: 0, recently_heard: true })).collect();
        self.role = Role::Leader(LeaderState {
            progress,
            heartbeat_deadline: now + self.config.heartbeat_interval,
            check_quorum_deadline: now + self.config.election_timeout_min,
            transfer: None,
        });
        self.lease_until = None;
        // Entries of earlier terms commit only together with one of this term.
        self.append_as_leader(Payload::Noop);
        self.broadcast_append();
    }

    // ---- replication --------------------------------------------------------------------

    fn append_as_leader(&mut self, payload: Payload) -> LogIndex {
        let entry = Entry { index: self.log.last_index() + 1, term: self.hard_state.term, payload };
        let index = entry.index;
        self.log.append(entry.clone());
        // The leader counts itself toward commitment once this is durable (handle_persisted).
        self.persist(false, None, None, vec![entry]);
        index
    }

    fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.config.peers().collect();
        for peer in peers {
            self.send_append(peer);
        }
    }

    fn send_append(&mut self, peer: NodeId) {
        let Role::Leader(leader) = &self.role else { return };
        let next_index = leader.progress[&peer].next_index;
        let term = self.hard_state.term;
        let message = if next_index <= self.log.snapshot_index() {
            let snapshot = self.log.snapshot.clone().expect("a snapshot covers compacted entries");
            Message::InstallSnapshot { term, snapshot }
        } else {
            let prev_log_index = next_index - 1;
            let prev_log_term = self.log.term_at(prev_log_index).expect("the entry before next_index exists");
            let entries = self.log.entries_from(next_index, self.config.append_entries_max);
            Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit: self.commit_index }
        };
        // A leader's own term and vote reached disk before it asked for votes, and its entries
        // may travel while it writes them (it counts itself only once they are durable).
        self.send_now(peer, message);
    }

    fn handle_append_entries(
        &mut self,
        from: NodeId,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: LogIndex,
    ) {
        let term = self.hard_state.term;
        let last_new = prev_log_index + entries.len() as u64;
        let snapshot_index = self.log.snapshot_index();
        let (mut prev_index, mut prev_term) = (prev_log_index, prev_log_term);
        if prev_index < snapshot_index {
            // Everything up to the snapshot is committed, so it matches the leader's log.
            entries.retain(|e| e.index > snapshot_index);
            prev_index = snapshot_index;
            prev_term = self.log.snapshot_term();
            if entries.is_empty() {
                self.send(from, Message::AppendEntriesResponse { term, success: true, match_index: last_new });
                return;
            }
        }
        if prev_index > self.log.last_index() {
            let hint = self.log.last_index();
            self.send(from, Message::AppendEntriesResponse { term, success: false, match_index: hint });
            return;
        }
        if self.log.term_at(prev_index) != Some(prev_term) {
            // Skip back over the whole conflicting term in one round trip.
            let hint = self.log.first_index_of_term_at(prev_index).saturating_sub(1).min(prev_index - 1);
            self.send(from, Message::AppendEntriesResponse { term, success: false, match_index: hint });
            return;
        }
        let mut truncate_after = None;
        let mut append = Vec::new();
        for entry in entries {
            if append.is_empty() && truncate_after.is_none() {
                match self.log.term_at(entry.index) {
                    Some(t) if t == entry.term => continue,
                    Some(_) => {
                        truncate_after = Some(entry.index - 1);
                        self.log.truncate_after(entry.index - 1);
                    }
                    None => {}
                }
            }
            self.log.append(entry.clone());
            append.push(entry);
        }
        if truncate_after.is_some() || !append.is_empty() {
            self.persist(false, None, truncate_after, append);
        }
        let new_commit = leader_commit.min(last_new);
        if new_commit > self.commit_index {
            self.commit_index = new_commit;
        }
        self.send(from, Message::AppendEntriesResponse { term, success: true, match_index: last_new });
    }

    fn handle_install_snapshot(&mut self, from: NodeId, snapshot: Snapshot) {
        let term = self.hard_state.term;
        let index = snapshot.index;
        // Committed entries, our own snapshot, and a matching entry (by log matching) all mean
        // we already hold everything the snapshot covers.
        let covered = index <= self.commit_index
            || index <= self.log.snapshot_index()
            || self.log.term_at(index) == Some(snapshot.term);
        if !covered {
            // Not covered means our entry at the snapshot's index (if any) has another term, so
            // every entry after it conflicts with the leader's log: drop them all (Raft,
            // figure 13, step 7), in memory and on disk.
            self.log.install(snapshot.clone());
            self.log.truncate_after(index);
            self.commit_index = index;
            self.applied_index = index;
            self.snapshot_to_apply = Some(snapshot.clone());
            self.persist(false, Some(snapshot), Some(index), Vec::new());
        }
        self.send(from, Message::InstallSnapshotResponse { term, match_index: index });
    }

    fn handle_append_response(&mut self, from: NodeId, success: bool, match_index: LogIndex) {
        let last_index = self.log.last_index();
        let term = self.hard_state.term;
        let Role::Leader(leader) = &mut self.role else { return };
        let Some(progress) = leader.progress.get_mut(&from) else { return };
        progress.recently_heard = true;
        if success {
            let match_index = match_index.min(last_index);
            if match_index > progress.match_index {
                progress.match_index = match_index;
            }
            progress.next_index = progress.next_index.max(progress.match_index + 1);
            let caught_up = progress.match_index == last_index;
            let more = progress.next_index <= last_index;
            if caught_up && leader.transfer.is_some_and(|(target, _)| target == from) {
                self.send_now(from, Message::TimeoutNow { term });
            }
            self.maybe_commit();
            if more {
                self.send_append(from);
            }
        } else {
            if match_index < progress.match_index {
                // It holds nothing above the hint, yet answered for more before: its disk was
                // replaced (or this answer is older than that one). Start over from the hint.
                progress.match_index = match_index;
            }
            let next_index = (match_index + 1).max(progress.match_index + 1);
            if next_index < progress.next_index {
                progress.next_index = next_index;
                self.send_append(from);
            }
        }
    }

    fn maybe_commit(&mut self) {
        let Role::Leader(leader) = &self.role else { return };
        let own = self.durable_last_index.min(self.log.last_index());
        let mut matches: Vec<LogIndex> = self
            .config
            .voters
            .iter()
            .map(|v| if *v == self.config.id { own } else { leader.progress[v].match_index })
            .collect();
        let candidate = quorum_index(&mut matches, self.config.replication_quorum);
        if candidate <= self.commit_index {
            return;
        }
        // Raft's figure 8: counting replicas proves nothing for an entry of an older term; it
        // commits only underneath an entry of the leader's own term.
        let current_term = self.log.term_at(candidate) == Some(self.hard_state.term);
        if current_term || self.config.mutated(Mutation::CommitOlderTermByCount) {
            self.commit_index = candidate;
        }
    }

    // ---- effects ------------------------------------------------------------------------

    fn persist(
        &mut self,
        hard_state: bool,
        snapshot: Option<Snapshot>,
        truncate_after: Option<LogIndex>,
        append: Vec<Entry>,
    ) {
        let id = self.persist_next_id;
        self.persist_next_id += 1;
        let hard_state = hard_state.then_some(self.hard_state);
        self.persists_ready.push(Persist { id, hard_state, recovery: None, snapshot, truncate_after, append });
        self.persists_in_flight.push_back((id, self.log.last_index()));
    }

    /// Persists the recovery state, with the hard state if asked (one write).
    fn persist_recovery(&mut self, hard_state: bool) {
        self.persist(hard_state, None, None, Vec::new());
        let persist = self.persists_ready.last_mut().expect("just pushed");
        persist.recovery = Some(self.recovery);
    }

    /// Sends once every persist issued so far is durable.
    fn send(&mut self, to: NodeId, message: Message) {
        match self.persists_in_flight.back() {
            Some(&(id, _)) => self.messages_gated.push((id, to, message)),
            None => self.messages_ready.push((to, message)),
        }
    }

    /// Sends without waiting for the disk: the message depends on nothing unpersisted.
    fn send_now(&mut self, to: NodeId, message: Message) {
        self.messages_ready.push((to, message));
    }
}
