//! The ISR model must be able to fail: without KIP-966's rules (keel-metadata's
//! `Mutation::NoElr`, Kafka's earlier behaviour) the checker finds the last replica standing
//! losing an acknowledged record, and the real rules pass the same configuration. Bugs planted
//! in the model's leader (ISR expansion rules) and controller (min ISR changes) are found too.
#![allow(clippy::print_stdout)] // counterexamples are printed for whoever runs the test with --nocapture

use keel_check::{check_isr, IsrModelOptions, Limits, ReplicationMutation, Report, Verdict};
use keel_metadata::Mutation;

fn run(options: IsrModelOptions) -> Report {
    check_isr(options, Limits { max_states: 5_000_000, ..Limits::default() }).expect("valid options")
}

fn run_safety(options: IsrModelOptions) -> Report {
    check_isr(options, Limits { max_states: 5_000_000, check_liveness: false, ..Limits::default() })
        .expect("valid options")
}

fn assert_all_hold(report: &Report) {
    assert!(report.safety.holds(), "{:?}", report.safety);
    assert_eq!(report.liveness.len(), 2);
    for (name, verdict) in &report.liveness {
        assert!(verdict.holds(), "{name}: {verdict:?}");
    }
}

/// The violation's message and its trace as printed.
fn safety_violation(report: &Report) -> (String, String) {
    match &report.safety {
        Verdict::Violated { message, trace } => {
            println!("{message}\n{trace}");
            (message.clone(), trace.to_string())
        }
        other => panic!("expected a safety violation, got {other:?} after {} states", report.states),
    }
}

#[test]
fn correct_rules_pass_the_default_configuration() {
    let report = run(IsrModelOptions::default());
    assert!(report.states > 10_000, "explored only {} states", report.states);
    assert_all_hold(&report);
}

#[test]
fn without_elr_the_last_replica_standing_loses_an_acknowledged_record() {
    let options = IsrModelOptions { mutation: Some(Mutation::NoElr), ..IsrModelOptions::default() };
    let mutant = run_safety(options.clone());
    let (message, trace) = safety_violation(&mutant);
    assert!(message.starts_with("acked record lost: n1 is in the ISR"), "{message}");
    // The scenario, in order: an acknowledgement, the ISR down to the leader, the leader's
    // crash, and its re-election after an unclean restart.
    let mut rest = trace.as_str();
    for step in ["acknowledged: [e0]", "n1 CRASHES", "fences n1", "n1 restarts and registers WITHOUT"] {
        let at = rest.find(step).unwrap_or_else(|| panic!("the trace lacks \"{step}\" in order:\n{trace}"));
        rest = &rest[at..];
    }
    assert!(rest.contains("partition: leader n1"), "n1 is not re-elected:\n{trace}");

    // The real rules survive the exact configuration, explored to the end.
    let correct = run(IsrModelOptions { mutation: None, ..options });
    assert!(correct.states > mutant.states, "{} states", correct.states);
    assert_all_hold(&correct);
}

#[test]
fn elr_keeps_acknowledged_records_through_a_crash_of_every_replica() {
    // Safety does not need the crash budget: a replica that lost its tail is never leader, ISR
    // or ELR again before catching up, so when every copy is lost the partition stays
    // leaderless instead of electing a replica without the record.
    let report = run(IsrModelOptions { lossy_crashes: 3, records: 1, ..IsrModelOptions::default() });
    assert_all_hold(&report);
}

#[test]
fn unclean_leader_election_loses_acknowledged_records() {
    // The property can fail for the real rules too, when the topic allows it.
    let options = IsrModelOptions { unclean_leader_election: true, records: 1, ..IsrModelOptions::default() };
    let (message, _) = safety_violation(&run_safety(options));
    assert!(message.starts_with("acked record lost"), "{message}");
}

#[test]
fn expanding_the_isr_below_the_epoch_start_offset_loses_an_acknowledged_record() {
    // A new leader's high watermark may be stale (here 0): a follower that reached it may
    // still lack records the old leader acknowledged.
    let options = IsrModelOptions {
        replication_mutation: Some(ReplicationMutation::ExpandBelowEpochStart),
        ..IsrModelOptions::default()
    };
    let mutant = run_safety(options.clone());
    let (message, trace) = safety_violation(&mutant);
    assert!(message.starts_with("acked record lost"), "{message}");
    assert!(trace.contains("expands the ISR"), "{trace}");
    assert_all_hold(&run(IsrModelOptions { replication_mutation: None, ..options }));
}

#[test]
fn trusting_a_follower_across_its_restart_loses_an_acknowledged_record() {
    let options = IsrModelOptions {
        replication_mutation: Some(ReplicationMutation::KeepFollowerStateOnRestart),
        ..IsrModelOptions::default()
    };
    let mutant = run_safety(options.clone());
    let (message, trace) = safety_violation(&mutant);
    assert!(message.starts_with("acked record lost"), "{message}");
    assert!(trace.contains("CRASHES") && trace.contains("expands the ISR"), "{trace}");
    assert_all_hold(&run(IsrModelOptions { replication_mutation: None, ..options }));
}

#[test]
fn ignoring_a_min_isr_change_keeps_a_stale_elr() {
    let options = IsrModelOptions {
        min_isr_changes: true,
        records: 1,
        replication_mutation: Some(ReplicationMutation::IgnoreMinIsrChange),
        ..IsrModelOptions::default()
    };
    let (message, trace) = safety_violation(&run_safety(options));
    assert!(message.contains("kept while the ISR"), "{message}");
    // Found at the change itself: lowering min ISR to what the ISR holds must clear the ELR.
    let last = trace.lines().rev().find(|line| line.starts_with(char::is_whitespace) && line.contains(". "));
    assert!(last.is_some_and(|line| line.contains("sets min.insync.replicas to 1")), "{trace}");
}

/// This configuration found the bug fixed in keel-metadata's `elect()`: a leader elected from
/// the ELR whose one-member ISR meets a lowered min ISR must clear the ELR.
#[test]
fn min_isr_changes_keep_every_acknowledged_record() {
    let options = IsrModelOptions { min_isr_changes: true, records: 1, ..IsrModelOptions::default() };
    let report = run(options);
    if let Verdict::Violated { message, trace } = &report.safety {
        println!("{message}\n{trace}");
    }
    assert_all_hold(&report);
}
