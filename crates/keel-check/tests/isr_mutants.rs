//! The ISR model runs keel-replication's real replica engine under keel-metadata's real
//! partition rules, and it must be able to fail: every planted bug in keel-replication's leader
//! (`keel_replication::Mutation`) and in keel-metadata's rules and controller
//! (`keel_metadata::Mutation`) is found, and the real code passes the same configuration.
#![allow(clippy::print_stdout)] // counterexamples are printed for whoever runs the test with --nocapture

use keel_check::{check_isr, IsrModelOptions, Limits, ReplicationMutation, Report, Verdict};
use keel_metadata::Mutation;

const ISR_COMPLETE: &str = "every running replica is in the ISR of a running leader";

fn run(options: IsrModelOptions) -> Report {
    check_isr(options, Limits { max_states: 6_000_000, ..Limits::default() }).expect("valid options")
}

fn run_safety(options: IsrModelOptions) -> Report {
    check_isr(options, Limits { max_states: 6_000_000, check_liveness: false, ..Limits::default() })
        .expect("valid options")
}

fn assert_all_hold(report: &Report) {
    if let Verdict::Violated { message, trace } = &report.safety {
        println!("{message}\n{trace}");
    }
    assert!(report.safety.holds(), "{:?}", report.safety);
    assert_eq!(report.liveness.len(), 3);
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

/// Asserts the trace has these steps, in this order.
fn assert_steps_in_order(trace: &str, steps: &[&str]) {
    let mut rest = trace;
    for step in steps {
        let at = rest.find(step).unwrap_or_else(|| panic!("the trace lacks \"{step}\" in order:\n{trace}"));
        rest = &rest[at..];
    }
}

#[test]
fn correct_code_passes_the_default_configuration() {
    let report = run(IsrModelOptions::default());
    assert!(report.states > 1_000_000, "explored only {} states", report.states);
    assert_all_hold(&report);
}

/// How `keel check isr` (default options unless said) catches a planted bug in keel-replication's
/// leader, or `None` for one the model cannot show. The match has no wildcard: a new `Mutation`
/// does not compile until it is listed here.
fn expected_failure(mutation: ReplicationMutation) -> Option<(IsrModelOptions, Expect)> {
    let options = IsrModelOptions { replication_mutation: Some(mutation), ..IsrModelOptions::default() };
    Some(match mutation {
        // A new leader's high watermark may be stale: a follower that reached it may still
        // lack records the old leader acknowledged.
        ReplicationMutation::ExpandBelowEpochStart => (options, Expect::Safety("acked record lost")),
        // The leader never learns which process fetched, so every ISR addition vouches for
        // broker epoch -1 and the controller refuses it (INELIGIBLE_REPLICA) for good.
        ReplicationMutation::KeepFollowerStateOnRestart => (options, Expect::Liveness(ISR_COMPLETE)),
        // A follower keeps a tail from an older epoch, and counts as holding the new leader's
        // records at those offsets.
        ReplicationMutation::NoDivergenceCheck => (options, Expect::Safety("acked record lost")),
        // The high watermark advances with the ISR below min ISR, past what the ELR holds.
        ReplicationMutation::IgnoreMinIsr => (options, Expect::Safety("acked record lost: n2 is in the ELR")),
        // The model has no retention: every log starts at offset 0, so no follower's records
        // lie below a leader's log start. keel-replication's unit test
        // `a_follower_whose_records_all_lie_below_the_leaders_log_start_starts_over_there` and
        // keel-sim's pinned seed 31824530 catch it.
        ReplicationMutation::TrustBelowLogStart => return None,
    })
}

#[derive(Debug)]
enum Expect {
    Safety(&'static str),
    Liveness(&'static str),
}

const REPLICATION_MUTATIONS: [ReplicationMutation; 4] = [
    ReplicationMutation::ExpandBelowEpochStart,
    ReplicationMutation::KeepFollowerStateOnRestart,
    ReplicationMutation::NoDivergenceCheck,
    ReplicationMutation::IgnoreMinIsr,
];

#[test]
fn a_mutation_below_the_log_start_is_left_to_the_simulator() {
    assert!(expected_failure(ReplicationMutation::TrustBelowLogStart).is_none());
}

#[test]
fn every_mutation_of_keel_replication_is_caught() {
    for mutation in REPLICATION_MUTATIONS {
        let (options, expect) = expected_failure(mutation).expect("the model shows it");
        println!("{mutation:?}: expecting {expect:?}");
        match expect {
            Expect::Safety(prefix) => {
                let (message, _) = safety_violation(&run_safety(options));
                assert!(message.starts_with(prefix), "{mutation:?}: {message}");
            }
            Expect::Liveness(property) => {
                let report = run(options);
                assert!(report.safety.holds(), "{mutation:?}: {:?}", report.safety);
                let verdict = report.liveness.iter().find(|(name, _)| *name == property).map(|(_, v)| v);
                match verdict {
                    Some(Verdict::Violated { trace, .. }) => println!("{trace}"),
                    other => panic!("{mutation:?}: expected \"{property}\" to fail, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn expanding_the_isr_below_the_epoch_start_offset_loses_what_the_old_leader_acknowledged() {
    let options = IsrModelOptions {
        replication_mutation: Some(ReplicationMutation::ExpandBelowEpochStart),
        ..IsrModelOptions::default()
    };
    let (_, trace) = safety_violation(&run_safety(options));
    // Two records acknowledged, a new leader whose high watermark lags, and a follower that
    // reaches that high watermark with one record joining the ISR.
    assert_steps_in_order(&trace, &["acknowledged: [e0 e0]", "leader epoch e1", "handles n"]);
}

#[test]
fn without_elr_the_last_replica_standing_loses_an_acknowledged_record() {
    let options = IsrModelOptions { metadata_mutation: Some(Mutation::NoElr), ..IsrModelOptions::default() };
    let (message, trace) = safety_violation(&run_safety(options));
    assert!(message.starts_with("acked record lost: n2 is in the ISR"), "{message}");
    // The scenario, in order: n2 loses its copy, an acknowledgement with n2 still in the ISR,
    // the ISR down to n2, and n2 re-elected after an unclean restart.
    let steps = ["n2 CRASHES", "acknowledged: [e0]", "ISR [n2]", "fences n2", "n2 restarts and registers WITHOUT"];
    assert_steps_in_order(&trace, &steps);
    assert!(trace.rsplit("restarts").next().is_some_and(|last| last.contains("leader n2")), "{trace}");
}

#[test]
fn without_the_controllers_broker_epoch_check_an_isr_addition_in_flight_outlives_a_restart() {
    // F4 of issue 17: the leader drops an addition it has not sent when the follower restarts,
    // but not one already on its way; only the controller's check (KIP-903) stops that one.
    let options =
        IsrModelOptions { metadata_mutation: Some(Mutation::NoBrokerEpochCheck), ..IsrModelOptions::default() };
    let (message, trace) = safety_violation(&run_safety(options));
    assert!(message.starts_with("acked record lost"), "{message}");
    assert_steps_in_order(&trace, &["vouching for n", "CRASHES", "restarts", "the controller handles"]);
}

#[test]
fn with_alter_partition_answered_at_once_the_controllers_check_is_not_needed() {
    // With AlterPartition handled at once nothing is ever in flight across a restart, and a
    // follower joins the ISR only on a fetch, which reports the log of the process that sent
    // it: the leader's own KIP-903 check keeps the addition honest without the controller's.
    // (Until the leader stopped adding followers on ticks, from what an earlier process had
    // fetched, the mutant `KeepFollowerStateOnRestart` lost a record here.)
    let options = IsrModelOptions {
        alter_partition_at_once: true,
        metadata_mutation: Some(Mutation::NoBrokerEpochCheck),
        ..IsrModelOptions::default()
    };
    assert_all_hold(&run(options));
}

#[test]
fn elr_keeps_acknowledged_records_through_a_crash_of_every_replica() {
    // Safety does not need the crash budget: a replica that lost its tail is never leader, ISR
    // or ELR again before catching up, so when every copy is lost the partition stays
    // leaderless instead of electing a replica without the record.
    let options = IsrModelOptions {
        lossy_crashes: 3,
        clean_shutdowns: 0,
        records: 1,
        alter_partition_at_once: true,
        ..IsrModelOptions::default()
    };
    assert_all_hold(&run(options));
}

#[test]
fn unclean_leader_election_loses_acknowledged_records() {
    // The property can fail for the real code too, when the topic allows it.
    let options = IsrModelOptions { unclean_leader_election: true, records: 1, ..IsrModelOptions::default() };
    let (message, _) = safety_violation(&run_safety(options));
    assert!(message.starts_with("acked record lost"), "{message}");
}

#[test]
fn ignoring_a_min_isr_change_keeps_a_stale_elr() {
    let options = IsrModelOptions {
        min_isr_changes: true,
        records: 1,
        metadata_mutation: Some(Mutation::IgnoreMinIsrChange),
        ..IsrModelOptions::default()
    };
    let (message, trace) = safety_violation(&run_safety(options));
    assert!(message.contains("kept while the ISR"), "{message}");
    // Found at the change itself: lowering min ISR to what the ISR holds must clear the ELR.
    let last = trace.lines().rev().find(|line| line.starts_with(char::is_whitespace) && line.contains(". "));
    assert!(last.is_some_and(|line| line.contains("sets min.insync.replicas to 1")), "{trace}");
}

/// This configuration found the bug fixed in keel-metadata's `elect()`: a leader elected from
/// the ELR whose one-member ISR meets a lowered min ISR must clear the ELR. (It needs an ELR of
/// two, one of them back after a clean shutdown; AlterPartition is handled at once to keep the
/// run short.)
#[test]
fn min_isr_changes_keep_every_acknowledged_record() {
    let options = IsrModelOptions {
        min_isr_changes: true,
        records: 1,
        alter_partition_at_once: true,
        ..IsrModelOptions::default()
    };
    assert_all_hold(&run(options));
}

/// F5 of issue 17: min ISR raised while an ISR shrink is on its way to the controller, which
/// takes it under the new minimum; the leader applies it only with the metadata that carries
/// both.
#[test]
fn min_isr_changes_while_an_isr_change_is_in_flight_keep_every_acknowledged_record() {
    let options =
        IsrModelOptions { min_isr_changes: true, records: 1, clean_shutdowns: 0, ..IsrModelOptions::default() };
    assert_all_hold(&run(options));
}
