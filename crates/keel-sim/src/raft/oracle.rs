//! The cluster-level safety checks: what no single node can check about itself.
//!
//! The oracle remembers facts over the whole run (who led each term, which entry was committed
//! at each index and when it was first seen committed, which entry follows which, the state
//! machine after each index) and checks every step of every node against them. Checks are
//! incremental, so their cost per step stays bounded by one node's log (which compaction keeps
//! short), not by the length of the run.

use std::collections::btree_map::Entry as MapEntry;
use std::collections::BTreeMap;

use keel_raft::{Entry, LogIndex, Payload, Raft, RoleKind, Term};
use keel_types::NodeId;

use super::Machine;

/// An entry some node holds as committed.
#[derive(Debug, Clone)]
struct Committed {
    term: Term,
    payload: Payload,
    /// The term of the node on which the entry was first seen committed. A leader of any later
    /// term must hold it (leader completeness). The first sighting can come later than the real
    /// commit, never earlier, so this term can only be too high, which weakens the check but
    /// never makes it fail wrongly.
    commit_term: Term,
}

/// What every copy of the entry at (index, term) must agree on.
#[derive(Debug, Clone)]
struct Known {
    /// The term of the entry just before it. One leader creates each (index, term) once, with
    /// one predecessor, so every log holding it must hold the same predecessor; by induction
    /// two logs that agree on an entry agree on everything before it (log matching).
    previous_term: Term,
    payload: Payload,
}

/// What the simulator remembers about one node between its steps. It is reset when the node
/// restarts: a restart legitimately forgets the commit index and the applied state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watch {
    pub(crate) commit_index: LogIndex,
    pub(crate) applied_index: LogIndex,
    /// The term in which this node was last checked for leader completeness as a leader.
    pub(crate) leader_checked: Option<Term>,
    /// The node's log changed (a persist carried entries, a truncation or a snapshot, or the
    /// node restarted): check the whole log again.
    pub(crate) log_dirty: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Oracle {
    leaders: BTreeMap<Term, NodeId>,
    committed: BTreeMap<LogIndex, Committed>,
    known: BTreeMap<(LogIndex, Term), Known>,
    /// The state machine's hash after applying each index.
    states: BTreeMap<LogIndex, u64>,
}

impl Oracle {
    pub(crate) fn leaders_elected(&self) -> usize {
        self.leaders.len()
    }

    pub(crate) fn highest_committed(&self) -> LogIndex {
        self.committed.last_key_value().map_or(0, |(index, _)| *index)
    }

    /// Every check that concerns one node after it took a step. Indexes it is the first to
    /// show committed are pushed to `new_commits`, so the caller can check them against every
    /// other node that leads a later term.
    pub(crate) fn check_node(
        &mut self,
        raft: &Raft,
        watch: &mut Watch,
        new_commits: &mut Vec<LogIndex>,
    ) -> Result<(), String> {
        raft.check_invariants()?;
        let id = raft.id();
        let (commit, applied) = (raft.commit_index(), raft.applied_index());
        if commit < watch.commit_index {
            return Err(format!("n{id}: commit index went back from {} to {commit}", watch.commit_index));
        }
        if applied < watch.applied_index {
            return Err(format!("n{id}: applied index went back from {} to {applied}", watch.applied_index));
        }
        let snapshot_index = raft.snapshot().map_or(0, |s| s.index);
        for index in watch.commit_index.max(snapshot_index) + 1..=commit {
            // check_invariants above guarantees commit <= last index, so the entry is there.
            let Some(entry) = entry_at(raft, index) else {
                return Err(format!("n{id}: committed index {index} is not in its log"));
            };
            if self.record_commit(id, entry, raft.term())? {
                new_commits.push(index);
            }
        }
        watch.commit_index = commit;
        watch.applied_index = applied;
        if raft.role() == RoleKind::Leader {
            let term = raft.term();
            match self.leaders.entry(term) {
                MapEntry::Occupied(o) if *o.get() != id => {
                    return Err(format!("two leaders in term {term}: n{} and n{id}", o.get()));
                }
                MapEntry::Occupied(_) => {}
                MapEntry::Vacant(v) => {
                    v.insert(id);
                }
            }
            if watch.leader_checked != Some(term) {
                self.check_leader_complete(raft)?;
                watch.leader_checked = Some(term);
            }
        }
        if watch.log_dirty {
            self.check_log(raft)?;
            watch.log_dirty = false;
        }
        Ok(())
    }

    /// Records that `node`, in `node_term`, holds `entry` as committed (or applied it). Returns
    /// whether this is the first time anyone showed that index committed.
    pub(crate) fn record_commit(&mut self, node: NodeId, entry: &Entry, node_term: Term) -> Result<bool, String> {
        match self.committed.entry(entry.index) {
            MapEntry::Occupied(o) => {
                let c = o.get();
                if c.term != entry.term || c.payload != entry.payload {
                    return Err(format!(
                        "committed entry changed: index {} was committed as t{}:{} (first seen in term {}), \
                         but n{node} holds t{}:{} as committed",
                        entry.index,
                        c.term,
                        show(&c.payload),
                        c.commit_term,
                        entry.term,
                        show(&entry.payload)
                    ));
                }
                Ok(false)
            }
            MapEntry::Vacant(v) => {
                v.insert(Committed { term: entry.term, payload: entry.payload.clone(), commit_term: node_term });
                Ok(true)
            }
        }
    }

    /// The state machine of `node` after applying `index`; every node must agree.
    pub(crate) fn record_state(&mut self, node: NodeId, machine: Machine) -> Result<(), String> {
        match self.states.entry(machine.index) {
            MapEntry::Occupied(o) => {
                if *o.get() != machine.hash {
                    return Err(format!(
                        "applied state diverged: after index {} n{node} has state {:016x}, another node had {:016x}",
                        machine.index,
                        machine.hash,
                        o.get()
                    ));
                }
            }
            MapEntry::Vacant(v) => {
                v.insert(machine.hash);
            }
        }
        Ok(())
    }

    /// A leader of a term later than the one in which `index` was first seen committed must
    /// hold that entry.
    pub(crate) fn check_leader_holds(&self, leader: &Raft, index: LogIndex) -> Result<(), String> {
        let Some(c) = self.committed.get(&index) else { return Ok(()) };
        if leader.role() != RoleKind::Leader || leader.term() <= c.commit_term {
            return Ok(());
        }
        self.leader_holds(leader, index, c)
    }

    fn check_leader_complete(&self, leader: &Raft) -> Result<(), String> {
        let snapshot_index = leader.snapshot().map_or(0, |s| s.index);
        for (index, c) in self.committed.range(snapshot_index + 1..) {
            if c.commit_term < leader.term() {
                self.leader_holds(leader, *index, c)?;
            }
        }
        Ok(())
    }

    fn leader_holds(&self, leader: &Raft, index: LogIndex, c: &Committed) -> Result<(), String> {
        if leader.snapshot().is_some_and(|s| s.index >= index) {
            return Ok(());
        }
        match entry_at(leader, index) {
            Some(e) if e.term == c.term && e.payload == c.payload => Ok(()),
            held => Err(format!(
                "leader completeness: n{} leads term {} but {} at index {index}, which was committed as t{}:{} \
                 (first seen committed in term {})",
                leader.id(),
                leader.term(),
                held.map_or("holds nothing".to_string(), |e| format!("holds t{}:{}", e.term, show(&e.payload))),
                c.term,
                show(&c.payload),
                c.commit_term
            )),
        }
    }

    /// Log matching, committed entries unchanged, and the snapshot consistent with both.
    fn check_log(&mut self, raft: &Raft) -> Result<(), String> {
        let id = raft.id();
        let mut previous_term = Term(0);
        if let Some(s) = raft.snapshot() {
            previous_term = s.term;
            if let Some(c) = self.committed.get(&s.index) {
                if c.term != s.term {
                    return Err(format!(
                        "n{id} holds a snapshot at {}:t{}, but index {} was committed in term {}",
                        s.index, s.term, s.index, c.term
                    ));
                }
            }
            let machine = Machine::decode(&s.data).map_err(|e| format!("n{id}: snapshot at {}: {e}", s.index))?;
            if machine.index != s.index {
                return Err(format!("n{id}: snapshot at {} holds the state after index {}", s.index, machine.index));
            }
            if let Some(hash) = self.states.get(&s.index) {
                if *hash != machine.hash {
                    return Err(format!(
                        "n{id}: snapshot at {} holds state {:016x}, but the state after {} is {hash:016x}",
                        s.index, machine.hash, s.index
                    ));
                }
            }
        }
        for e in raft.entries() {
            match self.known.entry((e.index, e.term)) {
                MapEntry::Vacant(v) => {
                    v.insert(Known { previous_term, payload: e.payload.clone() });
                }
                MapEntry::Occupied(o) => {
                    let known = o.get();
                    if known.previous_term != previous_term {
                        return Err(format!(
                            "log matching: n{id} holds entry {}:t{} after an entry of term {previous_term}, \
                             but elsewhere it follows term {}",
                            e.index, e.term, known.previous_term
                        ));
                    }
                    if known.payload != e.payload {
                        return Err(format!(
                            "log matching: two entries {}:t{} differ: n{id} holds {}, elsewhere {}",
                            e.index,
                            e.term,
                            show(&e.payload),
                            show(&known.payload)
                        ));
                    }
                }
            }
            if e.index <= raft.commit_index() {
                if let Some(c) = self.committed.get(&e.index) {
                    if c.term != e.term || c.payload != e.payload {
                        return Err(format!(
                            "committed entry changed: n{id} holds t{}:{} at committed index {}, committed as t{}:{}",
                            e.term,
                            show(&e.payload),
                            e.index,
                            c.term,
                            show(&c.payload)
                        ));
                    }
                }
            }
            previous_term = e.term;
        }
        Ok(())
    }
}

/// The entry at `index`, if the node's log (after its snapshot) holds it.
pub(crate) fn entry_at(raft: &Raft, index: LogIndex) -> Option<&Entry> {
    let snapshot_index = raft.snapshot().map_or(0, |s| s.index);
    if index <= snapshot_index {
        return None;
    }
    raft.entries().get((index - snapshot_index - 1) as usize)
}

/// A payload for people: commands are the client's ASCII strings.
pub(crate) fn show(payload: &Payload) -> String {
    match payload {
        Payload::Noop => "noop".to_string(),
        Payload::Command(c) => String::from_utf8_lossy(c).into_owned(),
    }
}
