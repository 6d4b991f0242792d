//! The Raft model: the real keel-raft core, three (or more) nodes, a network that loses,
//! duplicates and reorders, crashes, client proposals, and time in whole ticks.
//!
//! Abstractions, each behaviour-preserving for the core:
//! - Time: every node sees the same clock, which advances in ticks of one millisecond (election
//!   timeouts are a few ticks). After each tick every stored instant is relabelled one tick
//!   earlier ([`Raft::relabel`]), so states do not grow with the clock.
//! - Terms: Raft only compares terms and adds one, so lowering every term in the system by the
//!   same amount (keeping the smallest at 1) changes nothing. `max_term` bounds the spread of
//!   terms in one state, not their absolute value; this is what lets repeated elections show up
//!   as a cycle.
//! - Disks: every persist completes at once, so a crash loses only volatile state. (Lost and
//!   torn unsynced writes are the simulator's job.)
//! - The network is a set: two identical messages in flight are one message; duplication is a
//!   separate, bounded fault.
//! - Messages are delivered (or lost) within a tick: time passes only when no message is in
//!   flight, except messages a bounded `delay` fault holds back, which may arrive any number
//!   of ticks later. For liveness this is partial synchrony after the faults stop. Faults and
//!   proposals are not fair actions.

use std::collections::BTreeSet;

use keel_raft::{Config, Durable, Entry, Message, Mutation, Raft, RoleKind, Term};
use keel_types::{Duration, Instant, NodeId};

use crate::explore::{Choices, Model, Property};

#[derive(Debug, Clone)]
pub struct RaftModelOptions {
    pub nodes: usize,
    pub replication_quorum: Option<usize>,
    pub election_quorum: Option<usize>,
    /// Largest spread of terms (highest - lowest + 1) explored in one state.
    pub max_term: u64,
    pub proposals: u8,
    pub losses: u8,
    pub duplications: u8,
    /// Messages that may be held back past any number of ticks.
    pub delays: u8,
    pub crashes: u8,
    /// Only leaders crash (a smaller space when follower crashes are not the point).
    pub crash_leaders_only: bool,
    /// Disk replacements: a node crashes and restarts with its Raft state gone
    /// ([`Durable::lost`]), so it recovers by asking every other voter (docs/raft.md).
    pub wipes: u8,
    /// States with more messages in flight are cut off.
    pub max_in_flight: usize,
    pub election_timeout_ticks_min: u64,
    pub election_timeout_ticks_max: u64,
    pub append_entries_max: usize,
    /// What each node finds on its disk at boot (empty: every node starts fresh). Lets a test
    /// start from a history that would take many faults to reach, such as figure 8's.
    pub disks: Vec<Durable>,
    /// The tick at which each node boots; empty means one tick apart (node i at tick i - 1).
    /// Nodes that boot together contest the first election.
    pub boot_ticks: Vec<u64>,
    pub mutation: Option<Mutation>,
}

impl Default for RaftModelOptions {
    fn default() -> RaftModelOptions {
        RaftModelOptions {
            nodes: 3,
            replication_quorum: None,
            election_quorum: None,
            max_term: 3,
            proposals: 1,
            losses: 1,
            duplications: 1,
            delays: 1,
            crashes: 1,
            crash_leaders_only: false,
            wipes: 0,
            max_in_flight: 8,
            election_timeout_ticks_min: 2,
            election_timeout_ticks_max: 3,
            append_entries_max: 1,
            boot_ticks: Vec::new(),
            disks: Vec::new(),
            mutation: None,
        }
    }
}

/// The whole system in one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RaftState {
    pub nodes: Vec<Raft>,
    pub network: BTreeSet<(NodeId, NodeId, Message)>,
    /// Messages a fault held back: time may pass while they are in flight.
    pub delayed: BTreeSet<(NodeId, NodeId, Message)>,
    /// Ghost: the committed prefix as first learned, with the term in which each entry was
    /// first known committed (for leader completeness).
    pub committed: Vec<(Entry, Term)>,
    pub losses: u8,
    pub duplications: u8,
    pub delays: u8,
    pub crashes: u8,
    pub wipes: u8,
    pub proposals: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftAction {
    Tick,
    Deliver(NodeId, NodeId, Message),
    Drop(NodeId, NodeId, Message),
    Duplicate(NodeId, NodeId, Message),
    Delay(NodeId, NodeId, Message),
    DeliverDelayed(NodeId, NodeId, Message),
    Crash(NodeId),
    Wipe(NodeId),
    Propose(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum RaftFair {
    Tick,
    Deliver(NodeId, NodeId, Message),
}

#[derive(Debug)]
pub struct RaftModel {
    options: RaftModelOptions,
    configs: Vec<Config>,
}

/// The fixed "now" of every state; a tick happens at NOW + 1 ms and is relabelled back.
const NOW: Instant = Instant(1_000_000_000);
const TICK: Duration = Duration(1_000_000);

impl RaftModel {
    /// A model of the cluster `options` describes; fails if its Raft config is invalid.
    pub fn new(options: RaftModelOptions) -> Result<RaftModel, keel_raft::ConfigError> {
        let voters: Vec<NodeId> = (1..=options.nodes as i32).map(NodeId).collect();
        let configs = voters
            .iter()
            .map(|id| {
                let mut config = Config::new(*id, voters.clone());
                if let Some(r) = options.replication_quorum {
                    config.replication_quorum = r;
                }
                if let Some(e) = options.election_quorum {
                    config.election_quorum = e;
                }
                config.election_timeout_min = Duration(TICK.0 * options.election_timeout_ticks_min);
                config.election_timeout_max = Duration(TICK.0 * options.election_timeout_ticks_max);
                config.heartbeat_interval = TICK;
                config.transfer_timeout = Duration(TICK.0 * options.election_timeout_ticks_max);
                config.append_entries_max = options.append_entries_max;
                config.mutation = options.mutation;
                config
            })
            .collect::<Vec<Config>>();
        configs[0].validate()?;
        Ok(RaftModel { options, configs })
    }

    /// Drains a node's effects: persists complete at once; messages join the network.
    fn settle(node: &mut Raft, network: &mut BTreeSet<(NodeId, NodeId, Message)>) {
        loop {
            let persists = node.drain_persists();
            let Some(last) = persists.last() else { break };
            node.handle_persisted(NOW, last.id);
        }
        let from = node.id();
        for (to, message) in node.drain_messages() {
            network.insert((from, to, message));
        }
        while node.poll_apply().is_some() {}
    }

    /// Extends the committed ghost from the node that has committed furthest, then lowers all
    /// terms so the smallest is 1.
    fn normalize(state: &mut RaftState) {
        for node in &state.nodes {
            let known = state.committed.len() as u64;
            if node.commit_index() > known {
                for index in known + 1..=node.commit_index() {
                    // Snapshots are not taken in this model, so every committed entry is in the log.
                    if let Some(entry) = node.entries().iter().find(|e| e.index == index) {
                        state.committed.push((entry.clone(), node.term()));
                    }
                }
            }
        }
        let mut lowest = u64::MAX;
        for node in &state.nodes {
            for t in node.terms() {
                lowest = lowest.min(t.0);
            }
        }
        for (_, _, m) in state.network.iter().chain(&state.delayed) {
            for t in m.terms() {
                lowest = lowest.min(t.0);
            }
        }
        for (e, t) in &state.committed {
            lowest = lowest.min(e.term.0).min(t.0);
        }
        if lowest == u64::MAX || lowest <= 1 {
            return;
        }
        let by = lowest - 1;
        for node in &mut state.nodes {
            node.relabel(Duration::ZERO, by, NOW);
        }
        let lower = |set: &mut BTreeSet<(NodeId, NodeId, Message)>| {
            *set = std::mem::take(set)
                .into_iter()
                .map(|(f, t, mut m)| {
                    m.lower_terms(by);
                    (f, t, m)
                })
                .collect();
        };
        lower(&mut state.network);
        lower(&mut state.delayed);
        for (e, t) in &mut state.committed {
            e.term.0 -= by;
            t.0 -= by;
        }
    }

    fn max_term(state: &RaftState) -> u64 {
        let nodes = state.nodes.iter().map(|n| n.term().0);
        let messages = state.network.iter().chain(&state.delayed).map(|(_, _, m)| m.term().0);
        nodes.chain(messages).max().unwrap_or(0)
    }

    fn node_mut(state: &mut RaftState, id: NodeId) -> &mut Raft {
        &mut state.nodes[(id.0 - 1) as usize]
    }
}

impl Model for RaftModel {
    type State = RaftState;
    type Action = RaftAction;
    type FairKey = RaftFair;

    fn initial(&self) -> RaftState {
        let mut choices = Choices::default();
        // Every node starts with the minimum timeout (answer 0); randomization starts to matter
        // at the first timer reset. Booting together makes the first election contested.
        let nodes = self
            .configs
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let tick = self.options.boot_ticks.get(i).copied().unwrap_or(i as u64);
                let boot = NOW + Duration(TICK.0 * tick);
                let disk = self.options.disks.get(i).cloned().unwrap_or_default();
                Raft::restart(c.clone(), disk, boot, &mut choices)
            })
            .collect();
        RaftState {
            nodes,
            network: BTreeSet::new(),
            delayed: BTreeSet::new(),
            committed: Vec::new(),
            losses: self.options.losses,
            duplications: self.options.duplications,
            delays: self.options.delays,
            crashes: self.options.crashes,
            wipes: self.options.wipes,
            proposals: self.options.proposals,
        }
    }

    fn actions(&self, state: &RaftState) -> Vec<RaftAction> {
        let mut actions = Vec::new();
        // Messages arrive within a tick unless a fault delays them.
        if state.network.is_empty() {
            actions.push(RaftAction::Tick);
        }
        for (f, t, m) in &state.network {
            actions.push(RaftAction::Deliver(*f, *t, m.clone()));
        }
        for (f, t, m) in &state.delayed {
            actions.push(RaftAction::DeliverDelayed(*f, *t, m.clone()));
        }
        if state.delays > 0 {
            for (f, t, m) in &state.network {
                actions.push(RaftAction::Delay(*f, *t, m.clone()));
            }
        }
        if state.losses > 0 {
            for (f, t, m) in &state.network {
                actions.push(RaftAction::Drop(*f, *t, m.clone()));
            }
        }
        if state.duplications > 0 {
            for (f, t, m) in &state.network {
                actions.push(RaftAction::Duplicate(*f, *t, m.clone()));
            }
        }
        if state.crashes > 0 {
            for n in &state.nodes {
                if !self.options.crash_leaders_only || n.role() == RoleKind::Leader {
                    actions.push(RaftAction::Crash(n.id()));
                }
            }
        }
        if state.wipes > 0 {
            for n in &state.nodes {
                actions.push(RaftAction::Wipe(n.id()));
            }
        }
        if state.proposals > 0 {
            for n in &state.nodes {
                if n.role() == RoleKind::Leader {
                    actions.push(RaftAction::Propose(n.id()));
                }
            }
        }
        actions
    }

    fn step(&self, state: &RaftState, action: &RaftAction, choices: &mut Choices) -> Option<RaftState> {
        let mut s = state.clone();
        match action {
            RaftAction::Tick => {
                let later = NOW + TICK;
                for node in &mut s.nodes {
                    node.handle_tick(later, choices);
                    Self::settle(node, &mut s.network);
                }
                for node in &mut s.nodes {
                    node.relabel(TICK, 0, NOW);
                }
            }
            RaftAction::Deliver(from, to, message)
            | RaftAction::Duplicate(from, to, message)
            | RaftAction::DeliverDelayed(from, to, message) => {
                match action {
                    RaftAction::Deliver(..) => {
                        s.network.remove(&(*from, *to, message.clone()));
                    }
                    RaftAction::DeliverDelayed(..) => {
                        s.delayed.remove(&(*from, *to, message.clone()));
                    }
                    _ => s.duplications -= 1,
                }
                let node = Self::node_mut(&mut s, *to);
                node.handle_message(NOW, choices, *from, message.clone());
                let mut network = std::mem::take(&mut s.network);
                Self::settle(Self::node_mut(&mut s, *to), &mut network);
                s.network = network;
            }
            RaftAction::Drop(from, to, message) => {
                s.network.remove(&(*from, *to, message.clone()));
                s.losses -= 1;
            }
            RaftAction::Delay(from, to, message) => {
                let held = (*from, *to, message.clone());
                s.network.remove(&held);
                s.delayed.insert(held);
                s.delays -= 1;
            }
            RaftAction::Crash(id) => {
                s.crashes -= 1;
                let node = Self::node_mut(&mut s, *id);
                // Every persist completed, so the disk holds exactly the term, vote and log.
                let durable = Durable {
                    hard_state: node.hard_state(),
                    snapshot: node.snapshot().cloned(),
                    entries: node.entries().to_vec(),
                    recovery: node.recovery(),
                };
                let config = node.config().clone();
                *node = Raft::restart(config, durable, NOW, choices);
                let mut network = std::mem::take(&mut s.network);
                Self::settle(Self::node_mut(&mut s, *id), &mut network);
                s.network = network;
            }
            RaftAction::Wipe(id) => {
                s.wipes -= 1;
                let node = Self::node_mut(&mut s, *id);
                let config = node.config().clone();
                *node = Raft::restart(config, Durable::lost(), NOW, choices);
                let mut network = std::mem::take(&mut s.network);
                Self::settle(Self::node_mut(&mut s, *id), &mut network);
                s.network = network;
            }
            RaftAction::Propose(id) => {
                s.proposals -= 1;
                let command = format!("p{}", self.options.proposals - s.proposals).into_bytes();
                let node = Self::node_mut(&mut s, *id);
                node.propose(NOW, command).ok()?;
                let mut network = std::mem::take(&mut s.network);
                Self::settle(Self::node_mut(&mut s, *id), &mut network);
                s.network = network;
            }
        }
        for node in &mut s.nodes {
            node.relabel(Duration::ZERO, 0, NOW);
        }
        Self::normalize(&mut s);
        if Self::max_term(&s) > self.options.max_term || s.network.len() > self.options.max_in_flight {
            return None;
        }
        Some(s)
    }

    fn fair_key(&self, _state: &RaftState, action: &RaftAction) -> Option<RaftFair> {
        match action {
            RaftAction::Tick => Some(RaftFair::Tick),
            RaftAction::Deliver(f, t, m) | RaftAction::DeliverDelayed(f, t, m) => {
                Some(RaftFair::Deliver(*f, *t, m.clone()))
            }
            _ => None,
        }
    }

    fn check(&self, state: &RaftState) -> Result<(), String> {
        for node in &state.nodes {
            node.check_invariants()?;
        }
        // Election safety.
        for (i, a) in state.nodes.iter().enumerate() {
            for b in &state.nodes[i + 1..] {
                if a.role() == RoleKind::Leader && b.role() == RoleKind::Leader && a.term() == b.term() {
                    return Err(format!("two leaders in term {}: n{} and n{}", a.term(), a.id().0, b.id().0));
                }
            }
        }
        // Log matching: equal index and term means equal prefixes.
        for (i, a) in state.nodes.iter().enumerate() {
            for b in &state.nodes[i + 1..] {
                let common = a.last_index().min(b.last_index());
                let Some(matching) =
                    (1..=common).rev().find(|&ix| a.term_at(ix).is_some() && a.term_at(ix) == b.term_at(ix))
                else {
                    continue;
                };
                for ix in 1..=matching {
                    let ea = a.entries().iter().find(|e| e.index == ix);
                    let eb = b.entries().iter().find(|e| e.index == ix);
                    if ea != eb {
                        return Err(format!(
                            "log matching: n{} and n{} agree at index {matching} but differ at {ix}",
                            a.id().0,
                            b.id().0
                        ));
                    }
                }
            }
        }
        // Committed entries never change; leaders hold every entry committed in earlier terms.
        for node in &state.nodes {
            for (entry, _) in &state.committed {
                // A node that is behind may still hold a stale entry there (it will be
                // overwritten); one whose commit index covers the entry must hold it.
                if entry.index > node.commit_index() {
                    continue;
                }
                if let Some(held) = node.entries().iter().find(|e| e.index == entry.index) {
                    if held != entry {
                        return Err(format!("committed entry {} changed on n{}: now {}", entry, node.id().0, held));
                    }
                }
            }
            if node.role() == RoleKind::Leader {
                for (entry, committed_in) in &state.committed {
                    if *committed_in < node.term() && node.term_at(entry.index) != Some(entry.term) {
                        return Err(format!(
                            "leader completeness: n{} leads term {} without committed entry {}",
                            node.id().0,
                            node.term(),
                            entry
                        ));
                    }
                }
            }
            if node.commit_index() > 0 && (node.commit_index() as usize) > state.committed.len() {
                return Err(format!("n{} committed {} beyond the ghost", node.id().0, node.commit_index()));
            }
        }
        Ok(())
    }

    fn properties(&self) -> Vec<Property<RaftState>> {
        vec![
            Property { name: "a leader is elected", goal: leader_elected },
            Property { name: "every entry is committed on every node", goal: converged },
        ]
    }

    fn describe_action(&self, _state: &RaftState, action: &RaftAction) -> String {
        match action {
            RaftAction::Tick => "one tick passes".to_string(),
            RaftAction::Deliver(f, t, m) => format!("n{} -> n{}: {}", f.0, t.0, m),
            RaftAction::Drop(f, t, m) => format!("LOST n{} -> n{}: {}", f.0, t.0, m),
            RaftAction::Duplicate(f, t, m) => {
                format!("DUPLICATED n{} -> n{}: {} (a copy stays in flight)", f.0, t.0, m)
            }
            RaftAction::Delay(f, t, m) => format!("DELAYED n{} -> n{}: {}", f.0, t.0, m),
            RaftAction::DeliverDelayed(f, t, m) => {
                format!("n{} -> n{} (late): {}", f.0, t.0, m)
            }
            RaftAction::Crash(id) => format!("n{} CRASHES and restarts from its disk", id.0),
            RaftAction::Wipe(id) => format!("n{} CRASHES and restarts on an EMPTY disk (replaced)", id.0),
            RaftAction::Propose(id) => format!("client proposes to n{}", id.0),
        }
    }

    fn describe_state(&self, before: Option<&RaftState>, after: &RaftState) -> Vec<String> {
        let mut lines = Vec::new();
        for (i, node) in after.nodes.iter().enumerate() {
            let now = node.describe();
            if before.is_none_or(|b| b.nodes[i].describe() != now) {
                lines.push(now);
            }
        }
        if before.is_none() {
            lines.push(format!(
                "faults left: {} losses, {} duplications, {} delays, {} crashes, {} disk replacements; {} proposals",
                after.losses, after.duplications, after.delays, after.crashes, after.wipes, after.proposals
            ));
        }
        lines
    }
}

/// Some node leads and every node is in its term and follows it.
pub fn leader_elected(state: &RaftState) -> bool {
    let Some(leader) = state.nodes.iter().find(|n| n.role() == RoleKind::Leader) else { return false };
    state.nodes.iter().all(|n| n.term() == leader.term() && n.leader() == Some(leader.id()))
}

/// A leader is elected and every node holds and has committed exactly the leader's log.
pub fn converged(state: &RaftState) -> bool {
    if !leader_elected(state) {
        return false;
    }
    let leader = state.nodes.iter().find(|n| n.role() == RoleKind::Leader).expect("elected");
    state.nodes.iter().all(|n| n.entries() == leader.entries() && n.commit_index() == leader.last_index())
}
