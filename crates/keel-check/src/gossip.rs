//! The membership model: the real keel-gossip core on a few nodes, with crashes, restarts,
//! pauses (a running node that answers nothing for a while: the false accusation), lost
//! messages and graceful leaves, and time in whole ticks.
//!
//! Abstractions, each behaviour-preserving for the core:
//! - Time: one clock for every node, advancing in ticks of one millisecond (a probe period is a
//!   couple of ticks). After each tick every stored instant is relabelled one tick earlier
//!   ([`Gossip::relabel`]), and instants already due collapse to "now", so states do not grow
//!   with the clock.
//! - Incarnations: the core only compares one member's incarnations with each other and adds
//!   one, so after every step each member's incarnations (its own, its durable one, every
//!   view's record of it, every message's, the ghost's) are lowered by the same amount, the
//!   lowest becoming 0. `max_incarnation_spread` bounds how far apart they may drift in one
//!   state, not their absolute value: a run in which a member keeps refuting shows up as a
//!   cycle.
//! - Probe sequence numbers: the core only matches an ack against its latest probe, so every
//!   older number is renumbered 0 and the latest 1 (a crashed node's are all stale).
//! - Disks: the incarnation persist completes in the step that issues it (the simulator
//!   delays it; the core holds messages back until it completes).
//! - The network is a set of messages; messages are delivered (or lost) within a tick: time
//!   passes only when nothing is in flight. A message to a node that is down or paused is
//!   dropped.
//!
//! - Randomness: the probe order and the relays are the scheduler's choice by default
//!   ([`GossipModelOptions::scheduler_orders_probes`]), so liveness must hold whatever order
//!   members probe each other in.
//!
//! Faults (not fair): crash, restart from the durable incarnation, pause, lost message, leave,
//! a link cut for good (messages between its two ends are lost from then on, both ways).
//! Fair: ticks, deliveries, and the end of a pause. So after the last fault, every node that
//! runs must come to agree with reality (`converged`).
//!
//! Safety on every state: each core's own invariants; a running node never holds itself
//! Suspect or Dead; incarnations never decrease: a node's own never goes below any it held or
//! anyone heard of before, across restarts, and no running node's record of a member goes
//! back to a lower incarnation (this last check can be turned off, to see what else a mutant
//! breaks).

use std::collections::BTreeSet;

use keel_gossip::{Address, Config, Durable, Gossip, Incarnation, Message, Mutation, Status};
use keel_types::{Duration, Instant, NodeId};

use crate::explore::{Choices, Model, Property};

#[derive(Debug, Clone)]
pub struct GossipModelOptions {
    pub nodes: usize,
    pub crashes: u8,
    /// Restarts of crashed (or departed) nodes.
    pub restarts: u8,
    /// Pauses: a node stops answering and resumes later (fairly), long enough perhaps to be
    /// declared dead: a false accusation.
    pub pauses: u8,
    pub losses: u8,
    /// Graceful leaves.
    pub leaves: u8,
    /// Links cut for good: from the step it is cut on, every datagram between the two members
    /// is lost, both ways (an asymmetric partition: a firewall rule, a broken route), while
    /// both keep running and talking to everyone else.
    pub cuts: u8,
    /// Check that no running node's record of a member goes back to a lower incarnation. On
    /// by default; a test turns it off to show what else a mutant breaks (the blind merge's
    /// endless contest, which this safety check would otherwise report first).
    pub check_record_regression: bool,
    /// States with more messages in flight are cut off.
    pub max_in_flight: usize,
    /// States in which one member's incarnations lie further apart are cut off.
    pub max_incarnation_spread: u64,
    pub probe_interval_ticks: u64,
    pub probe_timeout_ticks: u64,
    pub suspicion_timeout_ticks: u64,
    /// SWIM's k.
    pub indirect_probes: usize,
    pub retransmit_multiplier: u32,
    /// Records of the whole view each message carries in turn (anti-entropy). With 3 members
    /// one is the whole view but for sender and recipient.
    pub anti_entropy_records: usize,
    /// The probe order (each round's shuffle) and the choice of relays are the scheduler's,
    /// not chance: convergence must not depend on luck in who probes whom when. Every member
    /// is still probed once per round. Off, a run whose contest ends with probability 1 passes.
    pub scheduler_orders_probes: bool,
    pub mutation: Option<Mutation>,
    /// Start from a formed cluster (every node joined, reached by one fixed schedule from
    /// boot) rather than from boot, where every interleaving of the joins is explored.
    pub formed: bool,
}

impl Default for GossipModelOptions {
    fn default() -> GossipModelOptions {
        GossipModelOptions {
            nodes: 3,
            crashes: 0,
            restarts: 0,
            pauses: 1,
            losses: 0,
            leaves: 0,
            cuts: 0,
            check_record_regression: true,
            max_in_flight: 6,
            max_incarnation_spread: 3,
            probe_interval_ticks: 2,
            probe_timeout_ticks: 1,
            suspicion_timeout_ticks: 2,
            indirect_probes: 1,
            retransmit_multiplier: 1,
            anti_entropy_records: 1,
            scheduler_orders_probes: true,
            mutation: None,
            formed: true,
        }
    }
}

/// One node of the model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Slot {
    Up(Gossip),
    /// Running but answering nothing: its timers stand still and messages to it are lost.
    Paused(Gossip),
    /// Crashed or departed; the disk keeps the incarnation.
    Down,
}

impl Slot {
    pub fn gossip(&self) -> Option<&Gossip> {
        match self {
            Slot::Up(g) | Slot::Paused(g) => Some(g),
            Slot::Down => None,
        }
    }

    fn gossip_mut(&mut self) -> Option<&mut Gossip> {
        match self {
            Slot::Up(g) | Slot::Paused(g) => Some(g),
            Slot::Down => None,
        }
    }
}

/// The whole system in one value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GossipState {
    /// Index i is node n(i + 1).
    pub slots: Vec<Slot>,
    /// Each node's durable incarnation.
    pub durable: Vec<Incarnation>,
    pub network: BTreeSet<(NodeId, NodeId, Message)>,
    /// Ghost: the highest incarnation each node ever held or anyone heard of it.
    pub highest: Vec<Incarnation>,
    pub crashes: u8,
    pub restarts: u8,
    pub pauses: u8,
    pub losses: u8,
    pub leaves: u8,
    pub cuts: u8,
    /// Links cut for good, each as (lower id, higher id).
    pub cut: BTreeSet<(NodeId, NodeId)>,
    /// Ghost: a view that went back to a lower incarnation in the last step, for the safety
    /// check (which sees one state at a time).
    pub regression: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GossipAction {
    Tick,
    Deliver(NodeId, NodeId, Message),
    Lose(NodeId, NodeId, Message),
    Crash(NodeId),
    Restart(NodeId),
    Pause(NodeId),
    Resume(NodeId),
    Leave(NodeId),
    /// Cuts the link between two members for good.
    Cut(NodeId, NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum GossipFair {
    Tick,
    Deliver(NodeId, NodeId, Message),
    Resume(NodeId),
}

#[derive(Debug)]
pub struct GossipModel {
    options: GossipModelOptions,
    configs: Vec<Config>,
}

/// The fixed "now" of every state; a tick happens at NOW + 1 ms and is relabelled back.
const NOW: Instant = Instant(1_000_000_000);
const TICK: Duration = Duration(1_000_000);

fn address(id: NodeId) -> Address {
    Address(format!("n{}", id.0))
}

/// A link, named by its two ends in order.
fn link(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

fn node_of(address: &Address) -> Option<NodeId> {
    address.0.strip_prefix('n')?.parse().ok().map(NodeId)
}

impl GossipModel {
    /// A model of the cluster `options` describes; fails if the options make no sense.
    pub fn new(options: GossipModelOptions) -> Result<GossipModel, String> {
        if options.nodes < 2 || options.nodes > 5 {
            return Err(format!("--nodes must lie between 2 and 5, not {}", options.nodes));
        }
        let ids: Vec<NodeId> = (1..=options.nodes as i32).map(NodeId).collect();
        let configs: Vec<Config> = ids
            .iter()
            .map(|id| Config {
                probe_interval: Duration(TICK.0 * options.probe_interval_ticks),
                probe_timeout: Duration(TICK.0 * options.probe_timeout_ticks),
                suspicion_timeout: Duration(TICK.0 * options.suspicion_timeout_ticks),
                indirect_probes: options.indirect_probes,
                retransmit_multiplier: options.retransmit_multiplier,
                anti_entropy_records: options.anti_entropy_records,
                members_max: options.nodes,
                mutation: options.mutation,
                // Everyone joins through n1.
                ..Config::new(*id, address(*id), vec![address(NodeId(1))])
            })
            .collect();
        configs[0].validate().map_err(|e| format!("invalid gossip configuration: {e}"))?;
        Ok(GossipModel { options, configs })
    }

    fn index(id: NodeId) -> usize {
        (id.0 - 1) as usize
    }

    /// Persists complete at once; messages join the network (those on a cut link are lost);
    /// changes are not needed here.
    fn settle(
        gossip: &mut Gossip,
        durable: &mut Incarnation,
        network: &mut BTreeSet<(NodeId, NodeId, Message)>,
        cut: &BTreeSet<(NodeId, NodeId)>,
    ) {
        while let Some(d) = gossip.poll_persist() {
            *durable = d.incarnation;
            gossip.handle_persisted(NOW, d);
        }
        let from = gossip.id();
        for o in gossip.drain_messages() {
            if let Some(to) = node_of(&o.to) {
                if cut.contains(&link(from, to)) {
                    continue;
                }
                network.insert((from, to, o.message));
            }
        }
        gossip.drain_changes();
    }

    fn settle_node(s: &mut GossipState, i: usize) {
        let mut network = std::mem::take(&mut s.network);
        if let Some(g) = s.slots[i].gossip_mut() {
            Self::settle(g, &mut s.durable[i], &mut network, &s.cut);
        }
        s.network = network;
    }

    /// A record in a view of a node that kept running through the step, now at a lower
    /// incarnation than before it.
    fn regression(before: &GossipState, after: &GossipState, action: &GossipAction) -> Option<String> {
        for (i, (b, a)) in before.slots.iter().zip(&after.slots).enumerate() {
            let (Some(b), Some(a)) = (b.gossip(), a.gossip()) else { continue };
            if matches!(action, GossipAction::Restart(id) if Self::index(*id) == i) {
                continue;
            }
            for old in b.members() {
                let new = a.member(old.id);
                if new.is_none_or(|m| m.incarnation < old.incarnation) {
                    return Some(format!(
                        "n{}'s record of n{} went back from {} to {}",
                        i + 1,
                        old.id.0,
                        old,
                        new.map_or("nothing".to_string(), ToString::to_string)
                    ));
                }
            }
        }
        None
    }

    /// Every incarnation in the state, with whose it is.
    fn incarnations(state: &GossipState) -> Vec<(NodeId, Incarnation)> {
        let mut all = Vec::new();
        for (i, slot) in state.slots.iter().enumerate() {
            let id = NodeId(i as i32 + 1);
            all.push((id, state.durable[i]));
            all.push((id, state.highest[i]));
            if let Some(g) = slot.gossip() {
                all.extend(g.incarnations());
            }
        }
        for (_, _, m) in &state.network {
            all.extend(m.incarnations());
        }
        all
    }

    /// Raises the ghost, then renumbers incarnations and sequence numbers (see the module
    /// documentation). Returns the largest spread of one member's incarnations.
    fn normalize(&self, s: &mut GossipState) -> u64 {
        let n = s.slots.len();
        let all = Self::incarnations(s);
        let mut lowest = vec![u64::MAX; n];
        for (id, inc) in &all {
            let i = Self::index(*id);
            if i < n {
                lowest[i] = lowest[i].min(inc.0);
                s.highest[i] = s.highest[i].max(*inc);
            }
        }
        let spread = (0..n).map(|i| s.highest[i].0 - lowest[i]).max().unwrap_or(0);
        let latest: Vec<u64> = s.slots.iter().map(|slot| slot.gossip().map_or(u64::MAX, |g| g.sequence())).collect();
        let incarnation_by = |id: NodeId| lowest.get(Self::index(id)).copied().unwrap_or(0);
        let sequence_by = |id: NodeId| latest.get(Self::index(id)).map_or(0, |l| l.saturating_sub(1));
        for (i, slot) in s.slots.iter_mut().enumerate() {
            s.durable[i].0 -= lowest[i];
            s.highest[i].0 -= lowest[i];
            if let Some(g) = slot.gossip_mut() {
                g.relabel(Duration::ZERO, NOW, &incarnation_by, &sequence_by);
            }
        }
        s.network = std::mem::take(&mut s.network)
            .into_iter()
            .map(|(f, t, mut m)| {
                m.relabel(&incarnation_by, &sequence_by);
                (f, t, m)
            })
            .collect();
        spread
    }
}

impl Model for GossipModel {
    type State = GossipState;
    type Action = GossipAction;
    type FairKey = GossipFair;

    fn initial(&self) -> GossipState {
        let n = self.configs.len();
        let mut s = GossipState {
            slots: self.configs.iter().map(|c| Slot::Up(Gossip::start(c.clone(), Durable::default(), NOW))).collect(),
            durable: vec![Incarnation(0); n],
            network: BTreeSet::new(),
            highest: vec![Incarnation(0); n],
            crashes: self.options.crashes,
            restarts: self.options.restarts,
            pauses: self.options.pauses,
            losses: self.options.losses,
            leaves: self.options.leaves,
            cuts: self.options.cuts,
            cut: BTreeSet::new(),
            regression: None,
        };
        for i in 0..n {
            Self::settle_node(&mut s, i);
        }
        self.normalize(&mut s);
        if self.options.formed {
            // One fixed schedule from boot: messages in order, then a tick, for long enough
            // that every node has probed every other and passed every update on.
            let ticks = 4 * self.options.probe_interval_ticks * n as u64;
            for _ in 0..ticks {
                while let Some((f, t, m)) = s.network.first().cloned() {
                    s = self.step(&s, &GossipAction::Deliver(f, t, m), &mut Choices::default()).expect("within bounds");
                }
                s = self.step(&s, &GossipAction::Tick, &mut Choices::default()).expect("within bounds");
            }
            while let Some((f, t, m)) = s.network.first().cloned() {
                s = self.step(&s, &GossipAction::Deliver(f, t, m), &mut Choices::default()).expect("within bounds");
            }
            assert!(converged(&s), "the cluster did not form: {s:?}");
        }
        s
    }

    fn actions(&self, state: &GossipState) -> Vec<GossipAction> {
        let mut actions = Vec::new();
        if state.network.is_empty() {
            actions.push(GossipAction::Tick);
        }
        for (f, t, m) in &state.network {
            actions.push(GossipAction::Deliver(*f, *t, m.clone()));
        }
        for (i, slot) in state.slots.iter().enumerate() {
            if let Slot::Paused(_) = slot {
                actions.push(GossipAction::Resume(NodeId(i as i32 + 1)));
            }
        }
        if state.losses > 0 {
            for (f, t, m) in &state.network {
                actions.push(GossipAction::Lose(*f, *t, m.clone()));
            }
        }
        for (i, slot) in state.slots.iter().enumerate() {
            let id = NodeId(i as i32 + 1);
            match slot {
                Slot::Up(_) => {
                    if state.crashes > 0 {
                        actions.push(GossipAction::Crash(id));
                    }
                    if state.pauses > 0 {
                        actions.push(GossipAction::Pause(id));
                    }
                    if state.leaves > 0 {
                        actions.push(GossipAction::Leave(id));
                    }
                }
                Slot::Paused(_) => {
                    if state.crashes > 0 {
                        actions.push(GossipAction::Crash(id));
                    }
                }
                Slot::Down => {
                    if state.restarts > 0 {
                        actions.push(GossipAction::Restart(id));
                    }
                }
            }
        }
        if state.cuts > 0 {
            for a in 1..=state.slots.len() as i32 {
                for b in a + 1..=state.slots.len() as i32 {
                    if !state.cut.contains(&(NodeId(a), NodeId(b))) {
                        actions.push(GossipAction::Cut(NodeId(a), NodeId(b)));
                    }
                }
            }
        }
        actions
    }

    fn step(&self, state: &GossipState, action: &GossipAction, choices: &mut Choices) -> Option<GossipState> {
        let mut s = state.clone();
        match action {
            GossipAction::Tick => {
                let later = NOW + TICK;
                for i in 0..s.slots.len() {
                    if let Slot::Up(g) = &mut s.slots[i] {
                        g.handle_tick(later, choices);
                    }
                    Self::settle_node(&mut s, i);
                }
                let keep = |_: NodeId| 0;
                for slot in &mut s.slots {
                    if let Some(g) = slot.gossip_mut() {
                        g.relabel(TICK, NOW, &keep, &keep);
                    }
                }
            }
            GossipAction::Deliver(from, to, message) => {
                s.network.remove(&(*from, *to, message.clone()));
                let i = Self::index(*to);
                if let Slot::Up(g) = &mut s.slots[i] {
                    g.handle_message(NOW, message.clone());
                    Self::settle_node(&mut s, i);
                }
            }
            GossipAction::Lose(from, to, message) => {
                s.network.remove(&(*from, *to, message.clone()));
                s.losses -= 1;
            }
            GossipAction::Crash(id) => {
                s.crashes -= 1;
                s.slots[Self::index(*id)] = Slot::Down;
            }
            GossipAction::Restart(id) => {
                s.restarts -= 1;
                let i = Self::index(*id);
                let durable = Durable { incarnation: s.durable[i] };
                s.slots[i] = Slot::Up(Gossip::start(self.configs[i].clone(), durable, NOW));
                Self::settle_node(&mut s, i);
            }
            GossipAction::Pause(id) => {
                s.pauses -= 1;
                let i = Self::index(*id);
                let Slot::Up(g) = std::mem::replace(&mut s.slots[i], Slot::Down) else {
                    unreachable!("only Up pauses")
                };
                s.slots[i] = Slot::Paused(g);
            }
            GossipAction::Resume(id) => {
                let i = Self::index(*id);
                let Slot::Paused(g) = std::mem::replace(&mut s.slots[i], Slot::Down) else {
                    unreachable!("only Paused resumes")
                };
                s.slots[i] = Slot::Up(g);
            }
            GossipAction::Leave(id) => {
                s.leaves -= 1;
                let i = Self::index(*id);
                if let Slot::Up(g) = &mut s.slots[i] {
                    g.leave(NOW);
                }
                Self::settle_node(&mut s, i);
                s.slots[i] = Slot::Down;
            }
            GossipAction::Cut(a, b) => {
                s.cuts -= 1;
                let cut = link(*a, *b);
                s.cut.insert(cut);
                // What was on the wire is lost with the link.
                s.network.retain(|(f, t, _)| link(*f, *t) != cut);
            }
        }
        if self.options.check_record_regression {
            s.regression = Self::regression(state, &s, action);
        }
        let spread = self.normalize(&mut s);
        if spread > self.options.max_incarnation_spread || s.network.len() > self.options.max_in_flight {
            return None;
        }
        Some(s)
    }

    fn fair_key(&self, _state: &GossipState, action: &GossipAction) -> Option<GossipFair> {
        match action {
            GossipAction::Tick => Some(GossipFair::Tick),
            GossipAction::Deliver(f, t, m) => Some(GossipFair::Deliver(*f, *t, m.clone())),
            GossipAction::Resume(id) => Some(GossipFair::Resume(*id)),
            _ => None,
        }
    }

    fn scheduler_chooses(&self, action: &GossipAction) -> bool {
        self.options.scheduler_orders_probes && matches!(action, GossipAction::Tick)
    }

    fn check(&self, state: &GossipState) -> Result<(), String> {
        if let Some(regression) = &state.regression {
            return Err(format!("incarnations never decrease: {regression}"));
        }
        for (i, slot) in state.slots.iter().enumerate() {
            let Some(g) = slot.gossip() else { continue };
            g.check_invariants()?;
            let me = g.member(g.id()).ok_or_else(|| format!("n{} does not know itself", i + 1))?;
            if matches!(me.status, Status::Dead | Status::Suspect) {
                return Err(format!("n{} runs but holds itself {}", i + 1, me.status));
            }
            if g.incarnation() < state.highest[i] {
                return Err(format!(
                    "n{} runs at incarnation {} below {}, which it held or announced before",
                    i + 1,
                    g.incarnation(),
                    state.highest[i]
                ));
            }
        }
        Ok(())
    }

    fn properties(&self) -> Vec<Property<GossipState>> {
        vec![Property { name: "every running node's view matches reality", goal: converged }]
    }

    fn describe_action(&self, _state: &GossipState, action: &GossipAction) -> String {
        match action {
            GossipAction::Tick => "one tick passes".to_string(),
            GossipAction::Deliver(f, t, m) => format!("n{} -> n{}: {}", f.0, t.0, m),
            GossipAction::Lose(f, t, m) => format!("LOST n{} -> n{}: {}", f.0, t.0, m),
            GossipAction::Crash(id) => format!("n{} CRASHES", id.0),
            GossipAction::Restart(id) => format!("n{} RESTARTS from its durable incarnation", id.0),
            GossipAction::Pause(id) => format!("n{} PAUSES (answers nothing)", id.0),
            GossipAction::Resume(id) => format!("n{} resumes", id.0),
            GossipAction::Leave(id) => format!("n{} LEAVES gracefully", id.0),
            GossipAction::Cut(a, b) => {
                format!("the link n{} - n{} is CUT for good (both run; nothing passes between them)", a.0, b.0)
            }
        }
    }

    fn describe_state(&self, before: Option<&GossipState>, after: &GossipState) -> Vec<String> {
        let line = |s: &GossipState, i: usize| match &s.slots[i] {
            Slot::Up(g) => g.describe(),
            Slot::Paused(g) => format!("{} (PAUSED)", g.describe()),
            Slot::Down => format!("n{} down, durable incarnation {}", i + 1, s.durable[i]),
        };
        let mut lines = Vec::new();
        for i in 0..after.slots.len() {
            let now = line(after, i);
            if before.is_none_or(|b| line(b, i) != now) {
                lines.push(now);
            }
        }
        if before.is_none() {
            lines.push(format!(
                "faults left: {} crashes, {} restarts, {} pauses, {} losses, {} leaves, {} cuts; incarnations are \
                 renumbered per member after every step (the lowest in the system is 0)",
                after.crashes, after.restarts, after.pauses, after.losses, after.leaves, after.cuts
            ));
        }
        lines
    }
}

/// Every running (or paused) node holds every running node Alive at its current incarnation,
/// and every node that is down as Dead, Left or not at all.
pub fn converged(state: &GossipState) -> bool {
    state.slots.iter().filter_map(Slot::gossip).all(|viewer| {
        state.slots.iter().enumerate().all(|(j, slot)| {
            let record = viewer.member(NodeId(j as i32 + 1));
            match slot.gossip() {
                Some(g) => record.is_some_and(|m| m.status == Status::Alive && m.incarnation == g.incarnation()),
                None => record.is_none_or(|m| matches!(m.status, Status::Dead | Status::Left)),
            }
        })
    })
}
