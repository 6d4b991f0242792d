//! keel-sim's cluster scenario against keel-metadata's controller, keel-replication's replica
//! engine and keel-storage's logs on crash-simulating disks: determinism, a fixed sweep that
//! must pass, and planted bugs that must be caught.

use keel_sim::{run_cluster, trace_hash, ClusterFaultOptions, ClusterMutation, ClusterSimOptions, Phase};

/// The fixed CI sweep: this many seeds of the default options must pass. A longer sweep runs
/// on demand with `keel sim cluster --seeds N`.
const CI_SEEDS: u64 = 300;

#[test]
fn one_seed_gives_one_trace_and_another_seed_another() {
    let options = ClusterSimOptions { record_trace: true, ..ClusterSimOptions::new(7) };
    let first = run_cluster(&options);
    let second = run_cluster(&options);
    assert!(first.outcome.is_ok(), "{:?}", first.outcome);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.trace, second.trace);
    assert_eq!(first.stats, second.stats);
    assert_eq!(trace_hash(&first.trace), first.trace_hash);
    let unrecorded = run_cluster(&ClusterSimOptions { record_trace: false, ..options.clone() });
    assert_eq!(unrecorded.trace_hash, first.trace_hash);
    assert!(unrecorded.trace.is_empty());
    let other = run_cluster(&ClusterSimOptions { seed: 8, ..options });
    assert_ne!(other.trace_hash, first.trace_hash);
}

#[test]
fn fixed_sweep_passes() {
    let mut acked = 0;
    let mut lossy_crashes = 0;
    let mut leader_changes = 0;
    let mut recovery_cuts = 0;
    for seed in 0..CI_SEEDS {
        let report = run_cluster(&ClusterSimOptions::new(seed));
        if let Err(failure) = &report.outcome {
            panic!("seed {seed} failed {failure}\nreproduce with: keel sim cluster --seed {seed} --trace");
        }
        assert!(report.stats.liveness_converged_ms.is_some(), "seed {seed}");
        acked += report.stats.records_acked;
        lossy_crashes += report.stats.lossy_crashes;
        leader_changes += report.stats.leader_changes;
        recovery_cuts += report.stats.recovery_cuts;
    }
    // The sweep exercises what it claims to: records, lossy crashes, failovers, and
    // keel-storage's recovery cutting torn tails from crash images.
    assert!(acked >= CI_SEEDS * 30, "{acked} records acknowledged");
    assert!(lossy_crashes >= CI_SEEDS, "{lossy_crashes} lossy crashes");
    assert!(leader_changes >= CI_SEEDS * 3, "{leader_changes} leader changes");
    assert!(recovery_cuts >= CI_SEEDS / 2, "{recovery_cuts} recoveries cut a torn tail");
}

#[test]
fn other_cluster_shapes_pass() {
    // (brokers, partitions, replication factor, min ISR)
    let shapes = [(1, 1, 1, 1), (3, 1, 3, 1), (3, 3, 2, 1), (3, 1, 3, 3), (5, 4, 3, 2), (5, 2, 5, 3)];
    for (brokers, partitions, replication_factor, min_isr) in shapes {
        for seed in 0..20 {
            let options =
                ClusterSimOptions { brokers, partitions, replication_factor, min_isr, ..ClusterSimOptions::new(seed) };
            if let Err(failure) = &run_cluster(&options).outcome {
                panic!("{brokers} brokers, {partitions} partitions, RF {replication_factor}, min ISR {min_isr}, seed {seed}: {failure}");
            }
        }
    }
}

#[test]
fn without_faults_every_record_is_acknowledged_and_read() {
    let options = ClusterSimOptions { faults: ClusterFaultOptions::none(), ..ClusterSimOptions::new(3) };
    let report = run_cluster(&options);
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    let stats = &report.stats;
    assert_eq!(stats.lossy_crashes + stats.clean_restarts + stats.partitions + stats.messages_dropped, 0, "{stats:?}");
    assert_eq!(stats.records_acked, stats.records_produced, "{stats:?}");
    assert_eq!(stats.records_consumed, stats.records_produced, "{stats:?}");
    assert!(stats.records_produced > 300, "{stats:?}");
}

/// Runs seeds `0..seeds` with these options; returns the failures (seed, message).
fn failures(options: &ClusterSimOptions, seeds: u64) -> Vec<(u64, String)> {
    let mut caught = Vec::new();
    for seed in 0..seeds {
        if let Err(failure) = run_cluster(&ClusterSimOptions { seed, ..options.clone() }).outcome {
            assert_ne!(failure.phase, Phase::Setup);
            caught.push((seed, failure.message));
        }
    }
    caught
}

#[test]
fn no_elr_is_caught() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::NoElr), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 40);
    assert!(caught.len() >= 5, "only {} of 40 seeds caught the mutant: {caught:?}", caught.len());
    assert!(
        caught.iter().any(|(_, m)| m.contains("is in the ISR (committed image) but lacks committed")),
        "{caught:?}"
    );
}

#[test]
fn no_truncate_is_caught() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::NoTruncate), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 40);
    assert!(caught.len() >= 3, "only {} of 40 seeds caught the mutant: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("was committed")), "{caught:?}");
}

/// Without KIP-903 (fetches carry no broker epoch and the controller checks none), a leader
/// that has not yet replayed a follower's new registration proposes it for the ISR on what
/// its previous process fetched, and the controller accepts. The run finds it: seeds 32, 823,
/// 969, 1722, 1761, 2454 and 2880 of 0..3000 (an ISR member lacking committed records; an
/// acknowledged record lost is the other way it shows).
#[test]
fn without_the_broker_epoch_check_a_restarted_follower_rejoins_on_stale_state() {
    let options = ClusterSimOptions { broker_epoch_check: false, ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 400);
    assert!(!caught.is_empty(), "no seed of 400 found the missing broker-epoch check");
    assert!(
        caught
            .iter()
            .all(|(_, m)| m.contains("is in the ISR (committed image) but lacks committed") || m.contains("is lost")),
        "{caught:?}"
    );
}

/// Issue 17, F1: a broker that acts on metadata before replaying its own registration (and
/// fetches before registering) leads or follows in leader epochs that are over. The sweep
/// catches it (13 of seeds 0..300 and 26 of 0..1000 with keel-storage's logs and producer ids
/// from the controller); seed 53 is pinned: with the gate it passes, without it an ISR member
/// lacks committed records.
#[test]
fn no_metadata_gate_is_caught() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::NoMetadataGate), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 300);
    assert!(caught.len() >= 5, "only {} of 300 seeds caught it: {caught:?}", caught.len());
    assert!(caught.iter().any(|(seed, _)| *seed == 53), "seed 53 no longer catches it: {caught:?}");
    assert!(run_cluster(&ClusterSimOptions::new(53)).outcome.is_ok(), "seed 53 fails with the gate");
}

/// Issue 17, F2: a broker back on an empty data directory that registers as cleanly shut down
/// keeps its ELR membership and can be elected with an empty log. With disk swaps in the
/// fault mix the sweep catches it (122 of seeds 0..1000, 10 and 28 of 0..40); seed 10 is
/// pinned: with the rule it passes, without it an ELR member lacks committed records.
#[test]
fn a_fresh_directory_counted_as_clean_is_caught() {
    let options =
        ClusterSimOptions { mutation: Some(ClusterMutation::FreshDirectoryIsClean), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 40);
    assert!(caught.len() >= 2, "only {} of 40 seeds caught it: {caught:?}", caught.len());
    assert!(caught.iter().any(|(seed, _)| *seed == 10), "seed 10 no longer catches it: {caught:?}");
    assert!(run_cluster(&ClusterSimOptions::new(10)).outcome.is_ok(), "seed 10 fails with the rule");
}

/// Idempotence holds within a producer epoch, as in Kafka. Seed 414: leader b1 appends v48
/// (epoch 0, sequence 37), which commits, but the producer hears NOT_LEADER_OR_FOLLOWER as
/// leadership moves; its retry reaches a zombie leader that lacks the batch before it and
/// answers OUT_OF_ORDER_SEQUENCE_NUMBER, so the producer bumps its epoch (KIP-360) and sends
/// v48 again as sequence 0, a new batch to every log: v48 commits at offsets 37 and 38. The
/// oracle counts that duplicate instead of reporting it (2 of seeds 0..3000: 414 and 2845).
#[test]
fn an_epoch_bump_may_commit_a_value_twice_as_in_kafka() {
    let report = run_cluster(&ClusterSimOptions::new(414));
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    assert_eq!(report.stats.epoch_bump_duplicates, 1, "{:?}", report.stats);
    assert!(report.stats.producer_epoch_bumps >= 1, "{:?}", report.stats);
}
