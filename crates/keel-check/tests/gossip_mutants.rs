//! The membership checker must be able to fail: each planted bug in keel-gossip is caught with
//! its counterexample printed, and the correct core passes the same configurations.
#![allow(clippy::print_stdout)] // counterexamples are printed for whoever runs the test with --nocapture

use keel_check::{check_gossip, GossipModelOptions, Limits, Report, Verdict};
use keel_gossip::Mutation;

fn run(options: GossipModelOptions) -> Report {
    let report = check_gossip(options, Limits { max_states: 3_000_000, ..Limits::default() }).expect("valid model");
    println!(
        "{} states, {} transitions, depth {}, {} cut off",
        report.states, report.transitions, report.depth, report.cut_off
    );
    report
}

/// A false accusation: a node pauses (answers nothing) long enough to be declared dead.
fn false_accusation() -> GossipModelOptions {
    GossipModelOptions { pauses: 1, crashes: 0, restarts: 0, ..GossipModelOptions::default() }
}

fn crash_and_restart() -> GossipModelOptions {
    GossipModelOptions { pauses: 0, crashes: 1, restarts: 1, ..GossipModelOptions::default() }
}

fn assert_all_hold(report: &Report) {
    assert!(report.safety.holds(), "{:?}", report.safety);
    assert_eq!(report.liveness.len(), 1);
    for (name, verdict) in &report.liveness {
        assert!(verdict.holds(), "{name}: {verdict:?}");
    }
}

fn liveness_counterexample(report: &Report) -> String {
    assert!(report.safety.holds(), "expected safety to hold: {:?}", report.safety);
    let (name, verdict) = &report.liveness[0];
    match verdict {
        Verdict::Violated { message, trace } => {
            println!("{name}: {message}\n{trace}");
            assert!(trace.cycle_from.is_some(), "a liveness counterexample ends in a cycle");
            trace.to_string()
        }
        other => panic!("the liveness check missed the mutant: {other:?}"),
    }
}

#[test]
fn correct_core_converges_after_a_false_accusation() {
    let report = run(false_accusation());
    assert_all_hold(&report);
    assert!(report.states > 100_000, "explored only {} states", report.states);
}

#[test]
fn correct_core_converges_after_a_crash_and_a_restart() {
    let report = run(crash_and_restart());
    assert_all_hold(&report);
    assert!(report.states > 10_000, "explored only {} states", report.states);
}

#[test]
fn blind_merge_lets_stale_news_overwrite_a_restarted_member() {
    let report = run(GossipModelOptions { mutation: Some(Mutation::BlindMerge), ..crash_and_restart() });
    match &report.safety {
        Verdict::Violated { message, trace } => {
            println!("{message}\n{trace}");
            assert!(message.contains("incarnations never decrease"), "{message}");
            assert!(trace.to_string().contains("RESTARTS"), "{trace}");
        }
        other => panic!("the checker missed the blind merge: {other:?}"),
    }
}

#[test]
fn dead_always_wins_keeps_a_falsely_accused_node_dead() {
    let report = run(GossipModelOptions { mutation: Some(Mutation::DeadAlwaysWins), ..false_accusation() });
    let trace = liveness_counterexample(&report);
    assert!(trace.contains("PAUSES"), "{trace}");
}
