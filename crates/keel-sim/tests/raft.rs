//! keel-sim against keel-raft: determinism, a fixed sweep that must pass, and a planted bug
//! that must be caught.

mod common;

use keel_sim::{run_raft, FaultOptions, Mutation, Phase, RaftSimOptions};

/// The fixed CI sweep: this many seeds of the default options must pass. A longer sweep runs
/// on demand with `keel sim raft --seeds N`.
const CI_SEEDS: u64 = 300;

#[test]
fn one_seed_gives_one_trace_and_another_seed_another() {
    common::assert_one_seed_gives_one_trace(|seed, record_trace| {
        run_raft(&RaftSimOptions { record_trace, ..RaftSimOptions::new(seed) })
    });
}

#[test]
fn fixed_sweep_passes() {
    let mut simulated_ms = 0;
    for seed in 0..CI_SEEDS {
        let report = run_raft(&RaftSimOptions::new(seed));
        common::assert_passed("raft", &report);
        // Every run reaches the liveness phase and converges in it.
        assert!(report.stats.liveness_converged_ms.is_some(), "seed {seed}");
        simulated_ms += report.stats.simulated_ms;
    }
    assert!(simulated_ms >= CI_SEEDS * 20_000);
}

#[test]
fn other_cluster_shapes_pass() {
    let shapes = [
        (1, 0, None, None),
        (1, 2, None, None),
        (2, 0, None, None),
        (3, 1, Some(1), Some(3)),
        (3, 0, Some(3), Some(2)),
        (5, 0, None, None),
        (5, 1, Some(2), Some(4)),
    ];
    for (nodes, observers, replication_quorum, election_quorum) in shapes {
        for seed in 0..20 {
            let options =
                RaftSimOptions { nodes, observers, replication_quorum, election_quorum, ..RaftSimOptions::new(seed) };
            if let Err(failure) = &run_raft(&options).outcome {
                panic!("{nodes} voters, {observers} observers, R {replication_quorum:?}, E {election_quorum:?}, seed {seed}: {failure}");
            }
        }
    }
}

#[test]
fn without_faults_everything_commits_quickly() {
    let options = RaftSimOptions { faults: FaultOptions::none(), ..RaftSimOptions::new(3) };
    let report = run_raft(&options);
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    let stats = &report.stats;
    assert_eq!(stats.crashes + stats.partitions + stats.messages_dropped, 0, "{stats:?}");
    assert_eq!(stats.leaders_elected, 1, "one election and no churn without faults: {stats:?}");
    assert_eq!(stats.commands_committed, stats.commands_proposed);
    assert!(stats.commands_proposed > 100, "{stats:?}");
}

#[test]
fn unsafe_quorums_are_caught() {
    // R + E = N: a leader commits alone, and two other voters elect a leader without it.
    let caught = common::failures(0..20, |seed| {
        run_raft(&RaftSimOptions {
            replication_quorum: Some(1),
            election_quorum: Some(2),
            mutation: Some(Mutation::UnsafeQuorums),
            ..RaftSimOptions::new(seed)
        })
    });
    assert!(caught.len() >= 5, "only {} of 20 seeds caught the mutant: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("leader completeness") || m.contains("committed entry changed")));
}

#[test]
fn trusting_a_replaced_disk_is_caught() {
    // A voter back on an empty disk votes at once: for a candidate that lacks what was
    // committed with its forgotten acknowledgements. Seed 2: n2 leads term 8 without the
    // entry committed at index 26 (keel sim raft --seed 2 --mutation trust-lost-state).
    let caught = common::failures(0..50, |seed| {
        run_raft(&RaftSimOptions { mutation: Some(Mutation::TrustLostState), ..RaftSimOptions::new(seed) })
    });
    assert!(caught.iter().any(|(seed, _)| *seed == 2), "seed 2 no longer catches the mutant: {caught:?}");
    assert!(caught.len() >= 3, "only {} of 50 seeds caught the mutant: {caught:?}", caught.len());
    assert!(caught.iter().any(|(_, m)| m.contains("leader completeness") || m.contains("committed entry changed")));
    // The correct core passes the same seeds, disk swaps included.
    let swaps: u64 = (0..50).map(|seed| run_raft(&RaftSimOptions::new(seed))).map(|r| r.stats.disk_swaps).sum();
    assert!(swaps > 20, "only {swaps} disk swaps in 50 seeds");
}

#[test]
fn the_same_quorums_without_the_mutation_are_refused() {
    let options = RaftSimOptions { replication_quorum: Some(1), election_quorum: Some(2), ..RaftSimOptions::new(0) };
    let failure = run_raft(&options).outcome.unwrap_err();
    assert_eq!(failure.phase, Phase::Setup);
}
