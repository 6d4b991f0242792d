//! keel-sim's cluster scenario against keel-metadata's controller quorum (keel-raft under
//! it), keel-replication's replica engine and keel-storage's logs on crash-simulating disks:
//! determinism, a fixed sweep that must pass, and planted bugs that must be caught.

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
    let mut controller_snapshots = 0;
    let mut seeds_restarting_from_snapshots = 0;
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
        controller_snapshots += report.stats.controller_snapshots;
        seeds_restarting_from_snapshots += u64::from(report.stats.controller_restarts_from_snapshot > 0);
    }
    // The sweep exercises what it claims to: records, lossy crashes, failovers,
    // keel-storage's recovery cutting torn tails from crash images, and controllers that
    // compact their Raft log and restart from a snapshot in most seeds.
    assert!(acked >= CI_SEEDS * 30, "{acked} records acknowledged");
    assert!(lossy_crashes >= CI_SEEDS, "{lossy_crashes} lossy crashes");
    assert!(leader_changes >= CI_SEEDS * 3, "{leader_changes} leader changes");
    assert!(recovery_cuts >= CI_SEEDS / 2, "{recovery_cuts} recoveries cut a torn tail");
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
    let caught = failures(&options, 100);
    assert!(caught.len() >= 3, "only {} of 100 seeds caught the mutant: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("was committed")), "{caught:?}");
}

/// Without KIP-903 (fetches carry no broker epoch and the controller checks none), a leader
/// that has not yet replayed a follower's new registration proposes it for the ISR on what
/// its previous process fetched, and the controller accepts. With the controller quorum on
/// keel-raft the sweep finds it rarely: 2 of seeds 0..16000, 4320 and 9470 (it found 7 of
/// 0..3000 with one controller that committed at once): registering and unfencing a restarted
/// broker now takes quorum round trips, and its first fetch of the new life usually reaches
/// the leader first. Both are pinned: with the check they pass, without it a restarted
/// follower is in the ISR without records it never fetched.
#[test]
fn without_the_broker_epoch_check_a_restarted_follower_rejoins_on_stale_state() {
    for seed in [4320, 9470] {
        let unchecked = run_cluster(&ClusterSimOptions { broker_epoch_check: false, ..ClusterSimOptions::new(seed) });
        let failure = unchecked.outcome.expect_err("the missing broker-epoch check is caught");
        assert!(failure.message.contains("is in the ISR (committed image) but lacks committed"), "{seed}: {failure}");
        assert!(run_cluster(&ClusterSimOptions::new(seed)).outcome.is_ok(), "seed {seed} fails with the check");
    }
}

/// Issue 17, F1: a broker that acts on metadata before replaying its own registration (and
/// fetches before registering) leads or follows in leader epochs that are over. The sweep
/// catches it (64 of seeds 0..300 with the controller quorum on keel-raft: a restarted
/// voter's broker replays a snapshot its controller read from its own disk); seed 13 is
/// pinned: with the gate it passes, without it an ISR member lacks committed records.
#[test]
fn no_metadata_gate_is_caught() {
    let options = ClusterSimOptions { mutation: Some(ClusterMutation::NoMetadataGate), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 300);
    assert!(caught.len() >= 5, "only {} of 300 seeds caught it: {caught:?}", caught.len());
    assert!(
        caught.iter().any(|(seed, m)| *seed == 13 && m.contains("is in the ISR (committed image) but lacks committed")),
        "seed 13 no longer catches it: {caught:?}"
    );
    assert!(run_cluster(&ClusterSimOptions::new(13)).outcome.is_ok(), "seed 13 fails with the gate");
}

/// Issue 17, F2: a broker back on an empty data directory that registers as cleanly shut down
/// keeps its ELR membership and can be elected with an empty log. With disk swaps in the
/// fault mix the sweep catches it (29 of seeds 0..300, 7 of 0..100 with the controller quorum
/// on keel-raft); seed 33 is pinned: with the rule it passes, without it an ELR member lacks
/// committed records.
#[test]
fn a_fresh_directory_counted_as_clean_is_caught() {
    let options =
        ClusterSimOptions { mutation: Some(ClusterMutation::FreshDirectoryIsClean), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 100);
    assert!(caught.len() >= 3, "only {} of 100 seeds caught it: {caught:?}", caught.len());
    assert!(
        caught.iter().any(|(seed, m)| *seed == 33 && m.contains("is in the ELR (committed image) but lacks committed")),
        "seed 33 no longer catches it: {caught:?}"
    );
    assert!(run_cluster(&ClusterSimOptions::new(33)).outcome.is_ok(), "seed 33 fails with the rule");
}

/// Found by the quorum scenario (seed 1914 with one controller, on b1): b2, leader of p1 in
/// epoch 0, is cut from the other brokers, fenced, and replaced; its expansion adding b3 is in
/// flight when b3 registers again. Once the network heals the controller used to refuse the
/// expansion with INELIGIBLE_REPLICA (b3's broker epoch is stale) before checking that b2 no
/// longer led: b2 dropped the change, went back to the ISR it last saw committed, and its high
/// watermark passed a record the new leader had replaced ("two committed records at one
/// offset"). Kafka checks the epochs first; so does keel-metadata's `alter_partition` now.
#[test]
fn a_deposed_leader_is_told_it_is_fenced_before_its_new_isr_is_judged() {
    let report = run_cluster(&ClusterSimOptions { controllers: Some(1), ..ClusterSimOptions::new(1914) });
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
}

/// A voter whose Raft state is on the swapped data disk comes back with no term, vote or log
/// (keel-raft has no KIP-853), and may help elect a leader without committed metadata: members
/// then apply different images at one index. 8 of seeds 0..100 catch it (7 by that check).
#[test]
fn a_voter_that_loses_its_raft_state_is_caught() {
    let options =
        ClusterSimOptions { mutation: Some(ClusterMutation::MetadataLogOnDataDisk), ..ClusterSimOptions::new(0) };
    let caught = failures(&options, 100);
    assert!(caught.len() >= 3, "only {} of 100 seeds caught it: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("applied a different metadata image at index")), "{caught:?}");
}

/// Idempotence holds within a producer epoch, as in Kafka. Seed 350 with one controller (on
/// b1): leader b1 (epoch 1) appends v18 but cannot commit it while, cut from the other
/// brokers, it flaps b3 in and out of the ISR; the producer's retry reaches b2, a zombie
/// leader of epoch 0 that never saw the producer, which answers UNKNOWN_PRODUCER_ID, so the
/// producer bumps its epoch (KIP-360) and sends v18 again as sequence 0, a new batch to every
/// log: both copies commit. The oracle counts that duplicate instead of reporting it. With three
/// controllers no seed of 0..6000 has one (controller failovers slow the cluster down, and
/// zombie leaders are rarer); with one, seeds 0..3000 have one (350).
#[test]
fn an_epoch_bump_may_commit_a_value_twice_as_in_kafka() {
    let report = run_cluster(&ClusterSimOptions { controllers: Some(1), ..ClusterSimOptions::new(350) });
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    assert_eq!(report.stats.epoch_bump_duplicates, 1, "{:?}", report.stats);
    assert!(report.stats.producer_epoch_bumps >= 1, "{:?}", report.stats);
}
