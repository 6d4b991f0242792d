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

/// One link cut for good (both ends keep running and talk to the third member).
fn cut_link(indirect_probes: usize) -> GossipModelOptions {
    GossipModelOptions { pauses: 0, crashes: 0, restarts: 0, cuts: 1, indirect_probes, ..GossipModelOptions::default() }
}

#[test]
fn correct_core_masks_a_cut_link_with_indirect_probes() {
    let report = run(cut_link(1));
    assert_all_hold(&report);
    assert!(report.states > 1_000, "explored only {} states", report.states);
}

/// Without indirect probes a cut link is a partition between its two ends: each holds the
/// other Dead for good, which the checker must report (reality says both run).
#[test]
fn without_indirect_probes_a_cut_link_keeps_its_ends_dead_to_each_other() {
    let trace = liveness_counterexample(&run(cut_link(0)));
    assert!(trace.contains("CUT for good"), "{trace}");
    assert!(trace.contains("dead@"), "{trace}");
}

/// Blind merge's endless contest. With the record-regression safety check off (it would report
/// the first stale overwrite), the liveness check finds the cycle: a member restarts at a new
/// incarnation, and the two others keep handing each other a stale record of it (anti-entropy
/// resends every record), each overwriting what the other just heard from the member itself.
#[test]
fn blind_merge_contests_a_restarted_member_forever() {
    let report = run(GossipModelOptions {
        mutation: Some(Mutation::BlindMerge),
        check_record_regression: false,
        ..crash_and_restart()
    });
    let trace = liveness_counterexample(&report);
    assert!(trace.contains("RESTARTS"), "{trace}");
}

/// The correct core in the same configuration, with the same check off, converges: its merge
/// is a join (a strict total order on records), so the order news arrives in cannot matter.
#[test]
fn correct_core_converges_whatever_order_news_arrives_in() {
    let report = run(GossipModelOptions { check_record_regression: false, ..crash_and_restart() });
    assert_all_hold(&report);
}
