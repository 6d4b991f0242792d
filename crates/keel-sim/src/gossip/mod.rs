//! The gossip simulation: N members of the real [`keel_gossip::Gossip`] core (SWIM with
//! incarnation numbers) on simulated time, a lossy network, disks and crashes.
//!
//! Every member has its own seeded [`Rng`] and the address `n{id}`, which the simulator maps
//! back to the member. Datagrams travel as bytes ([`Message::encode`], [`Message::decode`]),
//! each with its own delay, and a share of them is lost. A member that crashes stops; its disk
//! keeps the incarnation it last made durable (a write still in flight may or may not have
//! reached it), and it restarts from that with [`Gossip::start`] after a while, or never.
//! Persist effects complete after a simulated disk delay; the core holds back what depends on
//! them. Now and then a partition isolates a member or splits a minority off.
//!
//! After every step the member's own invariants and the oracle's checks run (see
//! [`oracle`]); the oracle also measures detection time and false positives. After the safety
//! phase crashes and partitions stop (message loss goes on: it is the environment, not a
//! fault), crashed members restart except the ones that crashed for good, and every running
//! member's view must come to match reality within the liveness bound.

mod oracle;

use std::collections::{BTreeMap, VecDeque};

use keel_gossip::{Address, Config, Durable, Gossip, Message, Mutation};
use keel_types::{Duration, Instant, NodeId, Rng};

pub use oracle::Detection;
use oracle::Oracle;

use crate::harness::{self, fork, ms, Failure, Harness, Scenario, SimReport};
use crate::trace::Trace;

/// Most members a simulated cluster may have.
pub const GOSSIP_NODES_MAX: usize = 1000;

/// Most events one run may take; a correct 50-member run takes a few hundred thousand.
const EVENTS_MAX: u64 = 20_000_000;
/// Most datagrams on the wire at once; beyond it the network drops, as a full buffer would.
const IN_FLIGHT_MAX: usize = 100_000;
/// The longest simulated run accepted: one day.
const RUN_MS_MAX: u64 = 24 * 60 * 60 * 1000;
/// How often the liveness phase compares every view with reality (an O(N^2) check).
const CONVERGENCE_CHECK: Duration = Duration(100_000_000);
/// Mismatches named when a run does not converge.
const MISMATCHES_SHOWN: usize = 12;

/// What to simulate. [`GossipSimOptions::new`] gives the defaults CI sweeps with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipSimOptions {
    /// Derives every random choice of the run.
    pub seed: u64,
    pub nodes: usize,
    /// The first this many members are every member's seeds.
    pub seed_nodes: usize,
    /// Simulated time with faults (the first `warmup_ms` of it without: the cluster forms).
    pub safety_ms: u64,
    pub warmup_ms: u64,
    /// Then crashes and partitions stop: within this much simulated time every running
    /// member's view must match reality, or the run fails. `None`: four probe rounds
    /// (4 x nodes x probe interval) and a suspicion timeout: generous, so that it holds with
    /// anti-entropy off too (news that gossip missed then waits for the round-robin probes:
    /// each running member pings each member it knows within two rounds; the other two absorb
    /// lost datagrams).
    pub liveness_ms: Option<u64>,
    pub probe_interval_ms: u64,
    pub probe_timeout_ms: u64,
    pub suspicion_timeout_ms: u64,
    /// SWIM's `k`.
    pub indirect_probes: usize,
    /// SWIM's lambda.
    pub retransmit_multiplier: u32,
    /// Records of the whole view each datagram carries in turn (anti-entropy).
    pub anti_entropy_records: usize,
    pub faults: GossipFaultOptions,
    /// A planted bug in every member (see [`keel_gossip::Mutation`]); the run should fail.
    pub mutation: Option<Mutation>,
    /// Keep the trace lines in the report (the hash covers them either way).
    pub record_trace: bool,
}

/// The network, the disks and the faults of the safety phase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipFaultOptions {
    /// Each datagram is lost with this probability, in thousandths, in both phases.
    pub message_loss_permille: u64,
    /// Each datagram takes between 0.1 ms and this long.
    pub network_delay_ms_max: u64,
    /// Each write of an incarnation takes between 0.1 ms and this long.
    pub disk_delay_ms_max: u64,
    /// Members crash and restart from their disk, some never.
    pub crashes: bool,
    /// A partition isolates a member or splits a minority off for a few seconds.
    pub partitions: bool,
    /// Mean simulated time between two faults.
    pub fault_interval_ms_mean: u64,
    /// Most members down at once, in percent of the cluster (at least one).
    pub down_percent_max: u64,
    /// A crash is for good with this probability, in percent, while fewer than a tenth of
    /// the members crashed for good.
    pub permanent_crash_percent: u64,
}

impl GossipFaultOptions {
    /// A perfect network and disks, nothing crashes.
    pub fn none() -> GossipFaultOptions {
        GossipFaultOptions {
            message_loss_permille: 0,
            network_delay_ms_max: 1,
            disk_delay_ms_max: 1,
            crashes: false,
            partitions: false,
            fault_interval_ms_mean: 3_000,
            down_percent_max: 20,
            permanent_crash_percent: 0,
        }
    }
}

impl Default for GossipFaultOptions {
    fn default() -> GossipFaultOptions {
        GossipFaultOptions {
            message_loss_permille: 100,
            network_delay_ms_max: 10,
            disk_delay_ms_max: 20,
            crashes: true,
            partitions: true,
            fault_interval_ms_mean: 3_000,
            down_percent_max: 20,
            permanent_crash_percent: 20,
        }
    }
}

impl GossipSimOptions {
    /// 50 members with keel-gossip's default timing (1 s probe period, 500 ms probe timeout,
    /// k = 3, 5 s suspicion), 10% loss; 60 s of faults after 5 s to form, then at most four
    /// probe rounds and a suspicion timeout (205 s) to converge.
    pub fn new(seed: u64) -> GossipSimOptions {
        let defaults = Config::new(NodeId(1), Address::from("n1"), Vec::new());
        GossipSimOptions {
            seed,
            nodes: 50,
            seed_nodes: 3,
            safety_ms: 60_000,
            warmup_ms: 5_000,
            liveness_ms: None,
            probe_interval_ms: defaults.probe_interval.as_millis(),
            probe_timeout_ms: defaults.probe_timeout.as_millis(),
            suspicion_timeout_ms: defaults.suspicion_timeout.as_millis(),
            indirect_probes: defaults.indirect_probes,
            retransmit_multiplier: defaults.retransmit_multiplier,
            anti_entropy_records: defaults.anti_entropy_records,
            faults: GossipFaultOptions::default(),
            mutation: None,
            record_trace: false,
        }
    }

    /// The liveness bound in milliseconds.
    pub fn liveness_bound_ms(&self) -> u64 {
        self.liveness_ms.unwrap_or_else(|| {
            (4 * self.nodes as u64).saturating_mul(self.probe_interval_ms).saturating_add(self.suspicion_timeout_ms)
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.nodes < 2 || self.nodes > GOSSIP_NODES_MAX {
            return Err(format!("--nodes must lie between 2 and {GOSSIP_NODES_MAX}; got {}", self.nodes));
        }
        if self.seed_nodes == 0 || self.seed_nodes > self.nodes {
            return Err(format!("the seed members must number between 1 and {}; got {}", self.nodes, self.seed_nodes));
        }
        if self.liveness_bound_ms() == 0 || self.safety_ms.saturating_add(self.liveness_bound_ms()) > RUN_MS_MAX {
            return Err(format!(
                "the liveness phase must be positive and both phases together at most {RUN_MS_MAX} ms"
            ));
        }
        let f = &self.faults;
        if f.message_loss_permille > 1000 {
            return Err(format!("--loss must lie between 0 and 1; got {}", f.message_loss_permille as f64 / 1000.0));
        }
        if f.network_delay_ms_max == 0 || f.network_delay_ms_max > 60_000 || f.disk_delay_ms_max == 0 {
            return Err("the network delay bound must lie between 1 ms and 60 s, the disk delay be positive".into());
        }
        if f.fault_interval_ms_mean == 0 || f.down_percent_max > 100 || f.permanent_crash_percent > 100 {
            return Err("the fault interval must be positive and percentages lie between 0 and 100".into());
        }
        self.node_config(0).validate().map_err(|e| format!("invalid gossip configuration: {e}"))
    }

    fn node_config(&self, i: usize) -> Config {
        let seeds = (0..self.seed_nodes).map(address).collect();
        let defaults = Config::new(NodeId(i as i32 + 1), address(i), seeds);
        Config {
            probe_interval: ms(self.probe_interval_ms),
            probe_timeout: ms(self.probe_timeout_ms),
            suspicion_timeout: ms(self.suspicion_timeout_ms),
            indirect_probes: self.indirect_probes,
            retransmit_multiplier: self.retransmit_multiplier,
            anti_entropy_records: self.anti_entropy_records,
            members_max: defaults.members_max.max(self.nodes),
            mutation: self.mutation,
            ..defaults
        }
    }
}

impl Default for GossipSimOptions {
    fn default() -> GossipSimOptions {
        GossipSimOptions::new(0)
    }
}

/// Counts and measurements over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub simulated_ms: u64,
    pub events: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub messages_delivered: u64,
    /// Lost, cut by a partition, or addressed to a member that is down.
    pub messages_dropped: u64,
    pub disk_writes: u64,
    pub crashes: u64,
    /// Crashes the member never restarts from.
    pub permanent_crashes: u64,
    pub restarts: u64,
    pub partitions: u64,
    /// Crashes every running member saw, in crash order.
    pub detections: Vec<Detection>,
    /// Crashes whose member restarted before every running member held it dead.
    pub detections_interrupted: u64,
    /// Crashes during or just after a partition, left out of detection.
    pub crashes_during_partitions: u64,
    /// Running members declared Dead in their current life by some member, outside
    /// partitions: distinct (member, incarnation) accusations.
    pub false_positives: u64,
    /// The same for Suspect: suspicions a running member had to refute.
    pub false_suspicions: u64,
    /// Member-milliseconds during which some running member held a running member Dead,
    /// outside partitions...
    pub false_positive_node_ms: u64,
    /// ...out of this many member-milliseconds of running members outside partitions.
    pub observed_node_ms: u64,
    /// Times a running member raised its incarnation to refute an accusation.
    pub refutations: u64,
    /// How long the liveness phase took to converge, if it did.
    pub liveness_converged_ms: Option<u64>,
}

/// The result of one run.
pub type GossipSimReport = SimReport<GossipStats>;

/// Runs one seed. Never panics on a finding: a violated invariant, a core that panics, or
/// views that do not converge all come back as a [`Failure`].
pub fn run_gossip(options: &GossipSimOptions) -> GossipSimReport {
    harness::run_seed(options.seed, options.validate(), || Sim::new(options), Sim::finish)
}

// ---- the simulation --------------------------------------------------------------------------

fn address(i: usize) -> Address {
    Address(format!("n{}", i + 1))
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        datagram: Vec<u8>,
    },
    Timer {
        node: usize,
    },
    DiskDone {
        node: usize,
        life: u64,
    },
    /// Starts a member that is down (the first start too), unless it crashed again since.
    Start {
        node: usize,
        life: u64,
    },
    CheckConvergence,
}

/// One simulated machine: the core while it runs, and its disk, which outlives it.
#[derive(Debug)]
struct Node {
    config: Config,
    /// `None` while down.
    gossip: Option<Gossip>,
    rng: Rng,
    /// Bumped by every crash, so events meant for an earlier life are ignored.
    life: u64,
    durable: Durable,
    /// Writes handed out by the core and not yet complete, in order.
    pending: VecDeque<Durable>,
    disk_busy_until: Instant,
    /// The queue key of this member's armed timer.
    timer: Option<(Instant, u64)>,
    /// Crashed for good.
    permanent: bool,
}

/// A partition puts each member on side 0 (`false`) or 1 (`true`); datagrams between the
/// sides are dropped.
type Sides = Vec<bool>;

struct Sim<'a> {
    options: &'a GossipSimOptions,
    harness: Harness<Event, Sides>,
    nodes: Vec<Node>,
    addresses: BTreeMap<Address, usize>,
    in_flight: usize,
    network_rng: Rng,
    disk_rng: Rng,
    oracle: Oracle,
    /// The input being fed is a timer tick.
    ticking: bool,
    stats: GossipStats,
}

impl<'a> Sim<'a> {
    fn new(options: &'a GossipSimOptions) -> Sim<'a> {
        // Separate streams, so a change in how one part draws does not reshuffle the others.
        let mut master = Rng::new(options.seed);
        let network_rng = fork(&mut master);
        let fault_rng = fork(&mut master);
        let disk_rng = fork(&mut master);
        let nodes: Vec<Node> = (0..options.nodes)
            .map(|i| Node {
                config: options.node_config(i),
                gossip: None,
                rng: fork(&mut master),
                life: 0,
                durable: Durable::default(),
                pending: VecDeque::new(),
                disk_busy_until: Instant::ZERO,
                timer: None,
                permanent: false,
            })
            .collect();
        let addresses = (0..options.nodes).map(|i| (address(i), i)).collect();
        // A partition's accusations settle within a suspicion timeout and a few periods.
        let excuse = ms(options.suspicion_timeout_ms + 5 * options.probe_interval_ms);
        let formed = Instant::ZERO + ms(options.warmup_ms);
        let oracle = Oracle::new((0..options.nodes).map(address).collect(), formed, excuse);
        let mut trace = Trace::new(options.record_trace);
        let f = &options.faults;
        trace.line(
            Instant::ZERO,
            format_args!(
                "seed {} nodes {} seeds {} mutation {:?}; probe every {} ms, timeout {} ms, k {}, suspicion {} ms, \
                 lambda {}, anti-entropy {}; loss {}/1000, delay <= {} ms, disk <= {} ms; crashes {} partitions {} every {} ms",
                options.seed,
                options.nodes,
                options.seed_nodes,
                options.mutation,
                options.probe_interval_ms,
                options.probe_timeout_ms,
                options.indirect_probes,
                options.suspicion_timeout_ms,
                options.retransmit_multiplier,
                options.anti_entropy_records,
                f.message_loss_permille,
                f.network_delay_ms_max,
                f.disk_delay_ms_max,
                f.crashes,
                f.partitions,
                f.fault_interval_ms_mean,
            ),
        );
        let harness = Harness::new(
            options.safety_ms,
            options.liveness_bound_ms(),
            fault_rng,
            options.faults.fault_interval_ms_mean,
            trace,
        );
        Sim {
            options,
            harness,
            nodes,
            addresses,
            in_flight: 0,
            network_rng,
            disk_rng,
            oracle,
            ticking: false,
            stats: GossipStats::default(),
        }
    }

    fn finish(mut self, outcome: Result<u64, Failure>) -> GossipSimReport {
        self.stats.liveness_converged_ms = outcome.as_ref().ok().copied();
        self.stats.events = self.harness.events;
        self.stats.simulated_ms = self.harness.now.as_millis();
        self.stats.detections = std::mem::take(&mut self.oracle.detections);
        self.stats.detections_interrupted = self.oracle.detections_interrupted;
        self.stats.crashes_during_partitions = self.oracle.crashes_excused;
        self.stats.false_positives = self.oracle.false_positives();
        self.stats.false_suspicions = self.oracle.false_suspicions();
        self.stats.false_positive_node_ms = self.oracle.false_positive_node_ns / 1_000_000;
        self.stats.observed_node_ms = self.oracle.observed_node_ns / 1_000_000;
        self.stats.refutations = self.oracle.refutations;
        self.harness.finish(self.options.seed, outcome.map(|_| ()), self.stats)
    }

    // ---- members -------------------------------------------------------------------------

    /// Feeds one input to member `i`, then collects its effects, checks it and traces the step.
    fn input(
        &mut self,
        i: usize,
        text: String,
        feed: impl FnOnce(&mut Gossip, Instant, &mut Rng),
    ) -> Result<(), String> {
        let now = self.harness.now;
        let node = &mut self.nodes[i];
        let Some(mut gossip) = node.gossip.take() else {
            return Err(format!("simulator bug: input to n{} while it is down: {text}", i + 1));
        };
        self.harness.current = text;
        feed(&mut gossip, now, &mut node.rng);
        let result = self.after_input(i, &mut gossip);
        self.nodes[i].gossip = Some(gossip);
        let text = std::mem::take(&mut self.harness.current);
        let verdict = if result.is_ok() { "" } else { " FAILS" };
        self.harness.trace.line(self.harness.now, format_args!("{text}{verdict}"));
        result
    }

    /// Collects what member `i`'s core produced, re-arms its timer and checks it. Appends the
    /// changes of its view to the step's trace text.
    fn after_input(&mut self, i: usize, gossip: &mut Gossip) -> Result<(), String> {
        while let Some(durable) = gossip.poll_persist() {
            self.write(i, durable);
        }
        for outgoing in gossip.drain_messages() {
            let Some(&to) = self.addresses.get(&outgoing.to) else {
                return Err(format!("n{} sends to {:?}, the address of no member", i + 1, outgoing.to.0));
            };
            self.send(i, to, &outgoing.message)?;
        }
        let changes = gossip.drain_changes();
        if !changes.is_empty() {
            let shown: Vec<String> = changes.iter().map(|m| m.to_string()).collect();
            self.harness.current.push_str(&format!(" => n{} holds {}", i + 1, shown.join(" ")));
        }
        let node = &mut self.nodes[i];
        if let Some(key) = node.timer.take() {
            self.harness.cancel(key);
        }
        if let Some(deadline) = gossip.poll_timeout() {
            let at = deadline;
            // A tick serves every deadline up to now: one still due would make a shell that
            // sleeps until poll_timeout spin (keel-gossip once kept the indirect-probe deadline
            // of a probe acked directly; this simulator found it).
            if self.ticking && deadline <= self.harness.now {
                return Err(format!(
                    "n{}'s tick at {} ms leaves its deadline at {} ms: a shell that sleeps until poll_timeout spins",
                    i + 1,
                    self.harness.now.as_millis(),
                    deadline.as_millis()
                ));
            }
            let key = self.harness.schedule(at, Event::Timer { node: i });
            self.nodes[i].timer = Some(key);
        }
        self.oracle.observe(i, gossip, self.harness.now)
    }

    fn start(&mut self, i: usize) -> Result<(), String> {
        let node = &mut self.nodes[i];
        let first = node.life == 0 && node.durable == Durable::default();
        let mut gossip = Gossip::start(node.config.clone(), node.durable, self.harness.now);
        node.disk_busy_until = self.harness.now;
        self.oracle.started(i, gossip.incarnation())?;
        if !first {
            self.stats.restarts += 1;
        }
        self.harness.current = format!(
            "{} n{} from durable incarnation {}",
            if first { "start" } else { "restart" },
            i + 1,
            node.durable.incarnation
        );
        let result = self.after_input(i, &mut gossip);
        self.nodes[i].gossip = Some(gossip);
        let text = std::mem::take(&mut self.harness.current);
        self.harness.trace.line(self.harness.now, format_args!("{text}"));
        result
    }

    fn crash(&mut self, i: usize, downtime: Option<Duration>) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if node.gossip.take().is_none() {
            return Ok(());
        }
        if let Some(key) = node.timer.take() {
            self.harness.cancel(key);
        }
        // Writes reach the disk in order, and the crash can stop them anywhere.
        let pending: Vec<Durable> = node.pending.drain(..).collect();
        let survivors = self.disk_rng.below(pending.len() as u64 + 1) as usize;
        for durable in &pending[..survivors] {
            self.oracle.durable_written(i, durable.incarnation)?;
            node.durable = *durable;
        }
        node.life += 1;
        node.permanent = downtime.is_none();
        let life = node.life;
        let incarnation = node.durable.incarnation;
        self.stats.crashes += 1;
        self.oracle.crashed(i, self.harness.now);
        let how = match downtime {
            Some(d) => format!("for {} ms", d.as_millis()),
            None => {
                self.stats.permanent_crashes += 1;
                "for good".to_string()
            }
        };
        self.harness.trace.line(
            self.harness.now,
            format_args!(
                "crash n{} {how}: {survivors} of {} pending writes survive, durable incarnation {incarnation}",
                i + 1,
                pending.len()
            ),
        );
        if let Some(downtime) = downtime {
            self.harness.schedule(self.harness.now + downtime, Event::Start { node: i, life });
        }
        Ok(())
    }

    // ---- disks ---------------------------------------------------------------------------

    fn write(&mut self, i: usize, durable: Durable) {
        let latency = self.disk_rng.range_inclusive(100_000, self.options.faults.disk_delay_ms_max * 1_000_000);
        let node = &mut self.nodes[i];
        // In order, each no earlier than the one before it.
        let done = node.disk_busy_until.max(self.harness.now + Duration(latency));
        node.disk_busy_until = done;
        node.pending.push_back(durable);
        let life = node.life;
        self.stats.disk_writes += 1;
        self.harness.schedule(done, Event::DiskDone { node: i, life });
    }

    fn disk_done(&mut self, i: usize, life: u64) -> Result<(), String> {
        let node = &mut self.nodes[i];
        if node.life != life {
            return Ok(());
        }
        let Some(durable) = node.pending.pop_front() else {
            return Err(format!("simulator bug: a write of n{} completed with none pending", i + 1));
        };
        node.durable = durable;
        self.oracle.durable_written(i, durable.incarnation)?;
        let text = format!("n{} synced incarnation {}", i + 1, durable.incarnation);
        self.input(i, text, |gossip, now, _| gossip.handle_persisted(now, durable))
    }

    // ---- network -------------------------------------------------------------------------

    fn cut(&self, from: usize, to: usize) -> bool {
        self.harness.partition.cut().is_some_and(|side| side[from] != side[to])
    }

    fn send(&mut self, from: usize, to: usize, message: &Message) -> Result<(), String> {
        let datagram = message.encode();
        let max = self.nodes[from].config.message_bytes_max;
        if datagram.len() > max {
            return Err(format!("n{} sends a datagram of {} bytes, above {max}: {message}", from + 1, datagram.len()));
        }
        self.stats.messages_sent += 1;
        self.stats.bytes_sent += datagram.len() as u64;
        let lost = if self.cut(from, to) {
            Some("cut")
        } else if self.in_flight >= IN_FLIGHT_MAX {
            Some("network full")
        } else if self.network_rng.chance(self.options.faults.message_loss_permille, 1000) {
            Some("lost")
        } else {
            None
        };
        if let Some(why) = lost {
            self.stats.messages_dropped += 1;
            self.harness.trace.line(self.harness.now, format_args!("n{} -> n{} {message}: {why}", from + 1, to + 1));
            return Ok(());
        }
        let delay = self.network_rng.range_inclusive(100_000, self.options.faults.network_delay_ms_max * 1_000_000);
        self.in_flight += 1;
        self.harness.schedule(self.harness.now + Duration(delay), Event::Deliver { from, to, datagram });
        Ok(())
    }

    fn deliver(&mut self, from: usize, to: usize, datagram: Vec<u8>) -> Result<(), String> {
        self.in_flight -= 1;
        let dropped = if self.nodes[to].gossip.is_none() {
            Some("receiver down")
        } else if self.cut(from, to) {
            Some("cut")
        } else {
            None
        };
        if let Some(why) = dropped {
            self.stats.messages_dropped += 1;
            self.harness
                .trace
                .line(self.harness.now, format_args!("n{} <- n{} datagram dropped, {why}", to + 1, from + 1));
            return Ok(());
        }
        // What the shell does with a datagram off the socket.
        let max = self.nodes[to].config.message_bytes_max;
        let message = Message::decode(&datagram, max)
            .map_err(|e| format!("n{} cannot decode a datagram from n{}: {e}", to + 1, from + 1))?;
        self.stats.messages_delivered += 1;
        let text = format!("n{} <- n{} {message}", to + 1, from + 1);
        self.input(to, text, |gossip, now, _| gossip.handle_message(now, message))
    }

    // ---- faults --------------------------------------------------------------------------

    fn crash_one(&mut self) -> Result<(), String> {
        let n = self.nodes.len();
        let up: Vec<usize> = (0..n).filter(|i| self.nodes[*i].gossip.is_some()).collect();
        let down_max = (n * self.options.faults.down_percent_max as usize / 100).max(1);
        if up.is_empty() || n - up.len() >= down_max {
            return Ok(());
        }
        let victim = up[self.harness.fault_rng.below(up.len() as u64) as usize];
        let permanent_max = n / 10;
        let permanent_so_far = self.nodes.iter().filter(|node| node.permanent).count();
        let downtime = if permanent_so_far < permanent_max
            && self.harness.fault_rng.chance(self.options.faults.permanent_crash_percent, 100)
        {
            None
        } else if self.harness.fault_rng.chance(1, 3) {
            // Back before anyone could declare it dead: its old incarnation's suspicion
            // meets its new incarnation.
            Some(ms(self.harness.fault_rng.range_inclusive(200, 4_000)))
        } else {
            Some(ms(self.harness.fault_rng.range_inclusive(10_000, 30_000)))
        };
        self.crash(victim, downtime)
    }

    fn partition(&mut self) {
        let n = self.nodes.len();
        let mut side = vec![false; n];
        let minority = if self.harness.fault_rng.chance(1, 2) {
            1
        } else {
            self.harness.fault_rng.range_inclusive(1, (n / 4).max(1) as u64)
        };
        let mut cut_off = Vec::new();
        while (cut_off.len() as u64) < minority {
            let i = self.harness.fault_rng.below(n as u64) as usize;
            if !side[i] {
                side[i] = true;
                cut_off.push(i);
            }
        }
        cut_off.sort_unstable();
        let duration = ms(self.harness.fault_rng.range_inclusive(2_000, 15_000));
        self.stats.partitions += 1;
        self.oracle.partition_started();
        let names: Vec<String> = cut_off.iter().map(|i| format!("n{}", i + 1)).collect();
        self.harness.trace.line(
            self.harness.now,
            format_args!("partition: {} cut off for {} ms", names.join(","), duration.as_millis()),
        );
        self.harness.partition(side, duration, false);
    }
}

impl Scenario for Sim<'_> {
    type Event = Event;
    type Cut = Sides;
    const EVENTS_MAX: u64 = EVENTS_MAX;

    fn harness(&self) -> &Harness<Event, Sides> {
        &self.harness
    }

    fn harness_mut(&mut self) -> &mut Harness<Event, Sides> {
        &mut self.harness
    }

    /// Members boot within the first probe period, in no particular order.
    fn start(&mut self) -> Result<(), Failure> {
        for i in 0..self.nodes.len() {
            let at = Instant(self.harness.fault_rng.below(self.options.probe_interval_ms.max(1) * 1_000_000));
            self.harness.schedule(at, Event::Start { node: i, life: 0 });
        }
        Ok(())
    }

    /// Faults start after the warm-up.
    fn faults_from(&self) -> Option<Instant> {
        let f = &self.options.faults;
        ((f.crashes || f.partitions) && self.options.warmup_ms < self.options.safety_ms)
            .then(|| Instant::ZERO + ms(self.options.warmup_ms))
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { from, to, datagram } => self.deliver(from, to, datagram),
            Event::Timer { node } => {
                self.nodes[node].timer = None;
                self.ticking = true;
                let result = self.input(node, "tick".to_string(), |gossip, now, rng| gossip.handle_tick(now, rng));
                self.ticking = false;
                result
            }
            Event::DiskDone { node, life } => self.disk_done(node, life),
            Event::Start { node, life } => {
                let n = &self.nodes[node];
                if n.life == life && n.gossip.is_none() && !n.permanent {
                    self.start(node)?;
                }
                Ok(())
            }
            Event::CheckConvergence => {
                self.harness.schedule(self.harness.now + CONVERGENCE_CHECK, Event::CheckConvergence);
                Ok(())
            }
        }
    }

    fn inject_fault(&mut self) -> Result<(), String> {
        let f = &self.options.faults;
        // Rarely: detection and false positives are measured only outside partitions.
        let partition =
            f.partitions && !self.harness.partition.is_active() && (!f.crashes || self.harness.fault_rng.chance(1, 12));
        if partition {
            self.partition();
        } else if f.crashes {
            self.crash_one()?;
        }
        Ok(())
    }

    fn start_liveness(&mut self) -> Result<(), String> {
        self.harness.trace.line(
            self.harness.now,
            format_args!("liveness phase: crashes and partitions stop, crashed members restart unless down for good"),
        );
        if self.harness.partition.is_active() {
            self.heal();
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].gossip.is_none() && !self.nodes[i].permanent {
                self.start(i)?;
            }
        }
        self.harness.schedule(self.harness.now + CONVERGENCE_CHECK, Event::CheckConvergence);
        Ok(())
    }

    fn not_converged(&self) -> String {
        let Some((count, shown)) = self.oracle.mismatches(MISMATCHES_SHOWN) else {
            return format!(
                "the views did not converge within {} ms after faults stopped (they match at the deadline, between \
                 two checks)",
                self.options.liveness_bound_ms()
            );
        };
        let mut message = format!(
            "the views did not converge within {} ms after faults stopped: {count} records do not match reality",
            self.options.liveness_bound_ms()
        );
        for line in shown {
            message.push_str("\n  ");
            message.push_str(&line);
        }
        message
    }
    /// The views are compared every [`CONVERGENCE_CHECK`] of the liveness phase.
    fn converges_after(event: &harness::Event<Event>) -> bool {
        matches!(event, harness::Event::Scenario(Event::CheckConvergence))
    }

    fn converged(&self) -> bool {
        self.oracle.mismatches(0).is_none()
    }

    fn before_event(&mut self) {
        self.oracle.advance(self.harness.now);
    }

    fn after_event(&mut self) -> Result<(), String> {
        self.oracle.settle_detections(self.harness.now);
        Ok(())
    }

    fn partition_healed(&mut self) {
        self.oracle.partition_healed(self.harness.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_options_fail_in_setup() {
        for options in [
            GossipSimOptions { nodes: 1, ..GossipSimOptions::new(1) },
            GossipSimOptions { seed_nodes: 0, ..GossipSimOptions::new(1) },
            GossipSimOptions { probe_timeout_ms: 1000, ..GossipSimOptions::new(1) },
            GossipSimOptions {
                faults: GossipFaultOptions { message_loss_permille: 1001, ..GossipFaultOptions::default() },
                ..GossipSimOptions::new(1)
            },
        ] {
            let failure = run_gossip(&options).outcome.unwrap_err();
            assert_eq!(failure.phase, crate::harness::Phase::Setup, "{failure}");
        }
    }
}
