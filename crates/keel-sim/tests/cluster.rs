//! keel-sim's cluster scenario against keel-metadata's controller quorum (keel-raft under
//! it), keel-replication's replica engine and keel-storage's logs on crash-simulating disks:
//! determinism, a fixed sweep that must pass, and planted bugs that must be caught.

mod common;

use keel_sim::{run_cluster, ClusterFaultOptions, ClusterMutation, ClusterSimOptions};

/// The fixed CI sweep: this many seeds of the default options must pass. A longer sweep runs
/// on demand with `keel sim cluster --seeds N`.
const CI_SEEDS: u64 = 300;

#[test]
fn one_seed_gives_one_trace_and_another_seed_another() {
    common::assert_one_seed_gives_one_trace(|seed, record_trace| {
        run_cluster(&ClusterSimOptions { record_trace, ..ClusterSimOptions::new(seed) })
    });
}

#[test]
fn fixed_sweep_passes() {
    let mut acked = 0;
    let mut lossy_crashes = 0;
    let mut leader_changes = 0;
    let mut recovery_cuts = 0;
    let mut controller_snapshots = 0;
    let mut seeds_restarting_from_snapshots = 0;
    for seed in 0..CI_SEEDS {
        let report = run_cluster(&ClusterSimOptions::new(seed));
        common::assert_passed("cluster", &report);
        assert!(report.stats.liveness_converged_ms.is_some(), "seed {seed}");
        acked += report.stats.records_acked;
        lossy_crashes += report.stats.lossy_crashes;
        leader_changes += report.stats.leader_changes;
        recovery_cuts += report.stats.recovery_cuts;
        controller_snapshots += report.stats.controller_snapshots;
        seeds_restarting_from_snapshots += u64::from(report.stats.controller_restarts_from_snapshot > 0);
    }
    // The sweep exercises what it claims to: records, lossy crashes, failovers,
    // keel-storage's recovery cutting torn tails from crash images, and controllers that
    // compact their Raft log and restart from a snapshot in most seeds.
    assert!(acked >= CI_SEEDS * 30, "{acked} records acknowledged");
    assert!(lossy_crashes >= CI_SEEDS, "{lossy_crashes} lossy crashes");
    assert!(leader_changes >= CI_SEEDS * 3, "{leader_changes} leader changes");
    assert!(recovery_cuts >= CI_SEEDS * 2 / 5, "{recovery_cuts} recoveries cut a torn tail");
    assert!(controller_snapshots >= CI_SEEDS * 3, "{controller_snapshots} controller snapshots");
    assert!(seeds_restarting_from_snapshots >= CI_SEEDS / 2, "{seeds_restarting_from_snapshots} seeds");
}

#[test]
fn other_cluster_shapes_pass() {
    // (brokers, partitions, replication factor, min ISR)
    // Three controllers (one with a single broker) in combined mode; five brokers have two
    // that are brokers only.
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
fn other_quorum_sizes_pass() {
    // (brokers, controllers): a single voter, and every broker a voter.
    for (brokers, controllers) in [(3, 1), (5, 5)] {
        for seed in 0..20 {
            let options = ClusterSimOptions { brokers, controllers: Some(controllers), ..ClusterSimOptions::new(seed) };
            if let Err(failure) = &run_cluster(&options).outcome {
                panic!("{brokers} brokers, {controllers} controllers, seed {seed}: {failure}");
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
    common::failures(0..seeds, |seed| run_cluster(&ClusterSimOptions { seed, ..options.clone() }))
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
    let caught = failures(&options, 100);
    assert!(caught.len() >= 3, "only {} of 100 seeds caught the mutant: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("was committed")), "{caught:?}");
}

/// Issue 17, F1: a broker that acts on metadata before replaying its own registration (and
/// fetches before registering) leads or follows in leader epochs that are over. The sweep
/// catches it (over a third of seeds 0..300 with the controller quorum on keel-raft and
/// retention: a restarted voter's broker replays a snapshot its controller read from its own
/// disk); seed 63 is pinned: with the gate it passes; without it b2, p1's leader in epoch 0,
/// comes back on an empty disk, leads epoch 0 again from its controller's snapshot before it
/// holds its new registration, and ISR member b1 truncates the committed records away.
#[test]
fn no_metadata_gate_is_caught() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::NoMetadataGate), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 300);
    assert!(caught.len() >= 5, "only {} of 300 seeds caught it: {caught:?}", caught.len());
    assert!(
        caught.iter().any(|(seed, m)| *seed == 63 && m.contains("is in the ISR (committed image) but lacks committed")),
        "seed 63 no longer catches it: {caught:?}"
    );
    assert!(run_cluster(&ClusterSimOptions::new(63)).outcome.is_ok(), "seed 63 fails with the gate");
}

/// Issue 17, F2: a broker back on an empty data directory that registers as cleanly shut down
/// keeps its ELR membership and can be elected with an empty log. With disk swaps in the
/// fault mix the sweep catches it (31 of seeds 0..300, 8 of 0..100 with the controller quorum
/// on keel-raft and retention); seed 10 is pinned: with the rule it passes, without it an ELR
/// member lacks committed records.
#[test]
fn a_fresh_directory_counted_as_clean_is_caught() {
    let options =
        ClusterSimOptions { mutation: Some(ClusterMutation::FreshDirectoryIsClean), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 100);
    assert!(caught.len() >= 3, "only {} of 100 seeds caught it: {caught:?}", caught.len());
    assert!(
        caught.iter().any(|(seed, m)| *seed == 10 && m.contains("is in the ELR (committed image) but lacks committed")),
        "seed 10 no longer catches it: {caught:?}"
    );
    assert!(run_cluster(&ClusterSimOptions::new(10)).outcome.is_ok(), "seed 10 fails with the rule");
}

/// Issue 17, F6: retention that takes its bound from the log end instead of the replica
/// engine (the high watermark) deletes records no follower holds yet, and acks=all then
/// succeeds for records no replica holds. With retention drawn per seed the sweep catches it
/// (273 of seeds 0..1000, 24 of 0..100, with the controller quorum on keel-raft). Seed 21 is
/// pinned: with the engine's bound it passes; without it b1, p1's leader in epoch 1 with log
/// end 3 and high watermark 2, deletes its only segment, taking the record at offset 2 that
/// no high watermark has passed yet.
#[test]
fn retention_that_ignores_the_high_watermark_is_caught() {
    let options = ClusterSimOptions {
        mutation: Some(ClusterMutation::RetentionIgnoresHighWatermark),
        ..ClusterSimOptions::new(0)
    };
    let caught = failures(&options, 100);
    assert!(caught.len() >= 15, "only {} of 100 seeds caught it: {caught:?}", caught.len());
    let pinned = run_cluster(&ClusterSimOptions { seed: 21, ..options }).outcome.unwrap_err();
    assert!(
        pinned.message.contains("p1: 1's log now starts at 3, beyond the committed prefix (which ends at 2)"),
        "seed 21 no longer catches it as it did: {pinned}"
    );
    let report = run_cluster(&ClusterSimOptions::new(21));
    assert!(report.outcome.is_ok(), "seed 21 fails with the engine's bound: {:?}", report.outcome);
    assert!(report.stats.segments_deleted_by_retention > 0, "{:?}", report.stats);
}

/// Retention runs in the sweep: logs lose whole segments below the high watermark, consumers
/// that fall behind it move to the log start, and what retention removed is not counted lost.
#[test]
fn retention_deletes_only_committed_prefixes() {
    let (mut deleted, mut resets) = (0, 0);
    for seed in 0..100 {
        let report = run_cluster(&ClusterSimOptions::new(seed));
        assert!(report.outcome.is_ok(), "seed {seed}: {:?}", report.outcome);
        deleted += report.stats.records_deleted_by_retention;
        resets += report.stats.consumer_resets;
    }
    assert!(deleted >= 1_000 && resets >= 10, "{deleted} records deleted, {resets} consumer resets");
}

/// A follower whose records all lie below its leader's log start, in an epoch the leader's
/// log no longer knows, cannot be checked for a divergence (Kafka's leader vouches for it).
/// Seed 31824530: b3, a zombie leader of p1 in epoch 0, appends v10 (a retry in producer
/// epoch 1) at offset 1, where v9 commits under b1. Retention deletes b1's p1 log below 2; b3
/// follows b1 from offset 2, is not told of the divergence, and keeps the producer state
/// v10 left. Elected in epoch 3, it answers the retry of v10 as a duplicate at offset 1:
/// v10 is acknowledged and never committed. With keel's rule b3 starts over at offset 2.
#[test]
fn a_follower_whose_records_all_lie_below_the_leaders_log_start_starts_over_there() {
    let options =
        ClusterSimOptions { mutation: Some(ClusterMutation::TrustBelowLogStart), ..ClusterSimOptions::new(31824530) };
    let failure = run_cluster(&options).outcome.unwrap_err();
    assert!(failure.message.contains("acknowledges v10 at offset 1, but its log [2, 2) does not hold it"), "{failure}");
    let report = run_cluster(&ClusterSimOptions::new(31824530));
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
}

/// A voter whose Raft state is on the swapped data disk comes back with no term, vote or log.
/// Trusting that empty state (keel before keel-raft's recovery rule), it may help elect a
/// leader without committed metadata: members then apply different images at one index.
/// Seeds 18, 34 and 53 of 0..100 catch it (seed 18: b1's
/// controller applies a different image at index 14).
#[test]
fn a_voter_that_trusts_its_lost_raft_state_is_caught_and_one_that_recovers_passes() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::TrustLostState), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 100);
    assert!(caught.iter().any(|(seed, _)| *seed == 18), "seed 18 no longer catches it: {caught:?}");
    assert!(caught.len() >= 2, "only {} of 100 seeds caught it: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("applied a different metadata image at index")), "{caught:?}");
    // With the rule the same seeds pass: the fixed sweep runs them (the Raft state is on the
    // data disk by default).
}

/// Idempotence holds within a producer epoch, as in Kafka. The producer bumps its epoch
/// (KIP-360) on OUT_OF_ORDER_SEQUENCE_NUMBER or UNKNOWN_PRODUCER_ID and sends the batch again
/// as sequence 0, a new batch to every log: if an earlier attempt was appended where the
/// refusing broker could not see it, both copies commit. The oracle counts that duplicate
/// instead of reporting it. In both pinned seeds a value commits unacknowledged. Seed 239
/// (three controllers): the leader the retry of v104 then reaches never saw the producer (its
/// log started over at its leader's log start, which forgets producer state, as Kafka's does)
/// and answers UNKNOWN_PRODUCER_ID. Seed 362 (one controller): the retry of v35 reaches b2,
/// which lacks the batches before it and answers OUT_OF_ORDER_SEQUENCE_NUMBER. (Seeds 3770 and
/// 1291 were pinned until the ISR stopped growing on ticks alone, which moved every seed.)
#[test]
fn an_epoch_bump_may_commit_a_value_twice_as_in_kafka() {
    for (controllers, seed) in [(None, 239), (Some(1), 362)] {
        let report = run_cluster(&ClusterSimOptions { controllers, ..ClusterSimOptions::new(seed) });
        assert!(report.outcome.is_ok(), "seed {seed}: {:?}", report.outcome);
        assert_eq!(report.stats.epoch_bump_duplicates, 1, "seed {seed}: {:?}", report.stats);
        assert!(report.stats.producer_epoch_bumps >= 1, "seed {seed}: {:?}", report.stats);
    }
}
