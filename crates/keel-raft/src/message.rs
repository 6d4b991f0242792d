//! What Raft nodes say to each other, and what they keep on disk.

use keel_types::NodeId;

/// Raft's election term.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Term(pub u64);

impl std::fmt::Display for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A position in the Raft log. Index 0 is the empty prefix; the first entry has index 1.
pub type LogIndex = u64;

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Payload {
    /// The entry a new leader appends so that entries of earlier terms commit with it.
    Noop,
    /// A command for the state machine, opaque to Raft.
    Command(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub index: LogIndex,
    pub term: Term,
    pub payload: Payload,
}

/// A state machine snapshot covering every entry up to and including `index`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub index: LogIndex,
    pub term: Term,
    /// The application's serialized state, opaque to Raft.
    pub data: Vec<u8>,
}

/// Term and vote: what a node must never forget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
}

/// Whether a voter's disk holds everything it ever promised. A voter whose Raft state is gone
/// (a replaced disk, or a first start that cannot be told from one) may have voted and
/// acknowledged entries it no longer remembers; until it has learnt enough from the other
/// voters it neither votes nor stands for election. See [`crate::Raft`]'s recovery rules in
/// docs/raft.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Recovery {
    /// The disk holds every vote and acknowledgement this node ever gave.
    #[default]
    Trusted,
    /// The state is gone: the node asks every other voter for its term and log end.
    Probing,
    /// Every other voter answered. The node's term was raised past any election it may have
    /// voted in; it votes again once its own log is at least as up to date as the most up to
    /// date log it heard of, which holds every entry committed with its forgotten help.
    CatchingUp { last_log_index: LogIndex, last_log_term: Term },
}

/// Everything a node persisted, handed back to [`crate::Raft::restart`] after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Durable {
    pub hard_state: HardState,
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    pub recovery: Recovery,
}

impl Durable {
    /// What a voter whose Raft state is gone starts from: nothing, and no trust in it.
    pub fn lost() -> Durable {
        Durable { recovery: Recovery::Probing, ..Durable::default() }
    }

    /// Applies one persist operation, as a storage layer does once it is on disk.
    pub fn apply(&mut self, persist: &Persist) {
        if let Some(hard_state) = persist.hard_state {
            self.hard_state = hard_state;
        }
        if let Some(recovery) = persist.recovery {
            self.recovery = recovery;
        }
        // The same rules the in-memory log follows, so disk and memory cannot drift apart.
        let mut log =
            crate::log::RaftLog { snapshot: self.snapshot.take(), entries: std::mem::take(&mut self.entries) };
        if let Some(snapshot) = &persist.snapshot {
            log.install(snapshot.clone());
        }
        if let Some(after) = persist.truncate_after {
            log.truncate_after(after);
        }
        self.snapshot = log.snapshot;
        self.entries = log.entries;
        self.entries.extend(persist.append.iter().cloned());
    }
}

/// One write the shell must make durable, in order, before reporting it with
/// [`crate::Raft::handle_persisted`]. Its parts apply in field order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Persist {
    pub id: u64,
    pub hard_state: Option<HardState>,
    /// Written together with `hard_state` (in one atomic write where the store keeps both in
    /// one file).
    pub recovery: Option<Recovery>,
    /// A snapshot that replaces every entry up to its index. Entries after it are kept only
    /// when they continue the snapshot (their index is its index + 1 onwards).
    pub snapshot: Option<Snapshot>,
    /// Remove every entry above this index.
    pub truncate_after: Option<LogIndex>,
    pub append: Vec<Entry>,
}

/// A Raft message. Every message carries the sender's term.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum Message {
    /// "Would you vote for me in `term`?" Asked before a real election so a node that was cut
    /// off cannot disrupt a healthy leader; nobody changes state for it.
    PreVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
    PreVoteResponse {
        term: Term,
        granted: bool,
    },
    /// `transfer` is set when the current leader asked for this election (TimeoutNow), which
    /// lets it through a voter's leader lease.
    RequestVote {
        term: Term,
        last_log_index: LogIndex,
        last_log_term: Term,
        transfer: bool,
    },
    RequestVoteResponse {
        term: Term,
        granted: bool,
    },
    AppendEntries {
        term: Term,
        prev_log_index: LogIndex,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: LogIndex,
    },
    /// On success `match_index` is the last index known to match the leader. On failure it is a
    /// hint: the follower holds nothing useful above it.
    AppendEntriesResponse {
        term: Term,
        success: bool,
        match_index: LogIndex,
    },
    InstallSnapshot {
        term: Term,
        snapshot: Snapshot,
    },
    InstallSnapshotResponse {
        term: Term,
        match_index: LogIndex,
    },
    /// The leader hands over: the receiver starts an election at once.
    TimeoutNow {
        term: Term,
    },
    /// "My Raft state is gone: what are your term and log end?" Asked by a recovering voter
    /// ([`Recovery::Probing`]); nobody changes state for it.
    /// `nonce` is drawn afresh by every life of the node: an answer to an earlier life's
    /// probe (delayed or duplicated) describes the answerer before the disk was replaced.
    Probe {
        term: Term,
        nonce: u64,
    },
    ProbeResponse {
        term: Term,
        nonce: u64,
        last_log_index: LogIndex,
        last_log_term: Term,
    },
}

impl Message {
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResponse { term, .. }
            | Message::RequestVote { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term }
            | Message::Probe { term, .. }
            | Message::ProbeResponse { term, .. } => *term,
        }
    }

    /// A short name for traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote { .. } => "PreVote",
            Message::PreVoteResponse { .. } => "PreVoteResponse",
            Message::RequestVote { .. } => "RequestVote",
            Message::RequestVoteResponse { .. } => "RequestVoteResponse",
            Message::AppendEntries { .. } => "AppendEntries",
            Message::AppendEntriesResponse { .. } => "AppendEntriesResponse",
            Message::InstallSnapshot { .. } => "InstallSnapshot",
            Message::InstallSnapshotResponse { .. } => "InstallSnapshotResponse",
            Message::TimeoutNow { .. } => "TimeoutNow",
            Message::Probe { .. } => "Probe",
            Message::ProbeResponse { .. } => "ProbeResponse",
        }
    }

    /// Lowers every term this message mentions by `by` (see [`crate::Raft::relabel`]).
    pub fn lower_terms(&mut self, by: u64) {
        for t in self.terms_mut() {
            if t.0 != 0 {
                assert!(t.0 > by, "relabelling would move term {} to or below zero", t.0);
                t.0 -= by;
            }
        }
    }

    /// Every nonzero term this message mentions (the same fields as `terms_mut`, read without
    /// copying the message: the model checker asks for every message after every step).
    pub fn terms(&self) -> Vec<Term> {
        let mut terms = match self {
            Message::PreVote { term, last_log_term, .. } | Message::RequestVote { term, last_log_term, .. } => {
                vec![*term, *last_log_term]
            }
            Message::AppendEntries { term, prev_log_term, entries, .. } => {
                let mut terms = vec![*term, *prev_log_term];
                terms.extend(entries.iter().map(|e| e.term));
                terms
            }
            Message::InstallSnapshot { term, snapshot } => vec![*term, snapshot.term],
            Message::ProbeResponse { term, last_log_term, .. } => vec![*term, *last_log_term],
            other => vec![other.term()],
        };
        terms.retain(|t| t.0 != 0);
        terms
    }

    /// Every term field: the message's own, and the log terms it carries.
    fn terms_mut(&mut self) -> Vec<&mut Term> {
        match self {
            Message::PreVote { term, last_log_term, .. } | Message::RequestVote { term, last_log_term, .. } => {
                vec![term, last_log_term]
            }
            Message::AppendEntries { term, prev_log_term, entries, .. } => {
                let mut terms = vec![term, prev_log_term];
                terms.extend(entries.iter_mut().map(|e| &mut e.term));
                terms
            }
            Message::InstallSnapshot { term, snapshot } => vec![term, &mut snapshot.term],
            Message::ProbeResponse { term, last_log_term, .. } => vec![term, last_log_term],
            Message::PreVoteResponse { term, .. }
            | Message::Probe { term, .. }
            | Message::RequestVoteResponse { term, .. }
            | Message::AppendEntriesResponse { term, .. }
            | Message::InstallSnapshotResponse { term, .. }
            | Message::TimeoutNow { term } => vec![term],
        }
    }
}

/// Entries show as `index:tTERM:command` (`noop` for a no-op), for traces.
impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.payload {
            Payload::Noop => write!(f, "{}:t{}:noop", self.index, self.term),
            Payload::Command(c) => write!(f, "{}:t{}:{}", self.index, self.term, String::from_utf8_lossy(c)),
        }
    }
}

/// Most entries a message lists one by one in its text; longer runs show as a range.
const ENTRIES_LISTED_MAX: usize = 4;

/// One line per message, for traces of the simulator and the model checker.
impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::PreVote { term, last_log_index, last_log_term } => {
                write!(f, "PreVote(term {term}, last {last_log_index}:t{last_log_term})")
            }
            Message::PreVoteResponse { term, granted } => write!(f, "PreVoteResponse(term {term}, granted {granted})"),
            Message::RequestVote { term, last_log_index, last_log_term, transfer } => {
                let transfer = if *transfer { ", transfer" } else { "" };
                write!(f, "RequestVote(term {term}, last {last_log_index}:t{last_log_term}{transfer})")
            }
            Message::RequestVoteResponse { term, granted } => {
                write!(f, "RequestVoteResponse(term {term}, granted {granted})")
            }
            Message::AppendEntries { term, prev_log_index, prev_log_term, entries, leader_commit } => {
                write!(f, "AppendEntries(term {term}, prev {prev_log_index}:t{prev_log_term}, [")?;
                match (entries.first(), entries.last()) {
                    (Some(first), Some(last)) if entries.len() > ENTRIES_LISTED_MAX => {
                        write!(f, "{}..{}, {} entries", first.index, last.index, entries.len())?
                    }
                    _ => {
                        for (i, e) in entries.iter().enumerate() {
                            write!(f, "{}{e}", if i == 0 { "" } else { " " })?;
                        }
                    }
                }
                write!(f, "], commit {leader_commit})")
            }
            Message::AppendEntriesResponse { term, success, match_index } => {
                write!(f, "AppendEntriesResponse(term {term}, success {success}, match {match_index})")
            }
            Message::InstallSnapshot { term, snapshot } => {
                write!(f, "InstallSnapshot(term {term}, up to {}:t{})", snapshot.index, snapshot.term)
            }
            Message::InstallSnapshotResponse { term, match_index } => {
                write!(f, "InstallSnapshotResponse(term {term}, match {match_index})")
            }
            Message::TimeoutNow { term } => write!(f, "TimeoutNow(term {term})"),
            Message::Probe { term, nonce } => write!(f, "Probe(term {term}, nonce {:04x})", nonce & 0xffff),
            Message::ProbeResponse { term, nonce, last_log_index, last_log_term } => write!(
                f,
                "ProbeResponse(term {term}, nonce {:04x}, last {last_log_index}:t{last_log_term})",
                nonce & 0xffff
            ),
        }
    }
}
