//! keel-sim's gossip scenario against keel-gossip's SWIM core: determinism, a fixed sweep that
//! must pass with detection times and false positives in the bounds SWIM leads us to expect,
//! and planted bugs that must be caught.

mod common;

use keel_sim::{run_gossip, GossipFaultOptions, GossipMutation, GossipSimOptions, Phase};

/// The fixed sweep: this many seeds of the default options (50 members, 10% loss, crashes,
/// restarts, partitions) must pass. `keel sim gossip --seeds N` runs longer sweeps.
const CI_SEEDS: u64 = 40;

#[test]
fn one_seed_gives_one_trace_and_another_seed_another() {
    common::assert_one_seed_gives_one_trace(|seed, record_trace| {
        run_gossip(&GossipSimOptions { record_trace, ..GossipSimOptions::new(seed) })
    });
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn fixed_sweep_passes_with_swim_like_detection_and_rare_false_positives() {
    let options = GossipSimOptions::new(0);
    let (period, suspicion) = (options.probe_interval_ms, options.suspicion_timeout_ms);
    let mut everyone = Vec::new();
    let mut first_suspicion = Vec::new();
    let (mut interrupted, mut permanent, mut partitions, mut refutations) = (0, 0, 0, 0);
    let (mut false_positives, mut false_suspicions, mut held_dead_ms, mut observed_ms) = (0, 0, 0, 0);
    for seed in 0..CI_SEEDS {
        let report = run_gossip(&GossipSimOptions { seed, ..options.clone() });
        common::assert_passed("gossip", &report);
        let s = &report.stats;
        assert!(s.liveness_converged_ms.is_some(), "seed {seed}");
        everyone.extend(s.detections.iter().map(|d| d.everyone_ms));
        first_suspicion.extend(s.detections.iter().map(|d| d.first_suspicion_ms));
        for d in &s.detections {
            assert!(d.first_suspicion_ms <= d.first_dead_ms && d.first_dead_ms <= d.everyone_ms, "seed {seed}: {d:?}");
        }
        interrupted += s.detections_interrupted;
        permanent += s.permanent_crashes;
        partitions += s.partitions;
        refutations += s.refutations;
        false_positives += s.false_positives;
        false_suspicions += s.false_suspicions;
        held_dead_ms += s.false_positive_node_ms;
        observed_ms += s.observed_node_ms;
    }
    // The sweep exercises what it claims to: detections, restarts that beat detection, crashes
    // for good, partitions, refutations.
    assert!(everyone.len() as u64 >= CI_SEEDS * 2, "{} detections", everyone.len());
    assert!(interrupted >= CI_SEEDS && permanent >= CI_SEEDS && partitions >= CI_SEEDS, "{interrupted} {permanent}");
    assert!(refutations >= CI_SEEDS * 10, "{refutations} refutations");
    everyone.sort_unstable();
    first_suspicion.sort_unstable();
    let mean = everyone.iter().sum::<u64>() / everyone.len() as u64;
    // SWIM: some member probes a crashed one within e/(e-1) periods on average, suspects it at
    // the end of that period, everyone holds it Dead a suspicion timeout and a few periods of
    // dissemination later.
    assert!(percentile(&first_suspicion, 0.5) <= 3 * period, "first suspicions {first_suspicion:?}");
    let median = percentile(&everyone, 0.5);
    assert!(median >= suspicion && median <= suspicion + 6 * period, "detections {everyone:?}");
    assert!(mean <= 3 * (period + suspicion), "mean detection {mean} ms: {everyone:?}");
    // At 10% loss a direct probe fails about 19% of the time and all three indirect ones 4%,
    // so about 0.8% of probes suspect a running member; refutation turns nearly all of them
    // around before the suspicion timeout.
    assert!(false_suspicions > 0, "10% loss and no false suspicion: is loss simulated?");
    assert!(
        false_positives * 4 <= false_suspicions,
        "{false_positives} false positives, {false_suspicions} suspicions"
    );
    assert!(held_dead_ms * 50 <= observed_ms, "running members held dead {held_dead_ms} of {observed_ms} member-ms");
}

#[test]
fn without_faults_nobody_is_suspected_and_every_datagram_arrives() {
    let options = GossipSimOptions { faults: GossipFaultOptions::none(), ..GossipSimOptions::new(3) };
    let report = run_gossip(&options);
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    let s = &report.stats;
    assert_eq!(s.crashes + s.partitions + s.false_suspicions + s.false_positives, 0, "{s:?}");
    // Only joins sent in the first period, to seeds that have not booted yet, are dropped.
    assert!(s.messages_dropped <= 3 * 50, "{s:?}");
    assert!(s.messages_delivered + s.messages_dropped <= s.messages_sent, "{s:?}");
    assert_eq!(s.refutations, 0, "{s:?}");
    assert!(s.observed_node_ms >= 50 * 50_000, "{s:?}");
    // Every member was already known Alive everywhere when faults would have stopped.
    assert!(s.liveness_converged_ms.is_some_and(|ms| ms <= 100), "{s:?}");
}

#[test]
fn small_and_slow_clusters_pass() {
    for (nodes, loss_permille) in [(2, 100), (5, 300), (12, 0), (20, 200)] {
        for seed in 0..5 {
            let options = GossipSimOptions {
                nodes,
                seed_nodes: 1,
                faults: GossipFaultOptions { message_loss_permille: loss_permille, ..GossipFaultOptions::default() },
                ..GossipSimOptions::new(seed)
            };
            if let Err(failure) = &run_gossip(&options).outcome {
                panic!("{nodes} members, loss {loss_permille}/1000, seed {seed}: {failure}");
            }
        }
    }
}

/// Dead always wins, and a member never refutes: without crashes (so with no incarnation
/// ever raised) a member declared dead while it runs, by a lost probe or a partition, stays
/// dead in the views of everyone who heard it, and the views never converge.
#[test]
fn dead_always_wins_keeps_a_falsely_accused_member_dead() {
    let options = GossipSimOptions {
        mutation: Some(GossipMutation::DeadAlwaysWins),
        faults: GossipFaultOptions { crashes: false, ..GossipFaultOptions::default() },
        ..GossipSimOptions::new(0)
    };
    for seed in 0..3 {
        let failure = run_gossip(&GossipSimOptions { seed, ..options.clone() }).outcome.unwrap_err();
        assert_eq!(failure.phase, Phase::Liveness, "seed {seed}: {failure}");
        assert!(failure.message.contains("did not converge"), "seed {seed}: {failure}");
        assert!(failure.message.contains("dead@1, but n"), "seed {seed}: {failure}");
    }
    // The correct core refutes the same accusations.
    let correct = GossipSimOptions { mutation: None, ..options };
    for seed in 0..3 {
        let report = run_gossip(&GossipSimOptions { seed, ..correct.clone() });
        assert!(report.outcome.is_ok(), "seed {seed}: {:?}", report.outcome);
        assert!(report.stats.refutations > 0);
    }
}

/// With crashes, the same mutant lets a Dead record of an earlier life replace a restarted
/// member's newer one: a record goes back, which the oracle catches on every seed tried.
#[test]
fn dead_always_wins_with_restarts_is_caught() {
    let options = GossipSimOptions { mutation: Some(GossipMutation::DeadAlwaysWins), ..GossipSimOptions::new(0) };
    let caught = common::failures(0..4, |seed| run_gossip(&GossipSimOptions { seed, ..options.clone() }));
    assert!(!caught.is_empty(), "no seed caught dead-always-wins");
    assert!(caught.iter().any(|(_, m)| m.contains("goes back") || m.contains("did not converge")), "{caught:?}");
}

#[test]
fn blind_merge_is_caught() {
    let options = GossipSimOptions { mutation: Some(GossipMutation::BlindMerge), ..GossipSimOptions::new(0) };
    let caught: Vec<String> = (0..4)
        .filter_map(|seed| run_gossip(&GossipSimOptions { seed, ..options.clone() }).outcome.err())
        .map(|f| f.message)
        .collect();
    assert!(!caught.is_empty(), "no seed caught blind merge");
}

/// keel-gossip once kept the indirect-probe deadline of a probe acked directly, and
/// `handle_tick` ignored it, so `poll_timeout` returned an instant already past until the
/// period ended: the broker's membership loop (`sleep(poll_timeout - now)`) spun for the rest
/// of every period in which a direct probe succeeded. The simulator now fails a run on any
/// deadline a tick leaves in the past; seed 1 showed it.
#[test]
fn a_tick_leaves_no_deadline_in_the_past() {
    let report = run_gossip(&GossipSimOptions { faults: GossipFaultOptions::none(), ..GossipSimOptions::new(1) });
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
    let report = run_gossip(&GossipSimOptions::new(1));
    assert!(report.outcome.is_ok(), "{:?}", report.outcome);
}
