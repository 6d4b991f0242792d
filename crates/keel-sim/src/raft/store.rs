//! A simulated durable Raft store: the synced image a node restarts from and the writes handed
//! out by the core that are not yet complete. Both the Raft scenario and the cluster scenario's
//! controller quorum keep their Raft state in one.

use std::collections::VecDeque;

use keel_raft::{Durable, Persist};
use keel_types::{Duration, Instant, Rng};

#[derive(Debug, Clone, Default)]
pub(crate) struct RaftStore {
    /// What is synced.
    durable: Durable,
    /// Writes handed out by the core and not yet complete, in order.
    pending: VecDeque<Persist>,
    busy_until: Instant,
}

/// What a crash left of the unsynced writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CrashLoss {
    pub(crate) survivors: usize,
    pub(crate) pending: usize,
    pub(crate) torn: bool,
}

impl RaftStore {
    /// A store that already holds `durable` (a formatted one).
    pub(crate) fn formatted(durable: Durable) -> RaftStore {
        RaftStore { durable, ..RaftStore::default() }
    }

    /// What a restart reads.
    pub(crate) fn durable(&self) -> &Durable {
        &self.durable
    }

    /// Queues a write that takes `latency`. Writes complete in order, each no earlier than the
    /// one before it; their latencies overlap, as when one sync covers every write queued
    /// behind it (group commit). Returns when this one completes.
    pub(crate) fn write(&mut self, persist: Persist, now: Instant, latency: Duration) -> Instant {
        let done = self.busy_until.max(now + latency);
        self.busy_until = done;
        self.pending.push_back(persist);
        done
    }

    /// The oldest pending write is synced: it joins the durable image.
    pub(crate) fn complete(&mut self) -> Option<Persist> {
        let persist = self.pending.pop_front()?;
        self.durable.apply(&persist);
        Some(persist)
    }

    /// A clean stop: every pending write completes first.
    pub(crate) fn sync_all(&mut self) {
        while self.complete().is_some() {}
    }

    /// A crash: unsynced writes reach the disk in order, and a crash can stop them anywhere: a
    /// prefix survives, and with `torn_writes` the write after it may be half done (a prefix of
    /// its entries).
    pub(crate) fn crash(&mut self, rng: &mut Rng, torn_writes: bool) -> CrashLoss {
        let pending: Vec<Persist> = self.pending.drain(..).collect();
        let survivors = rng.below(pending.len() as u64 + 1) as usize;
        for persist in &pending[..survivors] {
            self.durable.apply(persist);
        }
        let mut torn = false;
        if let Some(next) = pending.get(survivors) {
            if torn_writes && !next.append.is_empty() && rng.chance(1, 2) {
                let mut partial = next.clone();
                partial.append.truncate(rng.below(next.append.len() as u64) as usize);
                self.durable.apply(&partial);
                torn = true;
            }
        }
        CrashLoss { survivors, pending: pending.len(), torn }
    }

    /// The node starts again: its disk is idle.
    pub(crate) fn restart(&mut self, now: Instant) {
        self.busy_until = now;
    }
}
