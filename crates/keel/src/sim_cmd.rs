//! `keel sim`: run the deterministic simulator (keel-sim) on the real protocol cores.
//!
//! One seed reproduces one run exactly; a sweep runs many seeds on every core and, when one
//! fails, prints the command that reproduces it with its trace.

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use keel_sim::{
    run_cluster, run_gossip, run_raft, ClusterMutation, ClusterSimOptions, ClusterSimReport, ClusterStats,
    GossipMutation, GossipSimOptions, GossipSimReport, GossipStats, Mutation, RaftSimOptions, RaftSimReport, SimReport,
    Stats,
};

/// Which seeds to run: the arguments every scenario takes first.
#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// Run this one seed.
    #[arg(long, value_name = "S")]
    seed: Option<u64>,
    /// Sweep this many seeds, from --start on.
    #[arg(long, value_name = "N")]
    seeds: Option<u64>,
    /// The first seed of a sweep.
    #[arg(long, value_name = "S", default_value_t = 0, requires = "seeds")]
    start: u64,
}

/// Whether to trace one run, and how to sweep: the arguments every scenario takes last.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Print the trace of the run.
    #[arg(long, requires = "seed")]
    trace: bool,
    /// Threads for a sweep (default: one per core).
    #[arg(long, value_name = "N")]
    jobs: Option<usize>,
    /// Stop a sweep at its first failure.
    #[arg(long, requires = "seeds")]
    fail_fast: bool,
}

/// One scenario's command line: which seeds, the scenario's own arguments `A`, then whether to
/// trace and how to sweep.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("runs").required(true).args(["seed", "seeds"])))]
pub struct SimArgs<A: clap::Args> {
    #[command(flatten)]
    seeds: SeedArgs,
    #[command(flatten)]
    scenario: A,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum SimCommand {
    /// Simulate a Raft cluster (keel-raft's real code) under network, disk, crash and clock
    /// faults, then check that it converges once they stop. See docs/simulator.md.
    #[command(mut_arg("trace", |trace| trace.help("Print the trace of the run, one line per event")))]
    Raft(SimArgs<RaftSimArgs>),
    /// Simulate a cluster (keel-metadata's controller, keel-replication's leaders and
    /// followers) with an idempotent acks=all producer and a consumer, under lossy crashes,
    /// clean restarts, partitions, slow disks and late metadata. See docs/simulator.md.
    Cluster(SimArgs<ClusterSimArgs>),
    /// Simulate SWIM membership (keel-gossip's real code) on many members under message loss,
    /// crashes, restarts and partitions; measure detection time and false positives, then
    /// check that every view converges once faults stop. See docs/gossip.md.
    Gossip(SimArgs<GossipSimArgs>),
}

/// `keel sim gossip`'s own arguments.
#[derive(Debug, clap::Args)]
pub struct GossipSimArgs {
    /// Members.
    #[arg(long, default_value_t = 50)]
    nodes: usize,
    /// The share of datagrams lost, 0 to 1, in both phases.
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// No partitions, only loss, crashes and restarts.
    #[arg(long)]
    no_partitions: bool,
    /// No crashes (and so no restarts), only loss and partitions.
    #[arg(long)]
    no_crashes: bool,
    /// Simulated milliseconds of faults (default 60000, the first 5000 without).
    #[arg(long, value_name = "MS")]
    safety_ms: Option<u64>,
    /// Simulated milliseconds the views have to converge once faults stop (default: four
    /// probe rounds, 4 x nodes x 1 s, plus the 5 s suspicion timeout).
    #[arg(long, value_name = "MS")]
    liveness_ms: Option<u64>,
    /// Records each datagram carries from the whole view in turn (anti-entropy); 0 turns it off.
    #[arg(long, value_name = "N", default_value_t = GossipSimOptions::new(0).anti_entropy_records)]
    anti_entropy_records: usize,
    /// Plant a bug the simulator should find.
    #[arg(long, value_enum)]
    mutation: Option<GossipMutationArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum GossipMutationArg {
    /// Dead is final and nobody refutes: a falsely accused or restarted member stays dead.
    DeadAlwaysWins,
    /// Whatever a member hears replaces what it holds, whatever the incarnations.
    BlindMerge,
}

impl GossipMutationArg {
    fn mutation(self) -> GossipMutation {
        match self {
            GossipMutationArg::DeadAlwaysWins => GossipMutation::DeadAlwaysWins,
            GossipMutationArg::BlindMerge => GossipMutation::BlindMerge,
        }
    }
}

/// `keel sim cluster`'s own arguments.
#[derive(Debug, clap::Args)]
pub struct ClusterSimArgs {
    #[arg(long, default_value_t = 3)]
    brokers: usize,
    /// Partitions of the simulated topic.
    #[arg(long, default_value_t = 2)]
    partitions: usize,
    #[arg(long, default_value_t = 3)]
    replication_factor: usize,
    #[arg(long, default_value_t = 2)]
    min_isr: usize,
    /// Simulated milliseconds of faults (default 10000).
    #[arg(long, value_name = "MS")]
    safety_ms: Option<u64>,
    /// Simulated milliseconds the cluster has to converge once faults stop (default 10000).
    #[arg(long, value_name = "MS")]
    liveness_ms: Option<u64>,
    /// Voters of the controller quorum, on brokers 1..=N in combined mode (default 3, or
    /// every broker if there are fewer).
    #[arg(long, value_name = "N")]
    controllers: Option<usize>,
    /// The controllers compact their Raft log every this many applied entries (default: each
    /// seed draws 2 to 8).
    #[arg(long, value_name = "N")]
    controller_snapshot_entries: Option<u64>,
    /// Voters keep their Raft state on a disk of its own, which a disk swap leaves alone (by
    /// default it is on the data disk, as `keel serve` keeps it, so a disk swap on a voter
    /// wipes it and the voter recovers it from the others).
    #[arg(long)]
    separate_metadata_disk: bool,
    /// Plant a bug the simulator should find.
    #[arg(long, value_enum)]
    mutation: Option<ClusterMutationArg>,
    /// Leave out the broker-epoch check (KIP-903): fetches carry no broker epoch and the
    /// controller checks none, so a leader may re-admit a restarted follower on stale state.
    #[arg(long)]
    no_broker_epoch_check: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[allow(clippy::enum_variant_names)] // the mutants' names say what check each removes
enum ClusterMutationArg {
    /// keel-metadata's NoElr: the rules before KIP-966 (the last replica standing).
    NoElr,
    /// Followers never learn of a divergence and never truncate.
    NoTruncate,
    /// Brokers act on metadata before replaying their own registration (issue 17, F1).
    NoMetadataGate,
    /// A broker back on an empty data directory registers as clean (issue 17, F2).
    FreshDirectoryIsClean,
    /// A voter back on a replaced disk trusts its empty Raft state (keel-raft's recovery rule
    /// left out); the Raft state is then on the data disk even with
    /// --separate-metadata-disk.
    TrustLostState,
    /// Retention deletes up to the log end, not the high watermark (issue 17, F6).
    RetentionIgnoresHighWatermark,
    /// A leader vouches for a follower whose records all lie below its log start (Kafka's
    /// epoch-cache answer).
    TrustBelowLogStart,
}

impl ClusterMutationArg {
    fn mutation(self) -> ClusterMutation {
        match self {
            ClusterMutationArg::NoElr => ClusterMutation::NoElr,
            ClusterMutationArg::NoTruncate => ClusterMutation::NoTruncate,
            ClusterMutationArg::NoMetadataGate => ClusterMutation::NoMetadataGate,
            ClusterMutationArg::FreshDirectoryIsClean => ClusterMutation::FreshDirectoryIsClean,
            ClusterMutationArg::TrustLostState => ClusterMutation::TrustLostState,
            ClusterMutationArg::RetentionIgnoresHighWatermark => ClusterMutation::RetentionIgnoresHighWatermark,
            ClusterMutationArg::TrustBelowLogStart => ClusterMutation::TrustBelowLogStart,
        }
    }
}

/// `keel sim raft`'s own arguments.
#[derive(Debug, clap::Args)]
pub struct RaftSimArgs {
    /// Voters.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Replication quorum R (default: a majority of the voters).
    #[arg(long, value_name = "R")]
    replication_quorum: Option<usize>,
    /// Election quorum E (default: a majority of the voters).
    #[arg(long, value_name = "E")]
    election_quorum: Option<usize>,
    /// Non-voting members that replicate the log.
    #[arg(long, default_value_t = 0)]
    observers: usize,
    /// Simulated milliseconds of faults (default 20000).
    #[arg(long, value_name = "MS")]
    safety_ms: Option<u64>,
    /// Simulated milliseconds the cluster has to converge once faults stop (default 10000).
    #[arg(long, value_name = "MS")]
    liveness_ms: Option<u64>,
    /// Plant a bug the simulator should find.
    #[arg(long, value_enum)]
    mutation: Option<MutationArg>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum MutationArg {
    /// Accept R + E <= N (use with --replication-quorum 1 --election-quorum 2).
    UnsafeQuorums,
    /// A leader commits an entry of an older term by counting replicas (Raft figure 8).
    CommitOlderTerm,
    /// A restarting node forgets its vote.
    ForgetVote,
    /// A voter back on a replaced disk trusts its empty state and votes at once.
    TrustLostState,
    /// Election timeouts are not randomized.
    FixedTimeout,
}

impl MutationArg {
    fn mutation(self) -> Mutation {
        match self {
            MutationArg::UnsafeQuorums => Mutation::UnsafeQuorums,
            MutationArg::CommitOlderTerm => Mutation::CommitOlderTermByCount,
            MutationArg::ForgetVote => Mutation::ForgetVoteOnRestart,
            MutationArg::TrustLostState => Mutation::TrustLostState,
            MutationArg::FixedTimeout => Mutation::FixedElectionTimeout,
        }
    }
}

/// Prints one line. A reader that went away (`keel sim raft --seed 1 --trace | head`) is
/// not an error worth a panic: the rest of the output is simply dropped.
fn say(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(text);
    let _ = out.write_all(b"\n");
}

macro_rules! say {
    ($($arg:tt)*) => { say(format_args!($($arg)*)) };
}

/// Sweeps longer than this many seeds are refused; split them with --start.
const SEEDS_MAX: u64 = 100_000_000;
/// Failing seeds listed in a sweep's summary.
const FAILURES_SHOWN: usize = 20;

pub fn sim(command: SimCommand) -> Result<(), String> {
    match command {
        SimCommand::Raft(args) => simulate(&args),
        SimCommand::Cluster(args) => simulate(&args),
        SimCommand::Gossip(args) => simulate(&args),
    }
}

/// A scenario's command line: its options, how to run them, and the lines it prints about one
/// run or a sweep. [`simulate`] does the rest the same way for every scenario.
trait ScenarioArgs: clap::Args + Sync {
    type Options: Sync;
    type Stats: Send;
    /// The scenario, as in `keel sim <NAME>`.
    const NAME: &'static str;
    /// keel-sim's check of the options (run before anything is printed).
    const VALIDATE: fn(&Self::Options) -> Result<(), String>;
    /// keel-sim's run of one seed.
    const RUN: fn(&Self::Options) -> SimReport<Self::Stats>;
    /// How long the run took to converge after faults stopped, if it did.
    const CONVERGED_MS: fn(&Self::Stats) -> Option<u64>;

    /// The options for `seed`, or why the arguments are refused.
    fn options(&self, seed: u64) -> Result<Self::Options, String>;
    /// `options` for another seed, keeping its trace if `record_trace`.
    fn seeded(options: &Self::Options, seed: u64, record_trace: bool) -> Self::Options;
    /// The run's shape, for the opening line.
    fn describe(options: &Self::Options) -> String;
    /// Writes out the arguments that differ from their defaults, for [`reproduce`].
    fn write_arguments(&self, command: &mut CommandLine);
    /// The lines that follow the trace hash of one run.
    fn print_run(options: &Self::Options, report: &SimReport<Self::Stats>, wall_ms: f64);
    /// The lines that follow a sweep's count of passed and failed seeds.
    fn print_sweep(options: &Self::Options, reports: &[SimReport<Self::Stats>], jobs: usize, wall_ms: f64);
}

/// Runs the one seed or sweeps the seeds the arguments ask for.
fn simulate<A: ScenarioArgs>(args: &SimArgs<A>) -> Result<(), String> {
    let seeds = &args.seeds;
    let options = args.scenario.options(seeds.seed.unwrap_or(seeds.start))?;
    (A::VALIDATE)(&options)?;
    match (seeds.seed, seeds.seeds) {
        (Some(seed), _) => run_one(&args.scenario, &A::seeded(&options, seed, args.run.trace)),
        (None, Some(count)) => sweep(args, &options, count),
        (None, None) => Err("give --seed S to run one seed or --seeds N to sweep".to_string()),
    }
}

/// Runs one seed and prints its trace (if recorded), verdict, trace hash and counts.
fn run_one<A: ScenarioArgs>(args: &A, options: &A::Options) -> Result<(), String> {
    let started = wall_clock();
    let report = (A::RUN)(options);
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    print_trace(&report.trace);
    say!("keel sim {}: seed {}, {}", A::NAME, report.seed, A::describe(options));
    match &report.outcome {
        Ok(()) => {
            say!("PASSED: converged {} ms after faults stopped", (A::CONVERGED_MS)(&report.stats).unwrap_or_default())
        }
        Err(failure) => say!("FAILED {failure}"),
    }
    say!("trace hash {:016x}", report.trace_hash);
    A::print_run(options, &report, wall_ms);
    match &report.outcome {
        Ok(()) => Ok(()),
        Err(_) => {
            say!("reproduce with: {}", reproduce(args, report.seed));
            Err(format!("seed {} failed", report.seed))
        }
    }
}

/// Sweeps `count` seeds and prints the failures as they come, then a summary and the verdict.
fn sweep<A: ScenarioArgs>(args: &SimArgs<A>, options: &A::Options, count: u64) -> Result<(), String> {
    let (start, run) = (args.seeds.start, &args.run);
    let SweepRun { reports, failed, jobs, wall_ms } = run_sweep(
        SeedRange { start, count, jobs: run.jobs, fail_fast: run.fail_fast },
        A::NAME,
        &A::describe(options),
        |seed| (A::RUN)(&A::seeded(options, seed, false)),
        |seed| reproduce(&args.scenario, seed),
    )?;
    say!("{} seeds run: {} passed, {} failed", reports.len(), reports.len() - failed.len(), failed.len());
    A::print_sweep(options, &reports, jobs, wall_ms);
    sweep_verdict(&failed, reports.len(), |seed| reproduce(&args.scenario, seed))
}

/// The command line that reruns `seed` with these arguments and prints its trace.
fn reproduce<A: ScenarioArgs>(args: &A, seed: u64) -> String {
    let mut command = CommandLine(format!("keel sim {} --seed {seed}", A::NAME));
    args.write_arguments(&mut command);
    command.0.push_str(" --trace");
    command.0
}

/// A command line written out for people to paste: only what differs from the defaults.
struct CommandLine(String);

impl CommandLine {
    /// `--name`, if `on`.
    fn flag(&mut self, name: &str, on: bool) {
        if on {
            self.0.push_str(&format!(" --{name}"));
        }
    }

    /// `--name value`, if there is a value.
    fn option(&mut self, name: &str, value: Option<impl std::fmt::Display>) {
        if let Some(value) = value {
            self.0.push_str(&format!(" --{name} {value}"));
        }
    }

    /// `--name value`, unless `value` is the `default`.
    fn unless_default<T: PartialEq + std::fmt::Display>(&mut self, name: &str, value: T, default: T) {
        self.option(name, (value != default).then_some(value));
    }

    /// `--mutation name`, if there is one, by the name the command line knows it by.
    fn mutation(&mut self, mutation: Option<impl clap::ValueEnum>) {
        let name = mutation.and_then(|m| m.to_possible_value()).map(|value| value.get_name().to_string());
        self.option("mutation", name);
    }

    /// `--safety-ms` and `--liveness-ms`, as given.
    fn phases(&mut self, safety_ms: Option<u64>, liveness_ms: Option<u64>) {
        self.option("safety-ms", safety_ms);
        self.option("liveness-ms", liveness_ms);
    }
}

/// The wall clock, read only to report how much faster than real time the simulation ran;
/// nothing the simulator does depends on it.
#[allow(clippy::disallowed_methods)]
fn wall_clock() -> std::time::Instant {
    std::time::Instant::now()
}

// ---- raft ------------------------------------------------------------------------------------

impl ScenarioArgs for RaftSimArgs {
    type Options = RaftSimOptions;
    type Stats = Stats;
    const NAME: &'static str = "raft";
    const VALIDATE: fn(&RaftSimOptions) -> Result<(), String> = RaftSimOptions::validate;
    const RUN: fn(&RaftSimOptions) -> SimReport<Stats> = run_raft;
    const CONVERGED_MS: fn(&Stats) -> Option<u64> = |stats| stats.liveness_converged_ms;

    fn options(&self, seed: u64) -> Result<RaftSimOptions, String> {
        let defaults = RaftSimOptions::new(seed);
        Ok(RaftSimOptions {
            nodes: self.nodes,
            observers: self.observers,
            replication_quorum: self.replication_quorum,
            election_quorum: self.election_quorum,
            safety_ms: self.safety_ms.unwrap_or(defaults.safety_ms),
            liveness_ms: self.liveness_ms.unwrap_or(defaults.liveness_ms),
            mutation: self.mutation.map(MutationArg::mutation),
            ..defaults
        })
    }

    fn seeded(options: &RaftSimOptions, seed: u64, record_trace: bool) -> RaftSimOptions {
        RaftSimOptions { seed, record_trace, ..options.clone() }
    }

    fn describe(options: &RaftSimOptions) -> String {
        let majority = options.nodes / 2 + 1;
        let mut text = format!(
            "{} voters, {} observers, R {}, E {}",
            options.nodes,
            options.observers,
            options.replication_quorum.unwrap_or(majority),
            options.election_quorum.unwrap_or(majority)
        );
        if let Some(m) = options.mutation {
            text.push_str(&format!(", mutation {m:?}"));
        }
        text
    }

    fn write_arguments(&self, command: &mut CommandLine) {
        command.unless_default("nodes", self.nodes, 3);
        command.option("replication-quorum", self.replication_quorum);
        command.option("election-quorum", self.election_quorum);
        command.unless_default("observers", self.observers, 0);
        command.phases(self.safety_ms, self.liveness_ms);
        command.mutation(self.mutation);
    }

    fn print_run(_: &RaftSimOptions, report: &RaftSimReport, wall_ms: f64) {
        let stats = &report.stats;
        say!(
            "simulated {:.1} s in {:.3} s wall: {:.0}x real time",
            stats.simulated_ms as f64 / 1000.0,
            wall_ms / 1000.0,
            stats.simulated_ms as f64 / wall_ms.max(0.001)
        );
        say!(
            "events {}; messages {} sent, {} delivered, {} dropped, {} duplicated; disk writes {}",
            stats.events,
            stats.messages_sent,
            stats.messages_delivered,
            stats.messages_dropped,
            stats.messages_duplicated,
            stats.disk_writes
        );
        say!(
            "leaders elected {} (highest term {}); committed index {}; commands {} proposed, {} committed, {} applied \
             twice",
            stats.leaders_elected,
            stats.highest_term,
            stats.committed_index,
            stats.commands_proposed,
            stats.commands_committed,
            stats.commands_duplicated
        );
        say!(
            "faults: {} crashes ({} onto a replaced disk, {} unsynced writes lost, {} torn), {} partitions, {} slow \
             disks, {} clock jumps, {} transfers; {} compactions, {} snapshots applied",
            stats.crashes,
            stats.disk_swaps,
            stats.writes_lost,
            stats.torn_writes,
            stats.partitions,
            stats.slow_disks,
            stats.clock_jumps,
            stats.transfers,
            stats.compactions,
            stats.snapshots_applied
        );
    }

    fn print_sweep(_: &RaftSimOptions, reports: &[RaftSimReport], jobs: usize, wall_ms: f64) {
        let simulated_ms: u64 = reports.iter().map(|r| r.stats.simulated_ms).sum();
        let events: u64 = reports.iter().map(|r| r.stats.events).sum();
        let converged: Vec<u64> = reports.iter().filter_map(|r| r.stats.liveness_converged_ms).collect();
        let disk_swaps: u64 = reports.iter().map(|r| r.stats.disk_swaps).sum();
        say!("{disk_swaps} crashes came back on a replaced disk");
        say!(
            "simulated {:.1} s in {:.3} s wall: {:.0}x real time on {jobs} threads ({:.0}x per thread); {events} events",
            simulated_ms as f64 / 1000.0,
            wall_ms / 1000.0,
            simulated_ms as f64 / wall_ms.max(0.001),
            simulated_ms as f64 / wall_ms.max(0.001) / jobs as f64,
        );
        if let Some(max) = converged.iter().max() {
            let mean = converged.iter().sum::<u64>() / converged.len() as u64;
            say!("converged after faults stopped: mean {mean} ms, max {max} ms");
        }
    }
}

// ---- cluster ---------------------------------------------------------------------------------

impl ScenarioArgs for ClusterSimArgs {
    type Options = ClusterSimOptions;
    type Stats = ClusterStats;
    const NAME: &'static str = "cluster";
    const VALIDATE: fn(&ClusterSimOptions) -> Result<(), String> = ClusterSimOptions::validate;
    const RUN: fn(&ClusterSimOptions) -> SimReport<ClusterStats> = run_cluster;
    const CONVERGED_MS: fn(&ClusterStats) -> Option<u64> = |stats| stats.liveness_converged_ms;

    fn options(&self, seed: u64) -> Result<ClusterSimOptions, String> {
        let defaults = ClusterSimOptions::new(seed);
        Ok(ClusterSimOptions {
            brokers: self.brokers,
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            min_isr: self.min_isr,
            safety_ms: self.safety_ms.unwrap_or(defaults.safety_ms),
            liveness_ms: self.liveness_ms.unwrap_or(defaults.liveness_ms),
            controllers: self.controllers,
            controller_snapshot_entries: self.controller_snapshot_entries,
            metadata_on_data_disk: !self.separate_metadata_disk,
            mutation: self.mutation.map(ClusterMutationArg::mutation),
            broker_epoch_check: !self.no_broker_epoch_check,
            ..defaults
        })
    }

    fn seeded(options: &ClusterSimOptions, seed: u64, record_trace: bool) -> ClusterSimOptions {
        ClusterSimOptions { seed, record_trace, ..options.clone() }
    }

    fn describe(options: &ClusterSimOptions) -> String {
        let mut text = format!(
            "{} brokers ({} also controllers), {} partitions, RF {}, min ISR {}",
            options.brokers,
            options.controller_count(),
            options.partitions,
            options.replication_factor,
            options.min_isr
        );
        if let Some(m) = options.mutation {
            text.push_str(&format!(", mutation {m}"));
        }
        if !options.broker_epoch_check {
            text.push_str(", no broker-epoch check");
        }
        text
    }

    fn write_arguments(&self, command: &mut CommandLine) {
        let defaults = ClusterSimOptions::new(0);
        command.unless_default("brokers", self.brokers, defaults.brokers);
        command.unless_default("partitions", self.partitions, defaults.partitions);
        command.unless_default("replication-factor", self.replication_factor, defaults.replication_factor);
        command.unless_default("min-isr", self.min_isr, defaults.min_isr);
        command.phases(self.safety_ms, self.liveness_ms);
        command.option("controllers", self.controllers);
        command.flag("separate-metadata-disk", self.separate_metadata_disk);
        command.option("controller-snapshot-entries", self.controller_snapshot_entries);
        command.mutation(self.mutation);
        command.flag("no-broker-epoch-check", self.no_broker_epoch_check);
    }

    fn print_run(_: &ClusterSimOptions, report: &ClusterSimReport, wall_ms: f64) {
        let s = &report.stats;
        say!(
            "simulated {:.1} s in {:.3} s wall: {:.0}x real time",
            s.simulated_ms as f64 / 1000.0,
            wall_ms / 1000.0,
            s.simulated_ms as f64 / wall_ms.max(0.001)
        );
        say!(
            "events {}; messages {} sent, {} dropped, {} duplicated",
            s.events,
            s.messages_sent,
            s.messages_dropped,
            s.messages_duplicated
        );
        say!(
            "records {} produced, {} acknowledged, {} consumed, {} produce retries; {} producer ids, {} producer epoch bumps ({} values committed twice after one); {} leader changes, {} ISR changes, {} fences, {} truncations, {} tails cut by recovery",
            s.records_produced,
            s.records_acked,
            s.records_consumed,
            s.produce_retries,
            s.producer_ids,
            s.producer_epoch_bumps,
            s.epoch_bump_duplicates,
            s.leader_changes,
            s.isr_changes,
            s.fences,
            s.truncations,
            s.recovery_cuts
        );
        say!(
            "controllers: {} snapshots taken or installed, {} restarts from a snapshot",
            s.controller_snapshots,
            s.controller_restarts_from_snapshot
        );
        say!(
            "faults: {} lossy crashes and {} disk swaps ({} records lost from some log), {} clean restarts, {} whole-cluster restarts, {} power losses, {} partitions, {} slow disks, {} metadata stalls, {} min ISR changes; {} findings excused by the loss bound; {} consumer fetches answered with a lower high watermark",
            s.lossy_crashes,
            s.disk_swaps,
            s.records_lost_in_crashes,
            s.clean_restarts,
            s.cluster_restarts,
            s.power_losses,
            s.partitions,
            s.slow_disks,
            s.metadata_stalls,
            s.min_isr_changes,
            s.excused,
            s.consumer_high_watermark_regressions
        );
        say!(
            "retention: {} segments ({} records) deleted from some log, {} consumers reset to the log start and {} values committed twice after retention removed the first copy",
            s.segments_deleted_by_retention,
            s.records_deleted_by_retention,
            s.consumer_resets,
            s.retention_duplicates
        );
    }

    fn print_sweep(_: &ClusterSimOptions, reports: &[ClusterSimReport], jobs: usize, wall_ms: f64) {
        let simulated_ms: u64 = reports.iter().map(|r| r.stats.simulated_ms).sum();
        let acked: u64 = reports.iter().map(|r| r.stats.records_acked).sum();
        let crashes: u64 = reports.iter().map(|r| r.stats.lossy_crashes).sum();
        let deleted: u64 = reports.iter().map(|r| r.stats.records_deleted_by_retention).sum();
        let resets: u64 = reports.iter().map(|r| r.stats.consumer_resets).sum();
        let gaps: u64 = reports.iter().map(|r| r.stats.retention_duplicates).sum();
        say!(
            "simulated {:.1} s in {:.3} s wall: {:.0}x real time on {jobs} threads; {acked} records acknowledged, {crashes} lossy crashes, \
             {deleted} records deleted by retention from some log, {resets} consumer resets to the log start, \
             {gaps} values committed twice after retention removed the first copy (counted, see docs/simulator.md)",
            simulated_ms as f64 / 1000.0,
            wall_ms / 1000.0,
            simulated_ms as f64 / wall_ms.max(0.001),
        );
    }
}

// ---- gossip ----------------------------------------------------------------------------------

impl ScenarioArgs for GossipSimArgs {
    type Options = GossipSimOptions;
    type Stats = GossipStats;
    const NAME: &'static str = "gossip";
    const VALIDATE: fn(&GossipSimOptions) -> Result<(), String> = GossipSimOptions::validate;
    const RUN: fn(&GossipSimOptions) -> SimReport<GossipStats> = run_gossip;
    const CONVERGED_MS: fn(&GossipStats) -> Option<u64> = |stats| stats.liveness_converged_ms;

    fn options(&self, seed: u64) -> Result<GossipSimOptions, String> {
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(format!("--loss must lie between 0 and 1; got {}", self.loss));
        }
        let defaults = GossipSimOptions::new(seed);
        let mut faults = defaults.faults.clone();
        faults.message_loss_permille = (self.loss * 1000.0).round() as u64;
        faults.partitions = !self.no_partitions;
        faults.crashes = !self.no_crashes;
        Ok(GossipSimOptions {
            nodes: self.nodes,
            seed_nodes: defaults.seed_nodes.min(self.nodes),
            safety_ms: self.safety_ms.unwrap_or(defaults.safety_ms),
            liveness_ms: self.liveness_ms,
            anti_entropy_records: self.anti_entropy_records,
            faults,
            mutation: self.mutation.map(GossipMutationArg::mutation),
            ..defaults
        })
    }

    fn seeded(options: &GossipSimOptions, seed: u64, record_trace: bool) -> GossipSimOptions {
        GossipSimOptions { seed, record_trace, ..options.clone() }
    }

    fn describe(options: &GossipSimOptions) -> String {
        let f = &options.faults;
        let mut text = format!(
            "{} members, loss {:.1}%, probe every {} ms, suspicion {} ms, k {}, anti-entropy {}",
            options.nodes,
            f.message_loss_permille as f64 / 10.0,
            options.probe_interval_ms,
            options.suspicion_timeout_ms,
            options.indirect_probes,
            options.anti_entropy_records
        );
        if !f.crashes {
            text.push_str(", no crashes");
        }
        if !f.partitions {
            text.push_str(", no partitions");
        }
        if let Some(m) = options.mutation {
            text.push_str(&format!(", mutation {m:?}"));
        }
        text
    }

    fn write_arguments(&self, command: &mut CommandLine) {
        command.unless_default("nodes", self.nodes, 50);
        command.unless_default("loss", self.loss, 0.1);
        command.flag("no-partitions", self.no_partitions);
        command.flag("no-crashes", self.no_crashes);
        command.phases(self.safety_ms, self.liveness_ms);
        let anti_entropy_records_default = GossipSimOptions::new(0).anti_entropy_records;
        command.unless_default("anti-entropy-records", self.anti_entropy_records, anti_entropy_records_default);
        command.mutation(self.mutation);
    }

    fn print_run(options: &GossipSimOptions, report: &GossipSimReport, wall_ms: f64) {
        let s = &report.stats;
        say!(
            "simulated {:.1} s in {:.3} s wall: {:.0}x real time; {} events",
            s.simulated_ms as f64 / 1000.0,
            wall_ms / 1000.0,
            s.simulated_ms as f64 / wall_ms.max(0.001),
            s.events
        );
        say!(
            "faults: {} crashes ({} for good, {} restarts), {} partitions; {} disk writes, {} refutations",
            s.crashes,
            s.permanent_crashes,
            s.restarts,
            s.partitions,
            s.disk_writes,
            s.refutations
        );
        print_gossip_summary(std::slice::from_ref(report), options.nodes);
    }

    fn print_sweep(options: &GossipSimOptions, reports: &[GossipSimReport], jobs: usize, wall_ms: f64) {
        let simulated_ms: u64 = reports.iter().map(|r| r.stats.simulated_ms).sum();
        let converged: Vec<u64> = reports.iter().filter_map(|r| r.stats.liveness_converged_ms).collect();
        say!(
            "simulated {:.1} s of {} members in {:.3} s wall on {jobs} threads",
            simulated_ms as f64 / 1000.0,
            options.nodes,
            wall_ms / 1000.0,
        );
        if let Some(max) = converged.iter().max() {
            let mean = converged.iter().sum::<u64>() / converged.len() as u64;
            say!(
                "views converged after faults stopped: mean {mean} ms, max {max} ms (bound {} ms)",
                options.liveness_bound_ms()
            );
        }
        print_gossip_summary(reports, options.nodes);
    }
}

/// Detection times, false positives and traffic over a set of runs.
fn print_gossip_summary(reports: &[GossipSimReport], nodes: usize) {
    let mut everyone: Vec<u64> = Vec::new();
    let mut first_suspicion: Vec<u64> = Vec::new();
    let mut first_dead: Vec<u64> = Vec::new();
    let (mut interrupted, mut excused, mut false_positives, mut false_suspicions) = (0, 0, 0, 0);
    let (mut held_dead_ms, mut observed_ms, mut sent, mut bytes, mut dropped) = (0, 0, 0, 0, 0);
    let mut simulated_member_ms = 0;
    for report in reports {
        let s = &report.stats;
        everyone.extend(s.detections.iter().map(|d| d.everyone_ms));
        first_suspicion.extend(s.detections.iter().map(|d| d.first_suspicion_ms));
        first_dead.extend(s.detections.iter().map(|d| d.first_dead_ms));
        interrupted += s.detections_interrupted;
        excused += s.crashes_during_partitions;
        false_positives += s.false_positives;
        false_suspicions += s.false_suspicions;
        held_dead_ms += s.false_positive_node_ms;
        observed_ms += s.observed_node_ms;
        sent += s.messages_sent;
        bytes += s.bytes_sent;
        dropped += s.messages_dropped;
        simulated_member_ms += s.simulated_ms * nodes as u64;
    }
    let distribution = |name: &str, values: &mut Vec<u64>| {
        if values.is_empty() {
            say!("{name}: no crash was detected");
            return;
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        let mean = values.iter().sum::<u64>() as f64 / values.len() as f64;
        say!(
            "{name}: mean {:.0} ms, p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            mean,
            at(0.5),
            at(0.9),
            at(0.99),
            values[values.len() - 1]
        );
    };
    say!(
        "detections: {} crashes seen dead by every running member; {interrupted} restarted first, {excused} during \
         partitions (not counted)",
        everyone.len()
    );
    distribution("  detection time (crash to every running member holding it dead)", &mut everyone);
    distribution("  first suspicion", &mut first_suspicion);
    distribution("  first member holding it dead", &mut first_dead);
    let member_seconds = observed_ms as f64 / 1000.0;
    say!(
        "false positives (a running member declared dead, outside partitions): {false_positives}, {:.3} per 1000 \
         member-seconds; running members held dead by someone {:.3}% of {:.0} member-seconds",
        false_positives as f64 * 1000.0 / member_seconds.max(0.001),
        held_dead_ms as f64 * 100.0 / (observed_ms as f64).max(1.0),
        member_seconds
    );
    say!(
        "false suspicions (refuted or not): {false_suspicions}, {:.3} per 1000 member-seconds",
        false_suspicions as f64 * 1000.0 / member_seconds.max(0.001)
    );
    say!(
        "messages: {sent} sent ({:.2} per member-second, {} bytes each on average), {dropped} dropped",
        sent as f64 * 1000.0 / (simulated_member_ms as f64).max(1.0),
        bytes / sent.max(1)
    );
}

/// The seeds of a sweep: `start..start + count` on `jobs` threads (default: one per core).
struct SeedRange {
    start: u64,
    count: u64,
    jobs: Option<usize>,
    /// Stop handing out seeds after the first failure.
    fail_fast: bool,
}

/// What a sweep produced: the reports in seed order, the failed seeds, the threads used and
/// the wall time.
struct SweepRun<S> {
    reports: Vec<SimReport<S>>,
    failed: Vec<u64>,
    jobs: usize,
    wall_ms: f64,
}

/// Runs every seed of `range` with `run`, printing each failure with how to reproduce it,
/// after an opening line naming the `scenario` (`keel sim <scenario>`), the seeds, the run's
/// `description` and the threads.
fn run_sweep<S: Send>(
    range: SeedRange,
    scenario: &str,
    description: &str,
    run: impl Fn(u64) -> SimReport<S> + Sync,
    reproduce: impl Fn(u64) -> String + Sync,
) -> Result<SweepRun<S>, String> {
    let count = range.count;
    if count == 0 || count > SEEDS_MAX {
        return Err(format!("--seeds must lie between 1 and {SEEDS_MAX}"));
    }
    let end = range.start.checked_add(count).ok_or("--start + --seeds overflows a u64 seed")?;
    let jobs = range
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, 256)
        .min(count as usize);
    say!("keel sim {scenario}: seeds {}..{end} ({count} runs), {description}, on {jobs} threads", range.start);
    let started = wall_clock();
    let next = AtomicU64::new(range.start);
    let stop = AtomicBool::new(false);
    let results: Mutex<Vec<(u64, SimReport<S>, bool)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    return;
                }
                let report = run(seed);
                let failure = report.outcome.as_ref().err().map(|f| f.to_string());
                if let Some(failure) = &failure {
                    say!("seed {seed} FAILED {}", failure.lines().next().unwrap_or_default());
                    say!("  reproduce with: {}", reproduce(seed));
                    if range.fail_fast {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                // A poisoned lock means another sweep thread panicked; its report is lost
                // either way, so keep what the others produced.
                results.lock().unwrap_or_else(|e| e.into_inner()).push((seed, report, failure.is_some()));
            });
        }
    });
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(seed, _, _)| *seed);
    let failed = results.iter().filter(|(_, _, failed)| *failed).map(|(seed, _, _)| *seed).collect();
    let reports = results.into_iter().map(|(_, report, _)| report).collect();
    Ok(SweepRun { reports, failed, jobs, wall_ms })
}

/// The sweep's verdict: the failing seeds, and how to reproduce the first.
fn sweep_verdict(failed: &[u64], runs: usize, reproduce: impl Fn(u64) -> String) -> Result<(), String> {
    let Some(&first) = failed.first() else { return Ok(()) };
    let shown: Vec<String> = failed.iter().take(FAILURES_SHOWN).map(u64::to_string).collect();
    let more = if failed.len() > FAILURES_SHOWN { " ..." } else { "" };
    say!("failing seeds: {}{more}", shown.join(" "));
    Err(format!("{} of {runs} seeds failed; reproduce the first with: {}", failed.len(), reproduce(first)))
}

/// Prints a run's trace lines, buffered (a trace has tens of thousands), stopping quietly if
/// stdout goes away (as in `| head`).
fn print_trace(trace: &[String]) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in trace {
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    let _ = out.flush();
}
