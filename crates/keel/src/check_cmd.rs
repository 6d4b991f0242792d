//! `keel check`: run the model checker on the real protocol cores.

use keel_check::{
    check_gossip as explore_gossip, check_isr as explore_isr, check_raft as explore_raft, GossipModelOptions,
    IsrModelOptions, Limits, RaftModelOptions, Report, Verdict,
};
use keel_raft::Mutation;

#[derive(Debug, clap::Subcommand)]
pub enum CheckCommand {
    /// Explore every interleaving of a small Raft cluster (keel-raft's real code).
    Raft(RaftCheckArgs),
    /// Explore one partition's replication: keel-replication's real replica engine (leader and
    /// follower cores) under the controller's ISR/ELR rules (keel-metadata's real code), with
    /// brokers that crash and lose their unflushed tail. See docs/replication.md.
    Isr(IsrCheckArgs),
    /// Explore SWIM membership (keel-gossip's real code) on a small cluster with false
    /// accusations (pauses), crashes and restarts: no node holds itself dead, incarnations never
    /// decrease, and every view comes to match reality. See docs/gossip.md.
    Gossip(GossipCheckArgs),
}

#[derive(Debug, clap::Args)]
pub struct GossipCheckArgs {
    /// Members (all join through n1).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// False accusations: a member pauses (answers nothing) and resumes later, perhaps after it
    /// was declared dead.
    #[arg(long, default_value_t = 1)]
    pauses: u8,
    /// Crashes (the member stays down unless restarted).
    #[arg(long, default_value_t = 0)]
    crashes: u8,
    /// Restarts of crashed or departed members, from their durable incarnation.
    #[arg(long, default_value_t = 0)]
    restarts: u8,
    /// Messages the network may lose.
    #[arg(long, default_value_t = 0)]
    losses: u8,
    /// Graceful leaves.
    #[arg(long, default_value_t = 0)]
    leaves: u8,
    /// Links cut for good (both ends keep running; nothing passes between them).
    #[arg(long, default_value_t = 0)]
    cuts: u8,
    /// SWIM's k: members asked to probe an unresponsive member indirectly.
    #[arg(long, default_value_t = 1)]
    indirect_probes: usize,
    /// Records every message carries from the whole view in turn (anti-entropy); 0 turns it off.
    #[arg(long, default_value_t = 1)]
    anti_entropy_records: usize,
    /// Treat the probe order and the choice of relays as chance (the liveness check then
    /// accepts a contest that ends with probability 1); by default the scheduler picks them.
    #[arg(long)]
    random_probe_order: bool,
    /// Do not check that a record of a member never goes back to a lower incarnation (to see
    /// whether a mutant also fails liveness, which that safety check would otherwise preempt).
    #[arg(long)]
    no_record_regression_check: bool,
    /// States with more messages in flight are cut off.
    #[arg(long, default_value_t = 6)]
    max_in_flight: usize,
    /// Start from boot (every interleaving of the joins) rather than from a formed cluster.
    #[arg(long)]
    from_boot: bool,
    /// Plant a bug the checker must find: blind-merge or dead-always-wins.
    #[arg(long)]
    mutation: Option<String>,
    /// Give up (verdict unknown) after this many states.
    #[arg(long, default_value_t = 20_000_000)]
    max_states: usize,
    /// Safety only.
    #[arg(long)]
    no_liveness: bool,
}

#[derive(Debug, clap::Args)]
pub struct IsrCheckArgs {
    /// Replication factor.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// The topic's min.insync.replicas.
    #[arg(long, default_value_t = 2)]
    min_isr: usize,
    /// Longest log explored (a leader appends while its log end offset is below this).
    #[arg(long, default_value_t = 2)]
    records: usize,
    /// Crashes that lose what the broker had not flushed (default: min ISR - 1, the number the
    /// durability claim is made for).
    #[arg(long)]
    lossy_crashes: Option<u8>,
    /// Controlled shutdowns (flush, leave leadership and the ISR, stop with the clean-shutdown
    /// marker); a stopped broker may restart.
    #[arg(long, default_value_t = 1)]
    clean_shutdowns: u8,
    /// Allow unclean leader election (acknowledged records may then be lost).
    #[arg(long)]
    unclean_leader_election: bool,
    /// Let an operator change min.insync.replicas (to any value from 1 to --replicas) at any time.
    #[arg(long)]
    min_isr_changes: bool,
    /// The controller handles an AlterPartition in the step the leader proposes it (nothing
    /// happens while it is in flight): several times fewer states, for bigger configurations.
    #[arg(long)]
    alter_partition_at_once: bool,
    /// Plant a bug the checker must find (repeat the flag to plant several, one per layer):
    /// in keel-replication's leader expand-below-epoch-start, keep-follower-state,
    /// no-divergence-check or ignore-min-isr; in keel-metadata's partition rules and controller
    /// no-elr (Kafka before KIP-966), ignore-min-isr-change (with --min-isr-changes) or
    /// no-broker-epoch-check.
    #[arg(long)]
    mutation: Vec<String>,
    /// Give up (verdict unknown) after this many states.
    #[arg(long, default_value_t = 20_000_000)]
    max_states: usize,
    /// Safety only.
    #[arg(long)]
    no_liveness: bool,
}

#[derive(Debug, clap::Args)]
pub struct RaftCheckArgs {
    /// Voters.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Replication quorum R (default: majority).
    #[arg(long)]
    replication_quorum: Option<usize>,
    /// Election quorum E (default: majority).
    #[arg(long)]
    election_quorum: Option<usize>,
    /// Largest spread of terms in one state (terms are relabelled so the lowest is 1).
    #[arg(long, default_value_t = 3)]
    max_term: u64,
    /// Client proposals.
    #[arg(long, default_value_t = 1)]
    proposals: u8,
    /// Messages the network may lose.
    #[arg(long, default_value_t = 1)]
    losses: u8,
    /// Messages the network may duplicate.
    #[arg(long, default_value_t = 0)]
    duplications: u8,
    /// Messages the network may hold back past ticks (arbitrarily late delivery).
    #[arg(long, default_value_t = 0)]
    delays: u8,
    /// Node crashes (each followed by a restart from disk). Each one multiplies the state space
    /// many times over; see docs/benchmarks.md.
    #[arg(long, default_value_t = 0)]
    crashes: u8,
    /// Only leaders crash.
    #[arg(long)]
    crash_leaders_only: bool,
    /// Disk replacements: a node restarts with its Raft state gone and must recover it from
    /// the other voters before it votes again (docs/raft.md).
    #[arg(long, default_value_t = 0)]
    wipes: u8,
    /// States with more messages in flight are cut off.
    #[arg(long, default_value_t = 8)]
    max_in_flight: usize,
    /// When each node boots, in ticks: "staggered" (0,1,2,...), "together", or a list like 0,0,1.
    #[arg(long, default_value = "staggered")]
    boot: String,
    /// Plant a bug the checker must find: unsafe-quorums, commit-older-term, forget-vote,
    /// trust-lost-state (with --wipes), fixed-timeout.
    #[arg(long)]
    mutation: Option<String>,
    /// Give up (verdict unknown) after this many states.
    #[arg(long, default_value_t = 20_000_000)]
    max_states: usize,
    /// Safety only.
    #[arg(long)]
    no_liveness: bool,
}

pub fn check(command: CheckCommand) -> Result<(), String> {
    match command {
        CheckCommand::Raft(args) => check_raft(args),
        CheckCommand::Isr(args) => check_isr(args),
        CheckCommand::Gossip(args) => check_gossip(args),
    }
}

fn parse_mutation(name: &str) -> Result<Mutation, String> {
    match name {
        "unsafe-quorums" => Ok(Mutation::UnsafeQuorums),
        "commit-older-term" => Ok(Mutation::CommitOlderTermByCount),
        "forget-vote" => Ok(Mutation::ForgetVoteOnRestart),
        "trust-lost-state" => Ok(Mutation::TrustLostState),
        "fixed-timeout" => Ok(Mutation::FixedElectionTimeout),
        other => Err(format!(
            "unknown mutation \"{other}\"; use unsafe-quorums, commit-older-term, forget-vote, trust-lost-state or fixed-timeout"
        )),
    }
}

fn parse_boot(boot: &str, nodes: usize) -> Result<Vec<u64>, String> {
    match boot {
        "staggered" => Ok(Vec::new()),
        "together" => Ok(vec![0; nodes]),
        list => {
            let ticks: Result<Vec<u64>, _> = list.split(',').map(|t| t.trim().parse::<u64>()).collect();
            match ticks {
                Ok(ticks) if ticks.len() == nodes => Ok(ticks),
                _ => Err(format!(
                    "--boot takes \"staggered\", \"together\" or {nodes} comma-separated ticks, not \"{list}\""
                )),
            }
        }
    }
}

fn check_raft(args: RaftCheckArgs) -> Result<(), String> {
    let mutation = args.mutation.as_deref().map(parse_mutation).transpose()?;
    if args.nodes == 0 || args.nodes > 5 {
        return Err("--nodes must be between 1 and 5 (the state space grows fast)".into());
    }
    let options = RaftModelOptions {
        nodes: args.nodes,
        replication_quorum: args.replication_quorum,
        election_quorum: args.election_quorum,
        max_term: args.max_term,
        proposals: args.proposals,
        losses: args.losses,
        duplications: args.duplications,
        delays: args.delays,
        crashes: args.crashes,
        crash_leaders_only: args.crash_leaders_only,
        wipes: args.wipes,
        max_in_flight: args.max_in_flight,
        boot_ticks: parse_boot(&args.boot, args.nodes)?,
        mutation,
        ..RaftModelOptions::default()
    };
    println!("checking keel-raft: {options:?}");
    run_check(args.max_states, args.no_liveness, |limits| explore_raft(options, limits))
}

fn check_isr(args: IsrCheckArgs) -> Result<(), String> {
    let mut options = IsrModelOptions {
        replicas: args.replicas,
        min_isr: args.min_isr,
        records: args.records,
        lossy_crashes: args.lossy_crashes.unwrap_or(args.min_isr.saturating_sub(1) as u8),
        clean_shutdowns: args.clean_shutdowns,
        unclean_leader_election: args.unclean_leader_election,
        min_isr_changes: args.min_isr_changes,
        alter_partition_at_once: args.alter_partition_at_once,
        ..IsrModelOptions::default()
    };
    for name in &args.mutation {
        plant_isr_mutation(&mut options, name)?;
    }
    println!("checking keel-replication's replica engine under keel-metadata's partition rules: {options:?}");
    run_check(args.max_states, args.no_liveness, |limits| explore_isr(options, limits))
}

/// Plants the mutation `name` names, in its layer (keel-replication's leader, or keel-metadata's
/// partition rules and the controller around them); one per layer.
fn plant_isr_mutation(options: &mut IsrModelOptions, name: &str) -> Result<(), String> {
    use keel_check::ReplicationMutation as Replication;
    use keel_metadata::Mutation as Metadata;
    let replication = |m: Replication| (Some(m), None);
    let metadata = |m: Metadata| (None, Some(m));
    let (replication, metadata) = match name {
        "expand-below-epoch-start" => replication(Replication::ExpandBelowEpochStart),
        "keep-follower-state" => replication(Replication::KeepFollowerStateOnRestart),
        "no-divergence-check" => replication(Replication::NoDivergenceCheck),
        "ignore-min-isr" => replication(Replication::IgnoreMinIsr),
        "no-elr" => metadata(Metadata::NoElr),
        "ignore-min-isr-change" => metadata(Metadata::IgnoreMinIsrChange),
        "no-broker-epoch-check" => metadata(Metadata::NoBrokerEpochCheck),
        other => {
            return Err(format!(
                "unknown mutation \"{other}\"; use expand-below-epoch-start, keep-follower-state, \
                 no-divergence-check, ignore-min-isr, no-elr, ignore-min-isr-change or no-broker-epoch-check"
            ))
        }
    };
    let taken = (replication.is_some() && options.replication_mutation.is_some())
        || (metadata.is_some() && options.metadata_mutation.is_some());
    if taken {
        return Err(format!("--mutation {name}: that layer already has a planted bug; plant one per layer"));
    }
    options.replication_mutation = options.replication_mutation.or(replication);
    options.metadata_mutation = options.metadata_mutation.or(metadata);
    Ok(())
}

fn check_gossip(args: GossipCheckArgs) -> Result<(), String> {
    let mutation = match args.mutation.as_deref() {
        None => None,
        Some("blind-merge") => Some(keel_gossip::Mutation::BlindMerge),
        Some("dead-always-wins") => Some(keel_gossip::Mutation::DeadAlwaysWins),
        Some(other) => return Err(format!("unknown mutation \"{other}\"; use blind-merge or dead-always-wins")),
    };
    let options = GossipModelOptions {
        nodes: args.nodes,
        pauses: args.pauses,
        crashes: args.crashes,
        restarts: args.restarts,
        losses: args.losses,
        leaves: args.leaves,
        cuts: args.cuts,
        indirect_probes: args.indirect_probes,
        anti_entropy_records: args.anti_entropy_records,
        scheduler_orders_probes: !args.random_probe_order,
        check_record_regression: !args.no_record_regression_check,
        max_in_flight: args.max_in_flight,
        formed: !args.from_boot,
        mutation,
        ..GossipModelOptions::default()
    };
    println!("checking keel-gossip: {options:?}");
    run_check(args.max_states, args.no_liveness, |limits| explore_gossip(options, limits))
}

/// Explores within the limits the flags give, prints the report and the time it took, and
/// fails if anything was violated.
#[allow(clippy::disallowed_methods)] // the CLI times the run; the checker itself never reads a clock
fn run_check<E: std::fmt::Display>(
    max_states: usize,
    no_liveness: bool,
    explore: impl FnOnce(Limits) -> Result<Report, E>,
) -> Result<(), String> {
    let limits = Limits { max_states, check_liveness: !no_liveness, ..Limits::default() };
    let started = std::time::Instant::now();
    let report = explore(limits).map_err(|e| format!("invalid configuration: {e}"))?;
    print_report(&report, started.elapsed());
    verdict(&report)
}

fn verdict(report: &Report) -> Result<(), String> {
    let failed = !report.safety.holds() || report.liveness.iter().any(|(_, v)| !v.holds());
    if failed {
        Err("the model checker found a violation (or stopped at a limit); see above".into())
    } else {
        Ok(())
    }
}

fn print_report(report: &Report, elapsed: std::time::Duration) {
    let seconds = elapsed.as_secs_f64();
    println!(
        "explored {} states, {} transitions, depth {}, {} states with steps beyond the bounds, in {:.1} s ({:.0} states/s)",
        report.states,
        report.transitions,
        report.depth,
        report.cut_off,
        seconds,
        report.states as f64 / seconds.max(1e-9)
    );
    print_verdict("safety (all invariants on every state)", &report.safety);
    for (name, verdict) in &report.liveness {
        print_verdict(&format!("liveness: {name}"), verdict);
    }
}

fn print_verdict(name: &str, verdict: &Verdict) {
    match verdict {
        Verdict::Holds => println!("{name}: holds"),
        Verdict::Unknown(why) => println!("{name}: UNKNOWN ({why})"),
        Verdict::Violated { message, trace } => {
            println!("{name}: VIOLATED: {message}");
            println!("shortest trace ({} steps):", trace.steps.len());
            print!("{trace}");
        }
    }
}
