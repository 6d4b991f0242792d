//! The in-memory image of a node's Raft log: an optional snapshot followed by entries.

use crate::message::{Entry, LogIndex, Snapshot, Term};

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub(crate) struct RaftLog {
    pub(crate) snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous.
    pub(crate) entries: Vec<Entry>,
}

impl RaftLog {
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot.as_ref().map_or(0, |s| s.index)
    }

    pub(crate) fn snapshot_term(&self) -> Term {
        self.snapshot.as_ref().map_or(Term(0), |s| s.term)
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term(), |e| e.term)
    }

    /// The term of the entry at `index`, the snapshot's term at its index, term 0 at index 0,
    /// and `None` where the log does not know (compacted away or beyond the end).
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        let snapshot_index = self.snapshot_index();
        if index == snapshot_index {
            return Some(self.snapshot_term());
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let snapshot_index = self.snapshot_index();
        if index <= snapshot_index {
            return None;
        }
        self.entries.get((index - snapshot_index - 1) as usize)
    }

    /// Up to `max` entries starting at `from` (which must lie after the snapshot).
    pub(crate) fn entries_from(&self, from: LogIndex, max: usize) -> Vec<Entry> {
        let snapshot_index = self.snapshot_index();
        assert!(from > snapshot_index, "entries from {from} are compacted (snapshot at {snapshot_index})");
        let start = (from - snapshot_index - 1) as usize;
        self.entries.iter().skip(start).take(max).cloned().collect()
    }

    /// The first index holding an entry of `term`, searching down from `index`.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else { return index };
        let mut first = index;
        while first > self.snapshot_index() + 1 && self.term_at(first - 1) == Some(term) {
            first -= 1;
        }
        first
    }

    pub(crate) fn truncate_after(&mut self, index: LogIndex) {
        self.entries.retain(|e| e.index <= index);
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index() + 1, "log must stay contiguous");
        self.entries.push(entry);
    }

    /// Replaces everything up to `snapshot.index` with the snapshot. Entries after it stay only
    /// if they continue it (the same rule as [`crate::Durable::apply`]).
    pub(crate) fn install(&mut self, snapshot: Snapshot) {
        self.entries.retain(|e| e.index > snapshot.index);
        if self.entries.first().is_some_and(|e| e.index != snapshot.index + 1) {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot);
    }
}
