//! The machinery every scenario shares: simulated time, the event queue, the two phases, the
//! fault clock, network partitions and their healing, and turning a finding into a [`Failure`].
//!
//! A scenario (raft, gossip, cluster) implements [`Scenario`]: how its nodes start, what its
//! own events do, which faults it injects, what starting the liveness phase does, and when it
//! has converged. [`run`] drives it: it starts the nodes, schedules the first fault and the
//! start of the liveness phase, pops events in time order (ties in the order they were
//! scheduled), and fails the run past the liveness deadline, after too many events, or on the
//! first error or panic of a step. The harness draws only from the fault stream, and only
//! where every scenario drew before it existed, so a seed runs as it did.

use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};

use keel_types::{Duration, Instant, Rng};

use crate::trace::{Fnv1a, Trace};

/// Where in a run something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The options were refused before anything ran.
    Setup,
    /// Faults are being injected; only safety is checked.
    Safety,
    /// Faults stopped; safety is still checked and the cluster must converge in time.
    Liveness,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Setup => "setup",
            Phase::Safety => "safety",
            Phase::Liveness => "liveness",
        })
    }
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Simulated time of the failing step.
    pub time: Instant,
    pub phase: Phase,
    /// What went wrong, for people.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.time.0 / 1_000;
        write!(f, "at {}.{:03} ms ({} phase): {}", micros / 1_000, micros % 1_000, self.phase, self.message)
    }
}

/// The result of one run of a scenario, with the scenario's counts `S`.
#[derive(Debug, Clone)]
pub struct SimReport<S> {
    pub seed: u64,
    pub outcome: Result<(), Failure>,
    /// FNV-1a over every trace line; equal for two runs of one seed with equal options.
    pub trace_hash: u64,
    /// The trace, if the options asked to record it.
    pub trace: Vec<String>,
    pub stats: S,
}

impl<S: Default> SimReport<S> {
    /// The report of a run whose options were refused: it failed in setup and ran nothing.
    pub(crate) fn refused(seed: u64, message: String) -> SimReport<S> {
        SimReport {
            seed,
            outcome: Err(Failure { time: Instant::ZERO, phase: Phase::Setup, message }),
            trace_hash: Fnv1a::new().finish(),
            trace: Vec::new(),
            stats: S::default(),
        }
    }
}

/// Derives a stream of its own from `master`, so a change in how one part of a run draws does
/// not reshuffle the others.
pub(crate) fn fork(master: &mut Rng) -> Rng {
    Rng::new(master.next_u64())
}

/// The streams a scenario with a client draws from, forked from the seed in this order.
pub(crate) struct Streams {
    /// Forks any further stream (per node, per part of the scenario).
    pub(crate) master: Rng,
    /// Draws the run's knobs: how bad its network is, which faults it injects, and the like.
    pub(crate) knobs: Rng,
    pub(crate) network: Rng,
    pub(crate) fault: Rng,
    pub(crate) client: Rng,
    pub(crate) disk: Rng,
}

impl Streams {
    pub(crate) fn new(seed: u64) -> Streams {
        let mut master = Rng::new(seed);
        let knobs = fork(&mut master);
        let network = fork(&mut master);
        let fault = fork(&mut master);
        let client = fork(&mut master);
        let disk = fork(&mut master);
        Streams { master, knobs, network, fault, client, disk }
    }
}

pub(crate) fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The fault kinds a run injects: each kind that is `enabled`, all of them or, in swarm
/// testing, each with a chance of three in four (drawn from `knobs`).
pub(crate) fn draw_fault_kinds<K>(knobs: &mut Rng, swarm: bool, kinds: impl IntoIterator<Item = (bool, K)>) -> Vec<K> {
    let mut chosen = Vec::new();
    for (enabled, kind) in kinds {
        if enabled && (!swarm || knobs.chance(3, 4)) {
            chosen.push(kind);
        }
    }
    chosen
}

/// Draws a knob from 0 to `max`, drawing nothing when `max` is 0 (a fault turned off).
pub(crate) fn upto(rng: &mut Rng, max: u64) -> u64 {
    if max == 0 {
        0
    } else {
        rng.range_inclusive(0, max)
    }
}

/// The run's mean time between faults: a quarter to twice the configured `mean`.
pub(crate) fn draw_fault_interval_ms_mean(knobs: &mut Rng, mean: u64) -> u64 {
    let mean = mean.max(1);
    knobs.range_inclusive(mean.div_ceil(4), mean * 2)
}

/// What the queue holds: a scenario's own event, or one the harness handles.
#[derive(Debug)]
pub(crate) enum Event<E> {
    Scenario(E),
    /// The fault clock ticks: the scenario injects a fault (in the safety phase only).
    Fault,
    /// A flapping partition cuts or joins its links again, unless a newer one replaced it.
    PartitionFlap {
        generation: u64,
    },
    /// A partition ends, unless a newer one replaced it.
    PartitionHeal {
        generation: u64,
    },
    LivenessStart,
}

/// The queue key of a scheduled event: its time and a sequence number that orders ties.
pub(crate) type Key = (Instant, u64);

/// A partition: what it cuts (`C`, the scenario's shape of a cut) while `active`.
#[derive(Debug, Default)]
pub(crate) struct Partition<C> {
    cut: C,
    active: bool,
    /// Bumped by every new partition and by healing, so a flap or heal scheduled for an
    /// earlier partition does nothing.
    generation: u64,
}

impl<C: Default> Partition<C> {
    /// What the partition cuts, while it is active.
    pub(crate) fn cut(&self) -> Option<&C> {
        self.active.then_some(&self.cut)
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active
    }

    fn start(&mut self, cut: C) -> u64 {
        *self = Partition { cut, active: true, generation: self.generation + 1 };
        self.generation
    }

    fn heal(&mut self) {
        *self = Partition { cut: C::default(), active: false, generation: self.generation + 1 };
    }
}

/// The state the harness keeps for a scenario: time, phase, queue, faults, partition, trace.
/// `E` is the scenario's own event, `C` its shape of a network cut.
pub(crate) struct Harness<E, C> {
    pub(crate) now: Instant,
    pub(crate) phase: Phase,
    pub(crate) liveness_started: Instant,
    /// Simulated time with faults.
    safety_ms: u64,
    /// Then the time the scenario has to converge.
    liveness_ms: u64,
    queue: BTreeMap<Key, Event<E>>,
    sequence: u64,
    /// Events taken off the queue so far.
    pub(crate) events: u64,
    pub(crate) partition: Partition<C>,
    /// Draws every fault: when the next comes, and what it is (the scenario draws the rest).
    pub(crate) fault_rng: Rng,
    /// The mean simulated time between two faults.
    fault_interval_ms_mean: u64,
    pub(crate) trace: Trace,
    /// The input being fed to a core, to name it if the core panics.
    pub(crate) current: String,
}

impl<E, C: Default> Harness<E, C> {
    /// A harness at time zero in the safety phase, which lasts `safety_ms`, followed by a
    /// liveness phase of `liveness_ms`.
    pub(crate) fn new(
        safety_ms: u64,
        liveness_ms: u64,
        fault_rng: Rng,
        fault_interval_ms_mean: u64,
        trace: Trace,
    ) -> Harness<E, C> {
        Harness {
            now: Instant::ZERO,
            phase: Phase::Safety,
            liveness_started: Instant::ZERO,
            safety_ms,
            liveness_ms,
            queue: BTreeMap::new(),
            sequence: 0,
            events: 0,
            partition: Partition::default(),
            fault_rng,
            fault_interval_ms_mean,
            trace,
            current: String::new(),
        }
    }

    /// Schedules the scenario's `event` at `at` (now, if `at` has passed).
    pub(crate) fn schedule(&mut self, at: Instant, event: E) -> Key {
        self.enqueue(at, Event::Scenario(event))
    }

    /// Takes back an event scheduled under `key`, if it has not run yet.
    pub(crate) fn cancel(&mut self, key: Key) {
        self.queue.remove(&key);
    }

    fn enqueue(&mut self, at: Instant, event: Event<E>) -> Key {
        let key = (at.max(self.now), self.sequence);
        self.sequence += 1;
        self.queue.insert(key, event);
        key
    }

    pub(crate) fn failure(&self, message: String) -> Failure {
        Failure { time: self.now, phase: self.phase, message }
    }

    /// How long until the next fault: a quarter to seven quarters of the mean.
    fn fault_interval(&mut self) -> Duration {
        let mean = self.fault_interval_ms_mean;
        ms(self.fault_rng.range_inclusive(mean.div_ceil(4), mean + mean * 3 / 4))
    }

    /// Cuts the network as `cut` says for `duration`; a `flapping` partition cuts and joins
    /// its links every 10 to 200 ms until then.
    pub(crate) fn partition(&mut self, cut: C, duration: Duration, flapping: bool) {
        let generation = self.partition.start(cut);
        if flapping {
            let next = ms(self.fault_rng.range_inclusive(10, 200));
            self.enqueue(self.now + next, Event::PartitionFlap { generation });
        }
        self.enqueue(self.now + duration, Event::PartitionHeal { generation });
    }

    /// Cuts the network as `cut` says for 100 ms to 4 s, tracing it as `shape`; a `flapping`
    /// partition cuts and joins its links every 10 to 200 ms until then.
    pub(crate) fn partition_briefly(&mut self, cut: C, shape: &str, flapping: bool) {
        let duration = ms(self.fault_rng.range_inclusive(100, 4_000));
        self.trace.line(
            self.now,
            format_args!(
                "partition {shape}{} for {} ms",
                if flapping { ", flapping" } else { "" },
                duration.as_millis()
            ),
        );
        self.partition(cut, duration, flapping);
    }

    /// Draws the next fault's kind from `kinds`, each as often as its `weight` says.
    pub(crate) fn draw_fault<K: Copy>(&mut self, kinds: &[K], weight: impl Fn(K) -> u64) -> K {
        let weights: u64 = kinds.iter().map(|k| weight(*k)).sum();
        let mut draw = self.fault_rng.below(weights);
        let mut kind = kinds[0];
        for candidate in kinds {
            if draw < weight(*candidate) {
                kind = *candidate;
                break;
            }
            draw -= weight(*candidate);
        }
        kind
    }

    /// How long a crashed node stays down: a third of the time a quick reboot (1 to 50 ms) that
    /// lands in the middle of an election or a replication round, else 100 ms to 3 s.
    pub(crate) fn downtime(&mut self) -> Duration {
        if self.fault_rng.chance(1, 3) {
            ms(self.fault_rng.range_inclusive(1, 50))
        } else {
            ms(self.fault_rng.range_inclusive(100, 3_000))
        }
    }

    /// How long each of `nodes` stays down after a power loss: they boot again close together
    /// (10 ms to 1 s after it, then within 30 ms of each other), so their election timers race
    /// as at a cold start.
    pub(crate) fn power_loss_downtimes(&mut self, nodes: usize) -> Vec<Duration> {
        let base = self.fault_rng.range_inclusive(10, 1_000);
        (0..nodes).map(|_| ms(base + self.fault_rng.range_inclusive(0, 30))).collect()
    }

    /// Draws a spell of trouble (a slow disk, a stalled replay) for one of `nodes`: which node,
    /// and until when (`duration_ms_min` to 3 s from now).
    pub(crate) fn draw_spell(&mut self, nodes: usize, duration_ms_min: u64) -> (usize, Instant) {
        let victim = self.fault_rng.below(nodes as u64) as usize;
        let until = self.now + ms(self.fault_rng.range_inclusive(duration_ms_min, 3_000));
        (victim, until)
    }

    fn flap(&mut self, generation: u64) {
        if self.partition.generation != generation {
            return;
        }
        self.partition.active = !self.partition.active;
        let state = if self.partition.active { "cut" } else { "joined" };
        self.trace.line(self.now, format_args!("partition flaps: {state}"));
        let next = ms(self.fault_rng.range_inclusive(10, 200));
        self.enqueue(self.now + next, Event::PartitionFlap { generation });
    }

    /// Traces the run's outcome and returns its report, with the scenario's `stats`.
    pub(crate) fn finish<S>(mut self, seed: u64, outcome: Result<(), Failure>, stats: S) -> SimReport<S> {
        match &outcome {
            Ok(()) => self.trace.line(self.now, format_args!("PASSED")),
            Err(failure) => self.trace.line(self.now, format_args!("FAILED: {}", failure.message)),
        }
        let (trace_hash, trace) = self.trace.finish();
        SimReport { seed, outcome, trace_hash, trace, stats }
    }
}

/// A simulated system the harness drives. The scenario owns its nodes, network, disks,
/// clients and oracle, and a [`Harness`] for everything else.
pub(crate) trait Scenario: Sized {
    /// The scenario's own events.
    type Event;
    /// What a partition cuts.
    type Cut: Default;
    /// Most events one run may take; hitting the bound means a message storm or a timer that
    /// never advances.
    const EVENTS_MAX: u64;

    fn harness(&self) -> &Harness<Self::Event, Self::Cut>;
    fn harness_mut(&mut self) -> &mut Harness<Self::Event, Self::Cut>;

    /// Starts the nodes and schedules the scenario's first events (before the first fault).
    fn start(&mut self) -> Result<(), Failure>;
    /// When the fault clock starts, if the scenario injects faults at all.
    fn faults_from(&self) -> Option<Instant>;
    /// Runs one of the scenario's events.
    fn step(&mut self, event: Self::Event) -> Result<(), String>;
    /// Injects one fault (the harness calls it in the safety phase only).
    fn inject_fault(&mut self) -> Result<(), String>;
    /// What else starting the liveness phase does (the phase has changed already).
    fn start_liveness(&mut self) -> Result<(), String>;
    /// Whether the run may have converged after `event`: convergence is checked only then.
    fn converges_after(event: &Event<Self::Event>) -> bool;
    /// Whether the liveness phase has reached its goal.
    fn converged(&self) -> bool;
    /// Why the run has not converged by the deadline, for people.
    fn not_converged(&self) -> String;

    /// Runs before every event, with the clock at the event's time.
    fn before_event(&mut self) {}
    /// Checks run after every event that succeeded.
    fn after_event(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// Checks run once the run has converged (an end-of-run validation).
    fn validate_converged(&mut self) -> Result<(), String> {
        Ok(())
    }
    /// What else a partition's end does.
    fn partition_healed(&mut self) {}

    /// Ends the partition, if any, and traces it.
    fn heal(&mut self) {
        self.harness_mut().partition.heal();
        self.partition_healed();
        let harness = self.harness_mut();
        harness.trace.line(harness.now, format_args!("partition healed"));
    }

    /// Runs one step, turning an error or a panic (a failed assertion in a core) into a
    /// failure at the current time and phase.
    fn guarded(&mut self, step: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), Failure> {
        match catch_unwind(AssertUnwindSafe(|| step(self))) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(self.harness().failure(message)),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic without a message".to_string());
                let during = std::mem::take(&mut self.harness_mut().current);
                Err(self.harness().failure(format!("a core panicked on \"{during}\": {text}")))
            }
        }
    }
}

/// Runs one seed of a scenario: refuses options that did not pass `validated`, or builds the
/// scenario with `new`, runs it and reports with `finish`. Never panics on a finding: a
/// violated invariant, a core that panics, or a run that does not converge all come back as a
/// [`Failure`].
pub(crate) fn run_seed<S: Scenario, T: Default>(
    seed: u64,
    validated: Result<(), String>,
    new: impl FnOnce() -> S,
    finish: impl FnOnce(S, Result<u64, Failure>) -> SimReport<T>,
) -> SimReport<T> {
    if let Err(message) = validated {
        return SimReport::refused(seed, message);
    }
    let mut sim = new();
    let outcome = run(&mut sim);
    finish(sim, outcome)
}

/// Runs the safety phase, then the liveness phase until the scenario converges. Returns how
/// many milliseconds after faults stopped it converged.
pub(crate) fn run<S: Scenario>(sim: &mut S) -> Result<u64, Failure> {
    let harness = sim.harness();
    let liveness_at = Instant::ZERO + ms(harness.safety_ms);
    let deadline = liveness_at + ms(harness.liveness_ms);
    sim.start()?;
    if let Some(from) = sim.faults_from() {
        let harness = sim.harness_mut();
        let first = harness.fault_interval();
        harness.enqueue(from + first, Event::Fault);
    }
    sim.harness_mut().enqueue(liveness_at, Event::LivenessStart);
    loop {
        let harness = sim.harness_mut();
        if harness.events >= S::EVENTS_MAX {
            return Err(harness.failure(format!("gave up after {} events: a message storm?", S::EVENTS_MAX)));
        }
        let Some(((time, _), event)) = harness.queue.pop_first() else {
            return Err(harness.failure("nothing left to simulate".to_string()));
        };
        if time > deadline {
            harness.now = deadline;
            let message = sim.not_converged();
            return Err(sim.harness().failure(message));
        }
        harness.now = time;
        harness.events += 1;
        let check = S::converges_after(&event);
        sim.guarded(|sim| {
            sim.before_event();
            dispatch(sim, event)?;
            sim.after_event()
        })?;
        if sim.harness().phase == Phase::Liveness && check && sim.converged() {
            sim.guarded(|sim| sim.validate_converged())?;
            let harness = sim.harness_mut();
            let took = harness.now.saturating_since(harness.liveness_started).as_millis();
            harness.trace.line(harness.now, format_args!("converged {took} ms after faults stopped"));
            return Ok(took);
        }
    }
}

fn dispatch<S: Scenario>(sim: &mut S, event: Event<S::Event>) -> Result<(), String> {
    match event {
        Event::Scenario(event) => sim.step(event),
        Event::Fault => {
            if sim.harness().phase != Phase::Safety {
                return Ok(());
            }
            sim.inject_fault()?;
            let harness = sim.harness_mut();
            let next = harness.fault_interval();
            harness.enqueue(harness.now + next, Event::Fault);
            Ok(())
        }
        Event::PartitionFlap { generation } => {
            sim.harness_mut().flap(generation);
            Ok(())
        }
        Event::PartitionHeal { generation } => {
            if sim.harness().partition.generation == generation {
                sim.heal();
            }
            Ok(())
        }
        Event::LivenessStart => {
            let harness = sim.harness_mut();
            harness.phase = Phase::Liveness;
            harness.liveness_started = harness.now;
            sim.start_liveness()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy scenario: each event is a label the step traces; "converge" makes the run
    /// converge, "panic" panics, "cut" starts a partition of 50 ms and "cut-long" one of 500.
    struct Toy {
        harness: Harness<&'static str, Vec<usize>>,
        first: Vec<(u64, &'static str)>,
        faults: bool,
        faults_at: Vec<u64>,
        converged: bool,
    }

    impl Toy {
        fn new(safety_ms: u64, liveness_ms: u64, first: Vec<(u64, &'static str)>, faults: bool) -> Toy {
            Toy {
                harness: Harness::new(safety_ms, liveness_ms, Rng::new(7), 4, Trace::new(true)),
                first,
                faults,
                faults_at: Vec::new(),
                converged: false,
            }
        }

        fn lines(self) -> Vec<String> {
            self.harness.trace.finish().1
        }
    }

    impl Scenario for Toy {
        type Event = &'static str;
        type Cut = Vec<usize>;
        const EVENTS_MAX: u64 = 1_000;

        fn harness(&self) -> &Harness<&'static str, Vec<usize>> {
            &self.harness
        }

        fn harness_mut(&mut self) -> &mut Harness<&'static str, Vec<usize>> {
            &mut self.harness
        }

        fn start(&mut self) -> Result<(), Failure> {
            for (at, label) in self.first.clone() {
                self.harness.schedule(Instant::ZERO + ms(at), label);
            }
            Ok(())
        }

        fn faults_from(&self) -> Option<Instant> {
            self.faults.then_some(Instant::ZERO)
        }

        fn step(&mut self, label: &'static str) -> Result<(), String> {
            self.harness.current = label.to_string();
            let cut = self.harness.partition.cut().is_some();
            self.harness.trace.line(self.harness.now, format_args!("{label} cut {cut}"));
            match label {
                "converge" => self.converged = true,
                "panic" => panic!("told to"),
                "fail" => return Err("told to fail".to_string()),
                "cut" => self.harness.partition(vec![1], ms(50), false),
                "cut-long" => self.harness.partition(vec![2], ms(500), false),
                _ => {}
            }
            Ok(())
        }

        fn inject_fault(&mut self) -> Result<(), String> {
            self.faults_at.push(self.harness.now.as_millis());
            Ok(())
        }

        fn start_liveness(&mut self) -> Result<(), String> {
            self.harness.trace.line(self.harness.now, format_args!("liveness"));
            Ok(())
        }

        fn converges_after(event: &Event<&'static str>) -> bool {
            matches!(event, Event::Scenario(_))
        }

        fn converged(&self) -> bool {
            self.converged
        }

        fn not_converged(&self) -> String {
            "never told to converge".to_string()
        }
    }

    #[test]
    fn events_run_in_time_order_and_ties_in_the_order_scheduled() {
        let mut toy = Toy::new(10, 100, vec![(5, "b"), (5, "a"), (1, "c"), (20, "converge")], false);
        assert_eq!(run(&mut toy), Ok(10));
        assert_eq!(toy.harness.events, 5);
        let lines: Vec<String> = toy.lines().iter().map(|l| l.trim_start().to_string()).collect();
        assert_eq!(
            lines,
            [
                "1.000 c cut false",
                "5.000 b cut false",
                "5.000 a cut false",
                "10.000 liveness",
                "20.000 converge cut false",
                "20.000 converged 10 ms after faults stopped"
            ]
        );
    }

    #[test]
    fn faults_come_only_in_the_safety_phase() {
        let mut toy = Toy::new(100, 100, vec![(150, "converge")], true);
        assert!(run(&mut toy).is_ok());
        assert!(toy.faults_at.len() >= 100 / 7, "{:?}", toy.faults_at);
        assert!(toy.faults_at.iter().all(|at| (1..100).contains(at)), "{:?}", toy.faults_at);
        assert!(toy.faults_at.windows(2).all(|w| (1..=7).contains(&(w[1] - w[0]))), "{:?}", toy.faults_at);
    }

    #[test]
    fn a_heal_meant_for_an_earlier_partition_does_nothing() {
        let first = vec![(1, "cut"), (20, "cut-long"), (60, "x"), (519, "y"), (521, "z"), (600, "converge")];
        let mut toy = Toy::new(0, 1_000, first, false);
        assert!(run(&mut toy).is_ok());
        let lines = toy.lines();
        let cut = |label: &str| lines.iter().find(|l| l.contains(&format!(" {label} cut"))).unwrap().ends_with("true");
        assert!(cut("x"), "the first partition's heal at 51 ms ended the second: {lines:?}");
        assert!(cut("y"));
        assert!(!cut("z"), "{lines:?}");
    }

    #[test]
    fn a_panic_or_an_error_in_a_step_fails_the_run_where_it_happened() {
        let mut toy = Toy::new(10, 100, vec![(3, "panic")], false);
        let failure = run(&mut toy).unwrap_err();
        assert_eq!((failure.time, failure.phase), (Instant::ZERO + ms(3), Phase::Safety));
        assert_eq!(failure.message, "a core panicked on \"panic\": told to");
        let mut toy = Toy::new(10, 100, vec![(30, "fail")], false);
        let failure = run(&mut toy).unwrap_err();
        assert_eq!((failure.time, failure.phase), (Instant::ZERO + ms(30), Phase::Liveness));
        assert_eq!(failure.message, "told to fail");
    }

    #[test]
    fn a_run_that_does_not_converge_fails_at_the_deadline() {
        let mut toy = Toy::new(10, 100, vec![(500, "converge")], false);
        let failure = run(&mut toy).unwrap_err();
        assert_eq!((failure.time, failure.phase), (Instant::ZERO + ms(110), Phase::Liveness));
        assert_eq!(failure.message, "never told to converge");
        let mut toy = Toy::new(10, 100, Vec::new(), false);
        let failure = run(&mut toy).unwrap_err();
        assert_eq!((failure.time, failure.message.as_str()), (Instant::ZERO + ms(10), "nothing left to simulate"));
    }
}
