//! The Raft simulation: N nodes of the real [`keel_raft::Raft`] core on simulated time.
//!
//! Everything happens in one thread through the harness's event queue (see [`crate::harness`]),
//! ordered by (time, sequence number). Events are message deliveries, node timers, disk write
//! completions, restarts and client steps, and the harness's fault injections and partition
//! changes. After every event the node it touched
//! hands over its effects (persists to the disk, messages to the network, committed entries to
//! the state machine), gets its timer re-armed, and is checked.

mod oracle;
pub(crate) mod store;

use std::collections::{BTreeMap, BTreeSet};

use keel_raft::{
    Apply, Config, Durable, Entry, LogIndex, Message, Mutation, Payload, Persist, ProposeError, Raft, Recovery,
    RoleKind,
};
use keel_types::{Duration, Instant, NodeId, Rng};

use crate::harness::{
    self, draw_fault_interval_ms_mean, draw_fault_kinds, fork, ms, upto, Failure, Harness, Phase, Scenario, SimReport,
    Streams,
};
use crate::network::{cut_one_way_at_random, isolate, show_links, show_side, split, Links, Network, NetworkFaults};
use crate::trace::{Fnv1a, Trace};
use oracle::{Oracle, Watch};
use store::{CrashLoss, RaftStore};

/// Most voters a simulated cluster may have.
pub const NODES_MAX: usize = 9;
/// Most observers a simulated cluster may have.
pub const OBSERVERS_MAX: usize = 4;

/// Most events one run may take. A correct run of the default length takes well under a
/// million; hitting the bound means a message storm or a timer that never advances.
const EVENTS_MAX: u64 = 20_000_000;
/// Most messages on the wire at once; beyond it the network drops, as a full buffer would.
const IN_FLIGHT_MAX: usize = 50_000;
/// Commands the client has proposed and not yet seen applied.
const CLIENT_OUTSTANDING_MAX: usize = 16;
/// Commands the client sends in one step.
const CLIENT_SENDS_PER_STEP: usize = 4;
/// How long the client waits for a command it handed to a leader to show up applied before
/// it sends it again (possibly to another leader, which may apply it twice).
const CLIENT_RETRY: Duration = Duration(300_000_000);
/// The longest simulated run accepted, safety and liveness phases together: one day.
const RUN_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// What to simulate. [`RaftSimOptions::new`] gives the defaults CI sweeps with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaftSimOptions {
    /// Derives every random choice of the run.
    pub seed: u64,
    /// Voters.
    pub nodes: usize,
    /// Non-voting members that replicate the log.
    pub observers: usize,
    /// R, the replication quorum; `None` is a majority of the voters.
    pub replication_quorum: Option<usize>,
    /// E, the election quorum; `None` is a majority of the voters.
    pub election_quorum: Option<usize>,
    /// Simulated time with faults.
    pub safety_ms: u64,
    /// Then faults stop and the network heals: within this much simulated time a leader must
    /// be elected, every command committed and every node caught up, or the run fails.
    pub liveness_ms: u64,
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    pub heartbeat_interval_ms: u64,
    /// Each node snapshots its state machine and compacts its log after about this many
    /// applied entries (jittered per node), so lagging nodes catch up by InstallSnapshot.
    /// Zero never compacts.
    pub compact_every_entries: u64,
    pub faults: FaultOptions,
    /// A planted bug in every node (see [`keel_raft::Mutation`]); the run should fail.
    pub mutation: Option<Mutation>,
    /// Keep the trace lines in the report (the hash covers them either way).
    pub record_trace: bool,
}

/// Which faults the safety phase injects and how hard. Probabilities and bounds are maxima:
/// each seed draws its own values up to them, so a sweep covers gentle and harsh runs alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultOptions {
    /// One-way network delay bound; each seed draws its own bound between 1 ms and this.
    pub network_delay_ms_max: u64,
    pub message_loss_percent_max: u64,
    pub message_duplicate_percent_max: u64,
    /// Messages delayed 5-20 times longer than usual, which reorders them well past later
    /// ones.
    pub delay_spike_percent_max: u64,
    /// Symmetric splits, one node isolated, one-way cuts, and links that flap.
    pub partitions: bool,
    /// Nodes crash and restart from their disk, losing unsynced writes; now and then the
    /// whole cluster loses power at once and comes back within a few milliseconds.
    pub crashes: bool,
    /// On a crash the last surviving unsynced write may be torn: only a prefix of its entries
    /// reaches the disk.
    pub torn_writes: bool,
    /// Some crashes replace the voter's disk: it restarts with its Raft state gone and
    /// recovers it from the other voters (one such voter at a time: two forgetting at once
    /// is more than Raft tolerates). Only with `crashes` and two voters or more.
    pub disk_swaps: bool,
    /// A node's disk takes 50-800 ms per write for a while.
    pub slow_disks: bool,
    /// A node's monotonic clock jumps forward, so its timers fire early relative to others.
    pub clock_jumps: bool,
    /// The leader is asked to hand leadership to another voter.
    pub leadership_transfers: bool,
    /// Mean simulated time between two injected faults; each seed draws its own mean
    /// between a quarter and twice this.
    pub fault_interval_ms_mean: u64,
    /// Crash points: a node crashes right after a write of its completes (a vote, an
    /// append) with this probability in thousandths, drawn per seed up to this bound. Random
    /// crashes rarely land in the moment between a write and what depends on it; these do.
    /// Only when `crashes` is on.
    pub crash_after_write_permille_max: u64,
    /// Each seed switches off a random subset of the fault kinds enabled above ("swarm
    /// testing"): a fault that keeps interrupting a scenario can hide the bug that scenario
    /// needs.
    pub swarm: bool,
}

impl FaultOptions {
    /// No faults at all: a perfect network and disks, nothing crashes.
    pub fn none() -> FaultOptions {
        FaultOptions {
            network_delay_ms_max: 1,
            message_loss_percent_max: 0,
            message_duplicate_percent_max: 0,
            delay_spike_percent_max: 0,
            partitions: false,
            crashes: false,
            torn_writes: false,
            disk_swaps: false,
            slow_disks: false,
            clock_jumps: false,
            leadership_transfers: false,
            fault_interval_ms_mean: 500,
            crash_after_write_permille_max: 0,
            swarm: false,
        }
    }
}

impl Default for FaultOptions {
    fn default() -> FaultOptions {
        FaultOptions {
            network_delay_ms_max: 30,
            message_loss_percent_max: 10,
            message_duplicate_percent_max: 5,
            delay_spike_percent_max: 5,
            partitions: true,
            crashes: true,
            torn_writes: true,
            disk_swaps: true,
            slow_disks: true,
            clock_jumps: true,
            leadership_transfers: true,
            fault_interval_ms_mean: 500,
            crash_after_write_permille_max: 10,
            swarm: true,
        }
    }
}

impl RaftSimOptions {
    /// Three voters with majority quorums, 20 s of faults, then at most 10 s to converge.
    pub fn new(seed: u64) -> RaftSimOptions {
        RaftSimOptions {
            seed,
            nodes: 3,
            observers: 0,
            replication_quorum: None,
            election_quorum: None,
            safety_ms: 20_000,
            liveness_ms: 10_000,
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            heartbeat_interval_ms: 50,
            compact_every_entries: 50,
            faults: FaultOptions::default(),
            mutation: None,
            record_trace: false,
        }
    }

    /// The configuration every node would run with, or why it is refused.
    pub fn validate(&self) -> Result<(), String> {
        if self.nodes == 0 || self.nodes > NODES_MAX {
            return Err(format!("--nodes must lie between 1 and {NODES_MAX}; got {}", self.nodes));
        }
        if self.observers > OBSERVERS_MAX {
            return Err(format!("--observers must be at most {OBSERVERS_MAX}; got {}", self.observers));
        }
        if self.liveness_ms == 0 || self.safety_ms.saturating_add(self.liveness_ms) > RUN_MS_MAX {
            return Err(format!(
                "the liveness phase must be positive and both phases together at most {RUN_MS_MAX} ms"
            ));
        }
        let f = &self.faults;
        if f.message_loss_percent_max > 100
            || f.message_duplicate_percent_max > 100
            || f.delay_spike_percent_max > 100
            || f.crash_after_write_permille_max > 1000
        {
            return Err("fault percentages must lie between 0 and 100".to_string());
        }
        if f.network_delay_ms_max == 0 || f.network_delay_ms_max > 60_000 || f.fault_interval_ms_mean == 0 {
            return Err("the network delay bound must lie between 1 ms and 60 s, the fault interval be positive".into());
        }
        self.node_config(NodeId(1), 0).validate().map_err(|e| format!("invalid Raft configuration: {e}"))
    }

    fn node_config(&self, id: NodeId, append_entries_max: usize) -> Config {
        let voters: Vec<NodeId> = (1..=self.nodes as i32).map(NodeId).collect();
        let observers = (1..=self.observers as i32).map(|i| NodeId(self.nodes as i32 + i)).collect();
        let majority = self.nodes / 2 + 1;
        let defaults = Config::new(id, voters);
        Config {
            observers,
            replication_quorum: self.replication_quorum.unwrap_or(majority),
            election_quorum: self.election_quorum.unwrap_or(majority),
            election_timeout_min: Duration::from_millis(self.election_timeout_ms_min),
            election_timeout_max: Duration::from_millis(self.election_timeout_ms_max),
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            append_entries_max: append_entries_max.max(1),
            uncommitted_entries_max: 1024,
            transfer_timeout: Duration::from_millis(self.election_timeout_ms_max.saturating_mul(2)),
            mutation: self.mutation,
            ..defaults
        }
    }
}

impl Default for RaftSimOptions {
    fn default() -> RaftSimOptions {
        RaftSimOptions::new(0)
    }
}

/// Counts over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub simulated_ms: u64,
    pub events: u64,
    pub messages_sent: u64,
    pub messages_delivered: u64,
    /// Lost, cut by a partition, or addressed to a crashed node.
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    pub disk_writes: u64,
    /// Terms in which some node became leader.
    pub leaders_elected: u64,
    pub highest_term: u64,
    /// The highest index seen committed.
    pub committed_index: u64,
    pub commands_proposed: u64,
    pub commands_committed: u64,
    /// Commands applied at more than one index (a retry raced the first attempt).
    pub commands_duplicated: u64,
    pub crashes: u64,
    /// Crashes after which the voter came back on an empty disk.
    pub disk_swaps: u64,
    /// Unsynced writes a crash threw away (whole or partly).
    pub writes_lost: u64,
    pub torn_writes: u64,
    pub partitions: u64,
    pub slow_disks: u64,
    pub clock_jumps: u64,
    pub transfers: u64,
    pub compactions: u64,
    /// Snapshots loaded into a running state machine (from InstallSnapshot or at restart).
    pub snapshots_applied: u64,
    /// How long the liveness phase took to converge, if it did.
    pub liveness_converged_ms: Option<u64>,
}

/// The result of one run.
pub type RaftSimReport = SimReport<Stats>;

/// Runs one seed. Never panics on a finding: a violated invariant, a core that panics, or a
/// cluster that does not converge all come back as a [`Failure`].
pub fn run_raft(options: &RaftSimOptions) -> RaftSimReport {
    harness::run_seed(options.seed, options.validate(), || Sim::new(options), Sim::finish)
}

// ---- the simulation --------------------------------------------------------------------------

#[derive(Debug)]
enum Event {
    Deliver { from: usize, to: usize, message: Message },
    Timer { node: usize },
    DiskDone { node: usize, incarnation: u64 },
    Restart { node: usize, incarnation: u64 },
    Client,
}

/// The state machine every node runs: a hash chain over the applied entries, so two nodes
/// agree on the state after an index exactly when they applied the same entries up to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Machine {
    pub(crate) index: LogIndex,
    pub(crate) hash: u64,
}

impl Machine {
    fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        if entry.index != self.index + 1 {
            return Err(format!("entry {} applied after index {}", entry.index, self.index));
        }
        let mut hash = Fnv1a::new();
        hash.write(&self.hash.to_le_bytes());
        hash.write(&entry.index.to_le_bytes());
        match &entry.payload {
            Payload::Noop => hash.write(&[0]),
            Payload::Command(c) => {
                hash.write(&[1]);
                hash.write(c);
            }
        }
        *self = Machine { index: entry.index, hash: hash.finish() };
        Ok(())
    }

    fn encode(&self) -> Vec<u8> {
        let mut data = self.index.to_le_bytes().to_vec();
        data.extend_from_slice(&self.hash.to_le_bytes());
        data
    }

    pub(crate) fn decode(data: &[u8]) -> Result<Machine, String> {
        let field = |range: std::ops::Range<usize>| -> Result<u64, String> {
            let bytes: [u8; 8] = data
                .get(range)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("snapshot data is {} bytes, not 16", data.len()))?;
            Ok(u64::from_le_bytes(bytes))
        };
        if data.len() != 16 {
            return Err(format!("snapshot data is {} bytes, not 16", data.len()));
        }
        Ok(Machine { index: field(0..8)?, hash: field(8..16)? })
    }
}

/// One simulated machine: the core while it runs, and its disk and clock, which outlive it.
#[derive(Debug)]
struct Node {
    id: NodeId,
    config: Config,
    /// `None` while crashed.
    raft: Option<Raft>,
    rng: Rng,
    /// Bumped by every crash, so events addressed to an earlier life are ignored.
    incarnation: u64,
    /// Its Raft state on disk.
    store: RaftStore,
    slow_disk_until: Instant,
    /// Added to simulated time to give this node's monotonic clock; it only grows.
    clock_offset: Duration,
    /// The queue key of this node's armed timer.
    timer: Option<(Instant, u64)>,
    machine: Machine,
    compact_every: u64,
    watch: Watch,
}

impl Node {
    fn up(&self) -> bool {
        self.raft.is_some()
    }
}

#[derive(Debug)]
struct Client {
    next_number: u64,
    /// Commands proposed and not yet seen applied, with when to send each (again).
    pending: BTreeMap<u64, Instant>,
    /// Where each command was first applied.
    applied_at: BTreeMap<u64, LogIndex>,
    /// Commands applied again at another index.
    duplicates: BTreeSet<(u64, LogIndex)>,
    believed_leader: Option<usize>,
    rng: Rng,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    Crash,
    PowerLoss,
    Partition,
    SlowDisk,
    ClockJump,
    Transfer,
}

impl FaultKind {
    /// How often this kind is drawn relative to the others: a power loss takes the whole
    /// cluster down, so it comes a third as often as each other fault.
    fn weight(self) -> u64 {
        match self {
            FaultKind::PowerLoss => 1,
            _ => 3,
        }
    }
}

struct Sim<'a> {
    options: &'a RaftSimOptions,
    harness: Harness<Event, Links>,
    nodes: Vec<Node>,
    network: Network,
    client: Client,
    faults: Vec<FaultKind>,
    crash_after_write_permille: u64,
    disk_rng: Rng,
    /// Decides which crashes replace the disk: a stream of its own, so seeds draw every other
    /// fault as they did before disk swaps existed.
    swap_rng: Rng,
    oracle: Oracle,
    stats: Stats,
}

impl<'a> Sim<'a> {
    fn new(options: &'a RaftSimOptions) -> Sim<'a> {
        // Separate streams, so a change in how one part draws does not reshuffle the others.
        let Streams {
            mut master,
            mut knobs,
            network: network_rng,
            fault: fault_rng,
            client: client_rng,
            disk: disk_rng,
        } = Streams::new(options.seed);
        let f = &options.faults;
        let network_faults = NetworkFaults {
            loss_percent_max: f.message_loss_percent_max,
            duplicate_percent_max: f.message_duplicate_percent_max,
            spike_percent_max: f.delay_spike_percent_max,
            delay_us_max_min: 1_000,
            delay_ms_max: f.network_delay_ms_max,
        };
        let network = Network::draw(&mut knobs, network_faults, IN_FLIGHT_MAX, network_rng);
        let kinds = [
            (f.crashes, FaultKind::Crash),
            (f.crashes, FaultKind::PowerLoss),
            (f.partitions, FaultKind::Partition),
            (f.slow_disks, FaultKind::SlowDisk),
            (f.clock_jumps, FaultKind::ClockJump),
            (f.leadership_transfers, FaultKind::Transfer),
        ];
        let faults = draw_fault_kinds(&mut knobs, f.swarm, kinds);
        let fault_interval_ms_mean = draw_fault_interval_ms_mean(&mut knobs, f.fault_interval_ms_mean);
        let crash_after_write_permille =
            if faults.contains(&FaultKind::Crash) { upto(&mut knobs, f.crash_after_write_permille_max) } else { 0 };
        // Small batches make catching up take many round trips; large ones few.
        let append_entries_max = [4, 16, 64, 256][knobs.below(4) as usize];
        let total = options.nodes + options.observers;
        let mut nodes = Vec::with_capacity(total);
        for i in 0..total {
            let id = NodeId(i as i32 + 1);
            let compact_every = match options.compact_every_entries {
                0 => 0,
                n => knobs.range_inclusive(n.div_ceil(2), n + n / 2),
            };
            nodes.push(Node {
                id,
                config: options.node_config(id, append_entries_max),
                raft: None,
                rng: fork(&mut master),
                incarnation: 0,
                store: RaftStore::default(),
                slow_disk_until: Instant::ZERO,
                clock_offset: Duration::ZERO,
                timer: None,
                machine: Machine::default(),
                compact_every,
                watch: Watch::default(),
            });
        }
        let mut trace = Trace::new(options.record_trace);
        trace.line(
            Instant::ZERO,
            format_args!(
                "seed {} nodes {} observers {} R {} E {} mutation {:?}; loss {}% duplicate {}% spike {}% \
                 delay <= {} us; faults {:?} every {fault_interval_ms_mean} ms, crash after {crash_after_write_permille}/1000 \
                 of writes; append_entries_max {append_entries_max}; compact every {:?}",
                options.seed,
                options.nodes,
                options.observers,
                nodes[0].config.replication_quorum,
                nodes[0].config.election_quorum,
                options.mutation,
                network.loss_percent,
                network.duplicate_percent,
                network.spike_percent,
                network.delay_us_max,
                faults,
                nodes.iter().map(|n| n.compact_every).collect::<Vec<_>>(),
            ),
        );
        Sim {
            options,
            harness: Harness::new(options.safety_ms, options.liveness_ms, fault_rng, fault_interval_ms_mean, trace),
            nodes,
            network,
            client: Client {
                next_number: 1,
                pending: BTreeMap::new(),
                applied_at: BTreeMap::new(),
                duplicates: BTreeSet::new(),
                believed_leader: None,
                rng: client_rng,
            },
            faults,
            crash_after_write_permille,
            disk_rng,
            swap_rng: Rng::new(options.seed ^ 0x5eed_d15c_0000_0001),
            oracle: Oracle::default(),
            stats: Stats::default(),
        }
    }

    fn finish(mut self, outcome: Result<u64, Failure>) -> RaftSimReport {
        self.stats.liveness_converged_ms = outcome.as_ref().ok().copied();
        self.stats.events = self.harness.events;
        self.stats.simulated_ms = self.harness.now.as_millis();
        self.stats.leaders_elected = self.oracle.leaders_elected() as u64;
        self.stats.committed_index = self.oracle.highest_committed();
        self.stats.commands_committed = self.client.applied_at.len() as u64;
        self.stats.commands_duplicated = self.client.duplicates.len() as u64;
        self.harness.finish(self.options.seed, outcome.map(|_| ()), self.stats)
    }

    fn node_now(&self, i: usize) -> Instant {
        self.harness.now + self.nodes[i].clock_offset
    }

    fn index_of(&self, id: NodeId) -> Result<usize, String> {
        let i = usize::try_from(id.0 - 1).map_err(|_| format!("a message addressed to unknown node {id}"))?;
        if i >= self.nodes.len() {
            return Err(format!("a message addressed to unknown node {id}"));
        }
        Ok(i)
    }

    fn summary(&self, i: usize) -> String {
        let node = &self.nodes[i];
        match &node.raft {
            None => format!("n{} down", node.id),
            Some(raft) => {
                let role = match raft.role() {
                    RoleKind::Follower => "F",
                    RoleKind::PreCandidate => "P",
                    RoleKind::Candidate => "C",
                    RoleKind::Leader => "L",
                };
                format!(
                    "n{} {role} t{} c{} a{} l{}",
                    node.id,
                    raft.term(),
                    raft.commit_index(),
                    raft.applied_index(),
                    raft.last_index()
                )
            }
        }
    }

    // ---- nodes ---------------------------------------------------------------------------

    /// Feeds one input to node `i`, then collects its effects, checks it and traces the step.
    /// `text` describes the input; a core that panics on it is reported with it.
    fn input<R>(
        &mut self,
        i: usize,
        text: String,
        feed: impl FnOnce(&mut Raft, Instant, &mut Rng) -> R,
        outcome: impl FnOnce(&R) -> String,
    ) -> Result<R, String> {
        let now = self.node_now(i);
        let node = &mut self.nodes[i];
        let Some(raft) = node.raft.as_mut() else {
            return Err(format!("simulator bug: input to crashed n{}: {text}", node.id));
        };
        self.harness.current = text;
        let value = feed(raft, now, &mut node.rng);
        let result = self.after_input(i);
        let summary = self.summary(i);
        let text = std::mem::take(&mut self.harness.current);
        let verdict = if result.is_ok() { "" } else { " FAILS" };
        self.harness.trace.line(self.harness.now, format_args!("{text}{} => {summary}{verdict}", outcome(&value)));
        result.map(|()| value)
    }

    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let now = self.node_now(i);
        let node = &mut self.nodes[i];
        let raft = Raft::new(node.config.clone(), now, &mut node.rng);
        node.raft = Some(raft);
        node.watch = Watch { log_dirty: true, ..Watch::default() };
        self.after_input(i)
    }

    fn restart(&mut self, i: usize) -> Result<(), String> {
        let now = self.node_now(i);
        let node = &mut self.nodes[i];
        let raft = Raft::restart(node.config.clone(), node.store.durable().clone(), now, &mut node.rng);
        node.watch = Watch {
            commit_index: raft.commit_index(),
            applied_index: raft.applied_index(),
            leader_checked: None,
            log_dirty: true,
        };
        node.raft = Some(raft);
        node.machine = Machine::default();
        node.store.restart(self.harness.now);
        let result = self.after_input(i);
        let summary = self.summary(i);
        self.harness.trace.line(self.harness.now, format_args!("restart => {summary}"));
        result
    }

    fn crash(&mut self, i: usize, downtime: Duration) {
        let node = &mut self.nodes[i];
        if node.raft.take().is_none() {
            return;
        }
        if let Some(key) = node.timer.take() {
            self.harness.cancel(key);
        }
        let CrashLoss { survivors, pending, torn } =
            node.store.crash(&mut self.disk_rng, self.options.faults.torn_writes);
        node.incarnation += 1;
        node.machine = Machine::default();
        let incarnation = node.incarnation;
        let id = node.id;
        self.stats.crashes += 1;
        self.stats.writes_lost += (pending - survivors) as u64;
        self.stats.torn_writes += u64::from(torn);
        self.harness.trace.line(
            self.harness.now,
            format_args!(
                "crash n{id} for {} ms: {survivors} of {pending} unsynced writes survive{}",
                downtime.as_millis(),
                if torn { ", the next one torn" } else { "" }
            ),
        );
        self.harness.schedule(self.harness.now + downtime, Event::Restart { node: i, incarnation });
    }

    /// Whether the crashed node `i` may come back on an empty disk: it is a voter of a
    /// cluster of two or more whose entries commit on two disks or more, and every other voter
    /// has recovered from any earlier replacement for good.
    fn may_swap_disk(&self, i: usize) -> bool {
        let voters = self.options.nodes;
        let f = &self.options.faults;
        // With a replication quorum of one an entry may be committed on one disk alone, and
        // no rule brings it back once that disk is replaced (docs/raft.md).
        let replicated = self.nodes[i].config.replication_quorum >= 2;
        f.crashes && f.disk_swaps && replicated && voters >= 2 && i < voters && !self.nodes[i].up() && {
            (0..voters).filter(|j| *j != i).all(|j| {
                // What is on disk: a recovery finished in memory is undone by a crash that loses
                // its write.
                self.nodes[j].store.durable().recovery == Recovery::Trusted
            })
        }
    }

    /// The crashed node's disk is replaced: it restarts with nothing.
    fn swap_disk(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.store = RaftStore::formatted(Durable::lost());
        self.stats.disk_swaps += 1;
        let id = node.id;
        self.harness
            .trace
            .line(self.harness.now, format_args!("n{id}'s disk is replaced: it returns with no Raft state"));
    }

    /// Collects what the core of node `i` produced after an input, re-arms its timer, and
    /// checks it.
    fn after_input(&mut self, i: usize) -> Result<(), String> {
        let Some(mut raft) = self.nodes[i].raft.take() else { return Ok(()) };
        let result = self.collect(i, &mut raft);
        self.nodes[i].raft = Some(raft);
        result?;
        self.check(i)
    }

    fn collect(&mut self, i: usize, raft: &mut Raft) -> Result<(), String> {
        let id = self.nodes[i].id;
        let mut new_commits = Vec::new();
        while let Some(apply) = raft.poll_apply() {
            match apply {
                Apply::Snapshot(snapshot) => {
                    let machine = Machine::decode(&snapshot.data)
                        .map_err(|e| format!("n{id} applies a snapshot at {}: {e}", snapshot.index))?;
                    if machine.index != snapshot.index {
                        return Err(format!(
                            "n{id} applies a snapshot at {} holding the state after {}",
                            snapshot.index, machine.index
                        ));
                    }
                    self.oracle.record_state(id, machine)?;
                    self.nodes[i].machine = machine;
                    self.stats.snapshots_applied += 1;
                }
                Apply::Entry(entry) => {
                    self.nodes[i].machine.apply(&entry).map_err(|e| format!("n{id}: {e}"))?;
                    self.oracle.record_state(id, self.nodes[i].machine)?;
                    if self.oracle.record_commit(id, &entry, raft.term())? {
                        new_commits.push(entry.index);
                    }
                    if let Payload::Command(command) = &entry.payload {
                        self.client_saw_applied(id, command, entry.index)?;
                    }
                }
            }
        }
        let node = &mut self.nodes[i];
        let snapshot_index = raft.snapshot().map_or(0, |s| s.index);
        if node.compact_every > 0
            && node.machine.index == raft.applied_index()
            && node.machine.index >= snapshot_index + node.compact_every
        {
            raft.compact(node.machine.index, node.machine.encode());
            self.stats.compactions += 1;
        }
        for persist in raft.drain_persists() {
            self.write(i, persist);
        }
        for (to, message) in raft.drain_messages() {
            self.send(i, to, message)?;
        }
        // Re-arm the timer at the core's deadline, translated from the node's clock.
        let node = &mut self.nodes[i];
        if let Some(key) = node.timer.take() {
            self.harness.cancel(key);
        }
        if let Some(deadline) = raft.poll_timeout() {
            let at = Instant(deadline.0.saturating_sub(node.clock_offset.0));
            let key = self.harness.schedule(at, Event::Timer { node: i });
            self.nodes[i].timer = Some(key);
        }
        // Entries this node was first to apply: leaders of later terms must hold them.
        self.check_leaders_hold(i, raft, &new_commits)
    }

    fn check(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let Some(raft) = &node.raft else { return Ok(()) };
        let mut new_commits = Vec::new();
        self.oracle.check_node(raft, &mut node.watch, &mut new_commits)?;
        self.stats.highest_term = self.stats.highest_term.max(raft.term().0);
        let Some(raft) = &self.nodes[i].raft else { return Ok(()) };
        self.check_leaders_hold(i, raft, &new_commits)
    }

    fn check_leaders_hold(&self, i: usize, raft: &Raft, indexes: &[LogIndex]) -> Result<(), String> {
        if indexes.is_empty() {
            return Ok(());
        }
        for (j, node) in self.nodes.iter().enumerate() {
            let other = if j == i { Some(raft) } else { node.raft.as_ref() };
            if let Some(other) = other.filter(|r| r.role() == RoleKind::Leader) {
                for index in indexes {
                    self.oracle.check_leader_holds(other, *index)?;
                }
            }
        }
        Ok(())
    }

    // ---- disks ---------------------------------------------------------------------------

    fn write(&mut self, i: usize, persist: Persist) {
        let node = &mut self.nodes[i];
        if persist.snapshot.is_some() || persist.truncate_after.is_some() || !persist.append.is_empty() {
            node.watch.log_dirty = true;
        }
        let latency_us = if self.harness.now < node.slow_disk_until {
            self.disk_rng.range_inclusive(50_000, 800_000)
        } else {
            self.disk_rng.range_inclusive(20, 2_000)
        };
        // Overlapping latencies (group commit): a slow period delays writes without piling up
        // an ever longer backlog.
        let done = node.store.write(persist, self.harness.now, Duration(latency_us * 1_000));
        let incarnation = node.incarnation;
        self.stats.disk_writes += 1;
        self.harness.schedule(done, Event::DiskDone { node: i, incarnation });
    }

    fn disk_done(&mut self, i: usize, incarnation: u64) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if node.incarnation != incarnation {
            return Ok(());
        }
        let Some(persist) = node.store.complete() else {
            return Err(format!("simulator bug: a write of n{} completed with none pending", node.id));
        };
        let id = persist.id;
        self.input(i, format!("synced write {id}"), |raft, now, _| raft.handle_persisted(now, id), |_| String::new())?;
        // A term or vote just reached disk and the messages that depended on it just left:
        // the moment a forgotten vote or term would matter most, so crash there more often.
        let permille = match persist.hard_state {
            Some(_) => (self.crash_after_write_permille * 10).min(1000),
            None => self.crash_after_write_permille,
        };
        if self.harness.phase == Phase::Safety && self.harness.fault_rng.chance(permille, 1000) {
            let downtime = self.harness.downtime();
            self.crash(i, downtime);
        }
        Ok(())
    }

    // ---- network -------------------------------------------------------------------------

    fn send(&mut self, from: usize, to: NodeId, message: Message) -> Result<(), String> {
        let to = self.index_of(to)?;
        self.stats.messages_sent += 1;
        let delays = match self.network.send(self.cut(from, to)) {
            Ok(delays) => delays,
            Err(why) => {
                self.stats.messages_dropped += 1;
                let (a, b) = (self.nodes[from].id, self.nodes[to].id);
                self.harness.trace.line(self.harness.now, format_args!("n{a} -> n{b} {message}: {why}"));
                return Ok(());
            }
        };
        self.stats.messages_duplicated += delays.len() as u64 - 1;
        for delay in delays {
            self.harness.schedule(self.harness.now + delay, Event::Deliver { from, to, message: message.clone() });
        }
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, message: Message) -> Result<(), String> {
        self.network.in_flight -= 1;
        let (a, b) = (self.nodes[from].id, self.nodes[to].id);
        let text = message.to_string();
        let dropped = if !self.nodes[to].up() {
            Some("receiver down")
        } else if self.cut(from, to) {
            Some("cut")
        } else {
            None
        };
        if let Some(why) = dropped {
            self.stats.messages_dropped += 1;
            self.harness.trace.line(self.harness.now, format_args!("n{b} <- n{a} {text}: dropped, {why}"));
            return Ok(());
        }
        self.stats.messages_delivered += 1;
        let text = format!("n{b} <- n{a} {text}");
        self.input(to, text, |raft, now, rng| raft.handle_message(now, rng, a, message), |_| String::new())
    }

    fn cut(&self, from: usize, to: usize) -> bool {
        self.harness.partition.cut().is_some_and(|links| links.contains(&(from, to)))
    }

    // ---- client --------------------------------------------------------------------------

    fn client_step(&mut self) -> Result<(), String> {
        let client = &mut self.client;
        if self.harness.phase == Phase::Safety
            && client.pending.len() < CLIENT_OUTSTANDING_MAX
            && client.rng.chance(1, 2)
        {
            client.pending.insert(client.next_number, self.harness.now);
            client.next_number += 1;
            self.stats.commands_proposed += 1;
        }
        let due: Vec<u64> = client
            .pending
            .iter()
            .filter(|(_, at)| **at <= self.harness.now)
            .map(|(number, _)| *number)
            .take(CLIENT_SENDS_PER_STEP)
            .collect();
        for number in due {
            let up: Vec<usize> = (0..self.nodes.len()).filter(|i| self.nodes[*i].up()).collect();
            if up.is_empty() {
                break;
            }
            let target = match self.client.believed_leader {
                Some(t) if self.nodes[t].up() => t,
                _ => up[self.client.rng.below(up.len() as u64) as usize],
            };
            let id = self.nodes[target].id;
            let command = format!("c{number}").into_bytes();
            let result = self.input(
                target,
                format!("client -> n{id} propose c{number}"),
                |raft, now, _| raft.propose(now, command),
                |result| match result {
                    Ok(index) => format!(": appended at {index}"),
                    Err(ProposeError::NotLeader { leader: Some(l) }) => format!(": not leader, try n{l}"),
                    Err(ProposeError::NotLeader { leader: None }) => ": not leader, leader unknown".to_string(),
                    Err(ProposeError::Busy) => ": busy".to_string(),
                },
            )?;
            let retry_at = match result {
                Ok(_) => self.harness.now + CLIENT_RETRY,
                Err(ProposeError::NotLeader { leader }) => {
                    self.client.believed_leader = leader.and_then(|l| self.index_of(l).ok());
                    self.harness.now
                }
                Err(ProposeError::Busy) => self.harness.now + ms(50),
            };
            if let Some(at) = self.client.pending.get_mut(&number) {
                *at = retry_at;
            }
        }
        let next = ms(self.client.rng.range_inclusive(5, 50));
        self.harness.schedule(self.harness.now + next, Event::Client);
        Ok(())
    }

    fn client_saw_applied(&mut self, node: NodeId, command: &[u8], index: LogIndex) -> Result<(), String> {
        let number = std::str::from_utf8(command)
            .ok()
            .and_then(|s| s.strip_prefix('c'))
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n < self.client.next_number)
            .ok_or_else(|| {
                format!("n{node} applied {:?} at {index}, which no client proposed", String::from_utf8_lossy(command))
            })?;
        self.client.pending.remove(&number);
        match self.client.applied_at.get(&number) {
            None => {
                self.client.applied_at.insert(number, index);
            }
            Some(first) if *first != index => {
                self.client.duplicates.insert((number, index));
            }
            Some(_) => {}
        }
        Ok(())
    }

    // ---- faults --------------------------------------------------------------------------

    /// The running leader of the highest term, if any.
    fn leader(&self) -> Option<usize> {
        (0..self.nodes.len())
            .filter_map(|i| self.nodes[i].raft.as_ref().map(|r| (i, r)))
            .filter(|(_, r)| r.role() == RoleKind::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(i, _)| i)
    }

    fn partition(&mut self) {
        let total = self.nodes.len();
        if total < 2 {
            return;
        }
        let leader = self.leader();
        let rng = &mut self.harness.fault_rng;
        let mut links = Links::new();
        let name = |i: usize| format!("n{}", i + 1);
        let variant = rng.below(4);
        let shape = match variant {
            0 => {
                let loner = match leader {
                    Some(leader) if rng.chance(1, 2) => leader,
                    _ => rng.below(total as u64) as usize,
                };
                isolate(&mut links, loner, total);
                format!("{} isolated", name(loner))
            }
            1 | 3 => {
                // A random split into two non-empty sides.
                let mut side: Vec<bool> = (0..total).map(|_| rng.chance(1, 2)).collect();
                let first = rng.below(total as u64) as usize;
                side[first] = true;
                let mut second = rng.below(total as u64 - 1) as usize;
                if second >= first {
                    second += 1;
                }
                side[second] = false;
                split(&mut links, &side);
                format!("{} | {}", show_side(&side, true, name), show_side(&side, false, name))
            }
            _ => {
                // One-way: a node that can send but not hear, or hear but not send, or random
                // directed links.
                let node = rng.below(total as u64) as usize;
                match rng.below(3) {
                    0 => {
                        links.extend((0..total).filter(|o| *o != node).map(|o| (o, node)));
                        format!("n{} cannot hear", node + 1)
                    }
                    1 => {
                        links.extend((0..total).filter(|o| *o != node).map(|o| (node, o)));
                        format!("n{} cannot send", node + 1)
                    }
                    _ => {
                        cut_one_way_at_random(&mut links, total, rng, 3);
                        links.insert((node, (node + 1) % total));
                        format!("cut {}", show_links(&links, name))
                    }
                }
            }
        };
        let flapping = variant == 3;
        self.stats.partitions += 1;
        self.harness.partition_briefly(links, &shape, flapping);
    }
}

impl Scenario for Sim<'_> {
    type Event = Event;
    type Cut = Links;
    const EVENTS_MAX: u64 = EVENTS_MAX;

    fn harness(&self) -> &Harness<Event, Links> {
        &self.harness
    }

    fn harness_mut(&mut self) -> &mut Harness<Event, Links> {
        &mut self.harness
    }

    fn start(&mut self) -> Result<(), Failure> {
        for i in 0..self.nodes.len() {
            self.guarded(|sim| sim.start_node(i))?;
        }
        self.harness.schedule(Instant::ZERO + ms(1), Event::Client);
        Ok(())
    }

    fn faults_from(&self) -> Option<Instant> {
        (!self.faults.is_empty() && self.options.safety_ms > 0).then_some(Instant::ZERO)
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::Timer { node } => {
                self.nodes[node].timer = None;
                self.input(node, "tick".to_string(), |raft, now, rng| raft.handle_tick(now, rng), |_| String::new())
            }
            Event::DiskDone { node, incarnation } => self.disk_done(node, incarnation),
            Event::Restart { node, incarnation } => {
                if self.nodes[node].incarnation == incarnation && !self.nodes[node].up() {
                    self.restart(node)?;
                }
                Ok(())
            }
            Event::Client => self.client_step(),
        }
    }

    fn inject_fault(&mut self) -> Result<(), String> {
        let kind = self.harness.draw_fault(&self.faults, FaultKind::weight);
        let total = self.nodes.len();
        match kind {
            FaultKind::Crash => {
                let up: Vec<usize> = (0..total).filter(|i| self.nodes[*i].up()).collect();
                if !up.is_empty() {
                    // Half the time the leader: what follows its loss (elections, a new leader
                    // reconciling logs) is where Raft's subtle cases live.
                    let victim = match self.leader() {
                        Some(leader) if self.harness.fault_rng.chance(1, 2) => leader,
                        _ => up[self.harness.fault_rng.below(up.len() as u64) as usize],
                    };
                    let downtime = self.harness.downtime();
                    self.crash(victim, downtime);
                    if self.may_swap_disk(victim) && self.swap_rng.chance(1, 4) {
                        self.swap_disk(victim);
                    }
                }
            }
            FaultKind::PowerLoss => {
                // Every node loses its unsynced writes at the same moment. (Crashing draws
                // nothing from the fault stream, so the downtimes may all be drawn first.)
                let downtimes = self.harness.power_loss_downtimes(total);
                self.harness.trace.line(self.harness.now, format_args!("power loss: every node crashes"));
                for (i, downtime) in downtimes.into_iter().enumerate() {
                    self.crash(i, downtime);
                }
            }
            FaultKind::Partition => self.partition(),
            FaultKind::SlowDisk => {
                let (victim, until) = self.harness.draw_spell(total, 100);
                let node = &mut self.nodes[victim];
                node.slow_disk_until = node.slow_disk_until.max(until);
                self.stats.slow_disks += 1;
                let id = node.id;
                self.harness
                    .trace
                    .line(self.harness.now, format_args!("disk of n{id} slow until {} ms", until.as_millis()));
            }
            FaultKind::ClockJump => {
                let victim = self.harness.fault_rng.below(total as u64) as usize;
                let jump = ms(self.harness.fault_rng.range_inclusive(10, 2_000));
                let offset = &mut self.nodes[victim].clock_offset;
                *offset = Duration(offset.0.saturating_add(jump.0));
                self.stats.clock_jumps += 1;
                let id = self.nodes[victim].id;
                self.harness
                    .trace
                    .line(self.harness.now, format_args!("clock of n{id} jumps {} ms forward", jump.as_millis()));
                // Its timer deadline now lies earlier in simulated time.
                self.after_input(victim)?;
            }
            FaultKind::Transfer => {
                if let Some(leader) = self.leader() {
                    let target = NodeId(self.harness.fault_rng.below(self.options.nodes as u64) as i32 + 1);
                    self.stats.transfers += 1;
                    let id = self.nodes[leader].id;
                    // Refusals (the target is the leader itself) are part of what is tested.
                    let _refused = self.input(
                        leader,
                        format!("n{id} asked to transfer leadership to n{target}"),
                        |raft, now, _| raft.transfer_leadership(now, target),
                        |result| format!(": {result:?}"),
                    )?;
                }
            }
        }
        Ok(())
    }

    fn start_liveness(&mut self) -> Result<(), String> {
        self.harness.phase = Phase::Liveness;
        self.harness.liveness_started = self.harness.now;
        self.harness.trace.line(
            self.harness.now,
            format_args!("liveness phase: faults stop, the network heals, crashed nodes restart"),
        );
        self.network.calm();
        self.heal();
        for i in 0..self.nodes.len() {
            self.nodes[i].slow_disk_until = self.harness.now;
            if !self.nodes[i].up() {
                self.restart(i)?;
            }
        }
        Ok(())
    }

    /// Some node leads, every command is applied somewhere, the leader has committed its
    /// whole log and every node has applied all of it.
    fn converged(&self) -> bool {
        if !self.client.pending.is_empty() {
            return false;
        }
        let mut leader: Option<&Raft> = None;
        for node in &self.nodes {
            let Some(raft) = &node.raft else { return false };
            if raft.role() == RoleKind::Leader && leader.is_none_or(|l| l.term() < raft.term()) {
                leader = Some(raft);
            }
        }
        let Some(leader) = leader else { return false };
        let commit = leader.commit_index();
        commit == leader.last_index()
            && self
                .nodes
                .iter()
                .all(|n| n.raft.as_ref().is_some_and(|r| r.applied_index() >= commit && r.term() == leader.term()))
    }

    fn not_converged(&self) -> String {
        let mut message = format!(
            "the cluster did not converge within {} ms after faults stopped: {}",
            self.options.liveness_ms,
            if self.client.pending.is_empty() {
                "every command is applied, but not on every node or the leader has uncommitted entries".to_string()
            } else {
                let shown: Vec<String> = self.client.pending.keys().take(10).map(|n| format!("c{n}")).collect();
                format!("{} commands still unapplied ({})", self.client.pending.len(), shown.join(" "))
            }
        );
        for node in &self.nodes {
            message.push_str("\n  ");
            match &node.raft {
                Some(raft) => message.push_str(&raft.describe()),
                None => message.push_str(&format!("n{} down", node.id)),
            }
        }
        message
    }
    /// Raft's convergence may follow any event.
    fn converges_after(_: &harness::Event<Event>) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_round_trips_and_rejects_bad_snapshots() {
        let mut machine = Machine::default();
        machine.apply(&Entry { index: 1, term: keel_raft::Term(1), payload: Payload::Noop }).unwrap();
        assert_eq!(Machine::decode(&machine.encode()).unwrap(), machine);
        assert!(Machine::decode(&[1, 2, 3]).is_err());
        let skip = Entry { index: 3, term: keel_raft::Term(1), payload: Payload::Noop };
        assert!(machine.apply(&skip).is_err());
    }

    #[test]
    fn invalid_options_fail_in_setup() {
        let options =
            RaftSimOptions { replication_quorum: Some(1), election_quorum: Some(2), ..RaftSimOptions::new(1) };
        let report = run_raft(&options);
        let failure = report.outcome.unwrap_err();
        assert_eq!(failure.phase, Phase::Setup);
        assert!(failure.message.contains("must exceed the 3 voters"), "{}", failure.message);
        assert!(run_raft(&RaftSimOptions { nodes: 0, ..RaftSimOptions::new(1) }).outcome.is_err());
    }
}
