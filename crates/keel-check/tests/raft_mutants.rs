//! The checker must be able to fail: each planted bug in keel-raft is found, and the correct
//! core passes the same configuration.
#![allow(clippy::print_stdout)] // counterexamples are printed for whoever runs the test with --nocapture

use keel_check::{explore, Limits, RaftModel, RaftModelOptions, Report, Verdict};
use keel_raft::{Durable, Entry, HardState, Mutation, Payload, Term};
use keel_types::NodeId;

fn run(options: RaftModelOptions) -> Report {
    let model = RaftModel::new(options).expect("valid model");
    explore(&model, Limits { max_states: 3_000_000, ..Limits::default() })
}

/// Safety only: a violation is found breadth first, long before the whole space is explored.
fn run_safety(options: RaftModelOptions) -> Report {
    let model = RaftModel::new(options).expect("valid model");
    explore(&model, Limits { max_states: 3_000_000, check_liveness: false, ..Limits::default() })
}

fn quiet() -> RaftModelOptions {
    RaftModelOptions { proposals: 0, losses: 0, duplications: 0, delays: 0, crashes: 0, ..RaftModelOptions::default() }
}

fn safety_violation(report: &Report) -> String {
    match &report.safety {
        Verdict::Violated { message, trace } => {
            println!("{message}\n{trace}");
            message.clone()
        }
        other => panic!("expected a safety violation, got {other:?} after {} states", report.states),
    }
}

fn assert_all_hold(report: &Report) {
    assert!(report.safety.holds(), "{:?}", report.safety);
    assert_eq!(report.liveness.len(), 2);
    for (name, verdict) in &report.liveness {
        assert!(verdict.holds(), "{name}: {verdict:?}");
    }
}

#[test]
fn correct_core_passes_with_a_proposal_and_a_lost_message() {
    let report = run(RaftModelOptions { proposals: 1, ..quiet() });
    assert!(report.states > 10_000, "explored only {} states", report.states);
    assert_all_hold(&report);
}

#[test]
fn two_leaders_in_one_term_when_the_election_quorum_is_not_a_majority() {
    // R + E <= N with E = 1: every node that times out elects itself.
    let options = RaftModelOptions {
        replication_quorum: Some(2),
        election_quorum: Some(1),
        boot_ticks: vec![0, 0, 0],
        mutation: Some(Mutation::UnsafeQuorums),
        ..quiet()
    };
    assert!(
        RaftModel::new(RaftModelOptions { mutation: None, ..options.clone() }).is_err(),
        "validate() must refuse it"
    );
    let message = safety_violation(&run(options));
    assert!(message.contains("two leaders in term"), "{message}");
}

#[test]
fn lost_commit_when_replication_and_election_quorums_do_not_intersect() {
    // R = 1, E = 2 of 3: R + E = N. A leader commits alone; two others can elect a leader
    // without the entry.
    let options = RaftModelOptions {
        replication_quorum: Some(1),
        election_quorum: Some(2),
        proposals: 1,
        losses: 2,
        crashes: 1,
        crash_leaders_only: true,
        mutation: Some(Mutation::UnsafeQuorums),
        ..quiet()
    };
    let message = safety_violation(&run_safety(options));
    assert!(message.contains("leader completeness") || message.contains("committed entry"), "{message}");
}

#[test]
fn forgetting_the_vote_on_restart_elects_two_leaders() {
    let options = RaftModelOptions {
        boot_ticks: vec![0, 0, 1],
        crashes: 1,
        mutation: Some(Mutation::ForgetVoteOnRestart),
        ..quiet()
    };
    let mutant = run_safety(options.clone());
    let message = safety_violation(&mutant);
    assert!(message.contains("two leaders in term"), "{message}");
    assert_correct_core_survives(options, mutant.states);
}

#[test]
fn trusting_a_replaced_disk_loses_a_committed_entry() {
    // The first leader's no-op commits with the help of a voter whose disk is then replaced;
    // trusting its empty state, it helps elect the voter that lacks the no-op. (CI checks the
    // correct core in this configuration exhaustively, liveness included.)
    let options = RaftModelOptions {
        losses: 1,
        wipes: 1,
        max_term: 2,
        max_in_flight: 4,
        mutation: Some(Mutation::TrustLostState),
        ..quiet()
    };
    let mutant = run_safety(options.clone());
    let message = safety_violation(&mutant);
    assert!(message.contains("leader completeness") || message.contains("committed entry"), "{message}");
    assert_correct_core_survives(options, mutant.states);
}

#[test]
fn fixed_election_timeouts_livelock_and_random_ones_do_not() {
    // Two voters booting together with identical timeouts split the vote forever.
    let options = RaftModelOptions {
        nodes: 2,
        boot_ticks: vec![0, 0],
        mutation: Some(Mutation::FixedElectionTimeout),
        ..quiet()
    };
    let report = run(options.clone());
    assert!(report.safety.holds());
    let (name, verdict) = &report.liveness[0];
    match verdict {
        Verdict::Violated { trace, .. } => {
            println!("{name}\n{trace}");
            assert!(trace.cycle_from.is_some());
        }
        other => panic!("the liveness check missed the livelock: {other:?}"),
    }
    let report = run(RaftModelOptions { mutation: None, ..options });
    assert_all_hold(&report);
}

/// Raft's figure 8 with three nodes, starting from the history the figure begins with:
/// n1 led term 2 and wrote x at index 2 alone; n3 led term 3 (elected by n3 and n1 or n2) and
/// wrote y at index 2 alone. Now n1 can win term 4 with n2's vote and copy x to n2.
fn figure_8_disks() -> Vec<Durable> {
    let noop = Entry { index: 1, term: Term(1), payload: Payload::Noop };
    let x = Entry { index: 2, term: Term(2), payload: Payload::Command(b"x".to_vec()) };
    let y = Entry { index: 2, term: Term(3), payload: Payload::Command(b"y".to_vec()) };
    let disk = |term: u64, vote: i32, entries: Vec<Entry>| Durable {
        hard_state: HardState { term: Term(term), voted_for: Some(NodeId(vote)) },
        snapshot: None,
        entries,
        recovery: Default::default(),
    };
    vec![disk(3, 3, vec![noop.clone(), x]), disk(3, 3, vec![noop.clone()]), disk(3, 3, vec![noop, y])]
}

#[test]
fn committing_an_older_term_entry_by_counting_replicas_loses_it() {
    let options = RaftModelOptions {
        disks: figure_8_disks(),
        max_term: 5,
        losses: 1,
        crashes: 1,
        crash_leaders_only: true,
        mutation: Some(Mutation::CommitOlderTermByCount),
        ..quiet()
    };
    let mutant = run_safety(options.clone());
    let message = safety_violation(&mutant);
    assert!(message.contains("committed entry") || message.contains("leader completeness"), "{message}");
    assert_correct_core_survives(options, mutant.states);
}

/// The same configuration without the mutation shows no violation in twice the states the
/// mutant needed to fail (the whole space is too large for a test).
fn assert_correct_core_survives(options: RaftModelOptions, mutant_states: usize) {
    let model = RaftModel::new(RaftModelOptions { mutation: None, ..options }).expect("valid model");
    let report = explore(&model, Limits { max_states: 2 * mutant_states, check_liveness: false, ..Limits::default() });
    assert!(!matches!(report.safety, Verdict::Violated { .. }), "{:?}", report.safety);
}
