//! One leader and two followers exchanging fetches over in-memory logs, with keel-metadata's
//! controller rules answering ISR changes.

mod common;

use common::{config, n, nodes, registration, respond, Cluster, LAG};
use keel_replication::testing::VecLog;
use keel_replication::Mutation;
use keel_replication::{
    FetchDecision, FetchRequest, FetchResponse, Follower, FollowerAction, Leader, LocalLog, MetadataOutcome,
};
use keel_types::{BrokerEpoch, Duration, ErrorCode, Instant, LeaderEpoch, PartitionEpoch, Rng};

const NS: Duration = Duration(1);

fn sum(parts: &[Duration]) -> Duration {
    Duration(parts.iter().map(|d| d.0).sum())
}

fn empty_logs() -> Vec<VecLog> {
    vec![VecLog::new(), VecLog::new()]
}

#[test]
fn high_watermark_advances_only_when_every_isr_member_fetched_past_it() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.produce(5).unwrap();
    assert_eq!(c.leader.high_watermark(), 0);
    c.fetch(2); // reports 0, receives 0..5
    c.fetch(2); // reports 5
    assert_eq!(c.leader.high_watermark(), 0, "3 has not fetched in this leader epoch");
    c.fetch(3);
    assert_eq!(c.leader.high_watermark(), 0, "3 reported 0");
    c.fetch(3);
    assert_eq!(c.leader.high_watermark(), 5);
    assert_eq!(c.follower(3).high_watermark(), 5, "the answer carries the advanced high watermark");
    assert_eq!(c.follower(2).high_watermark(), 0);
    c.fetch(2);
    assert_eq!(c.follower(2).high_watermark(), 5);

    // With two records per fetch, the high watermark is the slowest member's report.
    c.fetch_records_max = 2;
    c.produce(4).unwrap();
    c.fetch(2); // reports 5, receives 5..7
    c.fetch(2); // reports 7, receives 7..9
    assert_eq!(c.leader.high_watermark(), 5);
    c.fetch(3); // reports 5
    c.fetch(3); // reports 7
    assert_eq!(c.leader.high_watermark(), 7);
    c.settle();
    assert_eq!(c.leader.high_watermark(), 9);
    assert_eq!(c.follower_log(2), &c.leader_log);
    assert_eq!(c.follower_log(3), &c.leader_log);
}

#[test]
fn high_watermark_is_frozen_while_the_isr_is_below_min_isr() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.produce(3).unwrap();
    c.settle();
    assert_eq!(c.leader.high_watermark(), 3);

    // 3 goes silent: it leaves the ISR after the lag time; {1, 2} still meets min ISR.
    c.produce(2).unwrap();
    c.fetch(2);
    c.fetch(2);
    assert_eq!(c.leader.high_watermark(), 3, "3 still counts");
    c.tick(sum(&[LAG, NS]));
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2]))));
    assert_eq!(c.leader.high_watermark(), 5);

    // 2 goes silent too: the ISR becomes {1}, below min ISR 2.
    c.produce(1).unwrap();
    c.tick(sum(&[LAG, NS]));
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1]))));
    assert_eq!(c.registration.elr, nodes(&[2]), "the last one to leave stays eligible to lead");
    assert_eq!(c.leader.check_produce(-1), Err(ErrorCode::NotEnoughReplicas));
    assert_eq!(c.leader.check_produce(1), Ok(()));
    let end = c.leader_log.append(c.epoch(), 1);
    c.leader.handle_local_append(c.now, end);
    c.tick(Duration::from_secs(1));
    assert_eq!(c.leader.high_watermark(), 5, "frozen: the leader alone holds 5..7");

    // 2 comes back: its expansion is in flight, and until it commits the ISR is still short.
    c.fetch(2); // reports 5 (= the high watermark): joins
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2])));
    c.fetch(2); // reports 7
    assert_eq!(c.leader.high_watermark(), 5, "the ISR is {{1}} until the controller answers");
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2]))));
    assert_eq!(c.leader.high_watermark(), 7);
    assert_eq!(c.leader.check_produce(-1), Ok(()));
}

#[test]
fn acks_all_completes_when_the_high_watermark_passes_the_batch() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    let end = c.produce(3).unwrap();
    let waiter = c.leader.add_waiter(c.now, end, c.now + Duration::from_secs(5));
    c.fetch(2);
    c.fetch(3);
    c.fetch(2);
    assert!(c.leader.drain_completed().is_empty(), "3 has not reported 3 yet");
    c.fetch(3);
    assert_eq!(c.leader.drain_completed(), vec![(waiter, Ok(()))]);
    // Already below the high watermark: completes at once.
    let again = c.leader.add_waiter(c.now, end, c.now + Duration::from_secs(5));
    assert_eq!(c.leader.drain_completed(), vec![(again, Ok(()))]);
}

#[test]
fn acks_all_times_out_at_its_deadline() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    let end = c.produce(3).unwrap();
    let deadline = c.now + Duration::from_secs(5);
    let waiter = c.leader.add_waiter(c.now, end, deadline);
    assert_eq!(c.leader.poll_timeout(), Some(deadline));
    c.tick(Duration(Duration::from_secs(5).0 - 1));
    assert!(c.leader.drain_completed().is_empty());
    c.tick(NS);
    assert_eq!(c.leader.drain_completed(), vec![(waiter, Err(ErrorCode::RequestTimedOut))]);
}

#[test]
fn acks_all_fails_when_the_isr_shrinks_below_min_isr_while_it_waits() {
    let mut c = Cluster::new(3, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    let end = c.produce(1).unwrap();
    let waiter = c.leader.add_waiter(c.now, end, c.now + sum(&[LAG, LAG]));
    c.fetch(2);
    c.fetch(2);
    c.tick(sum(&[LAG, NS]));
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2])));
    assert!(c.leader.drain_completed().is_empty(), "the shrink is not committed yet");
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2]))));
    assert_eq!(c.leader.drain_completed(), vec![(waiter, Err(ErrorCode::NotEnoughReplicasAfterAppend))]);
    assert_eq!(c.leader.check_produce(-1), Err(ErrorCode::NotEnoughReplicas));
}

#[test]
fn losing_leadership_fails_waiters_and_fetches() {
    let mut c = Cluster::new(1, 4, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    let end = c.produce(2).unwrap();
    let waiter = c.leader.add_waiter(c.now, end, c.now + Duration::from_secs(5));
    let mut older = c.registration.clone();
    older.leader_epoch = LeaderEpoch(3);
    assert_eq!(c.leader.handle_metadata_update(c.now, &older, 2), MetadataOutcome::Stale);
    let mut newer = c.registration.clone();
    newer.leader = Some(n(2));
    newer.leader_epoch = LeaderEpoch(5);
    newer.partition_epoch = newer.partition_epoch.next();
    assert_eq!(c.leader.handle_metadata_update(c.now, &newer, 2), MetadataOutcome::Resigned);
    assert_eq!(c.leader.drain_completed(), vec![(waiter, Err(ErrorCode::NotLeaderOrFollower))]);
    let fetch = |epoch| FetchRequest {
        replica: n(2),
        fetch_offset: 0,
        last_fetched_epoch: None,
        current_leader_epoch: Some(LeaderEpoch(epoch)),
        broker_epoch: None,
    };
    assert_eq!(c.raw_fetch(fetch(5)), FetchDecision::Error(ErrorCode::NotLeaderOrFollower));
    assert_eq!(c.raw_fetch(fetch(4)), FetchDecision::Error(ErrorCode::FencedLeaderEpoch));
    assert_eq!(c.leader.check_produce(1), Err(ErrorCode::NotLeaderOrFollower));
    assert_eq!(c.leader.poll_isr_change(c.now), None);
}

/// KIP-101: node 2 led epoch 1 and wrote offsets 1 and 2, but only offset 1 reached node 1,
/// which now leads epoch 2. Node 2 must cut offset 2 (never committed), then match the leader.
#[test]
fn a_follower_truncates_an_uncommitted_tail_from_an_older_epoch() {
    let mut c = Cluster::new(1, 2, &[1, 2], 1, VecLog::from_epochs(&[0, 1]), vec![VecLog::from_epochs(&[0, 1, 1])]);
    c.produce(2).unwrap();
    let (decision, action) = c.fetch(2);
    assert!(
        matches!(decision, Some(FetchDecision::Diverging { epoch: LeaderEpoch(1), end_offset: 2, .. })),
        "{decision:?}"
    );
    assert_eq!(action, FollowerAction::Truncate { offset: 2 });
    assert_eq!(c.follower_log(2).epochs(), vec![0, 1]);
    assert_eq!(c.leader.replica_state(n(2)).unwrap().log_end_offset, None, "a diverging fetch records nothing");
    let (decision, action) = c.fetch(2);
    assert!(matches!(decision, Some(FetchDecision::Read { fetch_offset: 2, .. })), "{decision:?}");
    assert_eq!(action, FollowerAction::Append);
    c.settle();
    assert_eq!(c.follower_log(2).epochs(), vec![0, 1, 2, 2]);
    assert_eq!(c.follower_log(2), &c.leader_log, "same records and the same epoch cache");
    assert_eq!((c.leader.high_watermark(), c.follower(2).high_watermark()), (4, 4));
}

/// The follower led epoch 2, which the leader never saw: the leader answers with epoch 1, which
/// the follower lacks, so it first cuts back to its own epoch 0's end, then compares again.
#[test]
fn divergence_takes_several_rounds_when_the_follower_lacks_the_leaders_epoch() {
    let leader_log = VecLog::from_epochs(&[0, 0, 1, 1, 3, 3]);
    let mut c = Cluster::new(1, 4, &[1, 2], 2, leader_log, vec![VecLog::from_epochs(&[0, 0, 2, 2, 2])]);
    let (decision, action) = c.fetch(2);
    assert!(
        matches!(decision, Some(FetchDecision::Diverging { epoch: LeaderEpoch(1), end_offset: 4, .. })),
        "{decision:?}"
    );
    assert_eq!(action, FollowerAction::Truncate { offset: 2 });
    let (decision, _) = c.fetch(2);
    assert!(matches!(decision, Some(FetchDecision::Read { fetch_offset: 2, .. })), "{decision:?}");
    c.settle();
    assert_eq!(c.follower_log(2).epochs(), vec![0, 0, 1, 1, 3, 3]);
}

/// Until a new leader appends, its log's epoch cache does not know its epoch; the leader must
/// still answer as if the epoch started at its log end.
#[test]
fn a_leader_that_has_not_written_in_its_epoch_answers_divergence_correctly() {
    // The follower holds a record of epoch 3, from a leader whose writes never reached node 1.
    let mut c = Cluster::new(1, 5, &[1, 2], 2, VecLog::from_epochs(&[0, 0]), vec![VecLog::from_epochs(&[0, 0, 3])]);
    let (decision, action) = c.fetch(2);
    assert!(
        matches!(decision, Some(FetchDecision::Diverging { epoch: LeaderEpoch(0), end_offset: 2, .. })),
        "{decision:?}"
    );
    assert_eq!(action, FollowerAction::Truncate { offset: 2 }, "never below the committed 0..2");

    // The follower led epoch 1 and wrote one more record than reached the leader.
    let mut c =
        Cluster::new(1, 2, &[1, 2], 2, VecLog::from_epochs(&[0, 0, 1]), vec![VecLog::from_epochs(&[0, 0, 1, 1])]);
    let (decision, action) = c.fetch(2);
    assert!(
        matches!(decision, Some(FetchDecision::Diverging { epoch: LeaderEpoch(1), end_offset: 3, .. })),
        "{decision:?}"
    );
    assert_eq!(action, FollowerAction::Truncate { offset: 3 });
    c.produce(1).unwrap();
    c.settle();
    assert_eq!(c.follower_log(2).epochs(), vec![0, 0, 1, 2]);
}

#[test]
fn a_lagging_follower_leaves_the_isr_after_the_lag_time() {
    let mut c = Cluster::new(1, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    let settled = c.now;
    // Idle and at the leader's end: in sync however long it is quiet.
    c.tick(sum(&[LAG, LAG]));
    assert_eq!(c.leader.pending_isr_change(), None);

    c.produce(1).unwrap();
    c.fetch(2);
    c.fetch(2);
    // 3 last caught up when it fetched up to the leader's end, at `settled`.
    assert_eq!(c.leader.poll_timeout(), Some(settled + sum(&[LAG, NS])));
    c.now = settled;
    c.tick(LAG);
    assert_eq!(c.leader.pending_isr_change(), None, "exactly the lag time is still in sync");
    c.tick(NS);
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2])));
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2]))));
    assert_eq!(c.leader.isr(), nodes(&[1, 2]));
    assert_eq!(c.leader.partition_epoch(), c.registration.partition_epoch);
}

#[test]
fn a_follower_that_keeps_reaching_the_previous_leader_end_stays_in_the_isr() {
    let mut c = Cluster::new(1, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    c.fetch_records_max = 1;
    // Every 10 s one record arrives and each follower fetches one: always one behind, but
    // always up to where the leader was at its previous fetch.
    for _ in 0..10 {
        c.produce(1).unwrap();
        c.fetch(2);
        c.fetch(3);
        c.tick(Duration::from_secs(10));
        assert_eq!(c.leader.pending_isr_change(), None);
    }
    // 3 stops: after the lag time it goes.
    for _ in 0..4 {
        c.produce(1).unwrap();
        c.fetch(2);
        c.tick(Duration::from_secs(10));
    }
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2]))));
}

/// Leader epoch 1 starts at offset 5 with a stale high watermark of 3; follower 3 is outside
/// the ISR with only three records.
#[test]
fn a_follower_joins_only_after_reaching_this_epochs_start_and_fetching_in_this_epoch() {
    let logs = vec![VecLog::from_epochs(&[0; 5]), VecLog::from_epochs(&[0; 3])];
    let mut c = Cluster::new(1, 1, &[1, 2], 3, VecLog::from_epochs(&[0; 5]), logs);
    c.tick(Duration::from_millis(1));
    assert_eq!(c.leader.pending_isr_change(), None, "3 has not fetched in this epoch");
    c.fetch_records_max = 1;
    c.fetch(3); // reports 3: at the high watermark, below the epoch start
    assert_eq!(c.leader.pending_isr_change(), None);
    c.fetch(3); // reports 4
    assert_eq!(c.leader.pending_isr_change(), None);
    c.fetch(3); // reports 5
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2, 3])));
    assert_eq!(c.controller_round(), Some(Ok(nodes(&[1, 2, 3]))));
    assert_eq!(c.leader.isr(), nodes(&[1, 2, 3]));
}

#[test]
fn a_follower_joins_only_after_reaching_the_high_watermark() {
    let logs = vec![VecLog::from_epochs(&[0; 2]), VecLog::from_epochs(&[0; 2])];
    let mut c = Cluster::new(1, 1, &[1, 2], 2, VecLog::from_epochs(&[0; 2]), logs);
    c.produce(4).unwrap();
    c.fetch_records_max = 2;
    for _ in 0..3 {
        c.fetch(2);
    }
    assert_eq!(c.leader.high_watermark(), 6);
    c.fetch(3); // reports 2: past the epoch start, below the high watermark
    assert_eq!(c.leader.pending_isr_change(), None);
    c.fetch(3); // reports 4
    assert_eq!(c.leader.pending_isr_change(), None);
    c.fetch(3); // reports 6
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2, 3])));
}

/// While a change is in flight the high watermark counts the maximal ISR: the member being
/// removed until the removal commits, the member being added from the moment it is proposed.
#[test]
fn the_high_watermark_counts_the_maximal_isr_while_a_change_is_in_flight() {
    let mut c = Cluster::new(1, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    c.produce(4).unwrap();
    c.fetch(2);
    c.fetch(2);
    c.tick(sum(&[LAG, NS]));
    let shrink = c.leader.poll_isr_change(c.now).expect("a shrink");
    assert_eq!(shrink.request.new_isr, nodes(&[1, 2]));
    assert_eq!(c.leader.maximal_isr(), nodes(&[1, 2, 3]));
    c.fetch(2);
    assert_eq!(c.leader.high_watermark(), 0, "3 may still be in the controller's ISR");
    assert_eq!(c.answer(&shrink), Ok(nodes(&[1, 2])));
    assert_eq!(c.leader.high_watermark(), 4);

    // 3 returns and is proposed; once it is no longer "caught up" by time, only the maximal
    // ISR still holds the high watermark to its offset.
    c.fetch(3); // reports 0
    c.fetch(3); // reports 4: joins
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion");
    assert_eq!(expand.request.new_isr, nodes(&[1, 2, 3]));
    c.tick(sum(&[LAG, Duration::from_secs(1)]));
    c.produce(2).unwrap();
    c.fetch(2);
    c.fetch(2);
    assert_eq!(c.leader.high_watermark(), 4, "3 is being added and holds only 0..4");
    assert_eq!(c.answer(&expand), Ok(nodes(&[1, 2, 3])));
    c.settle();
    assert_eq!(c.leader.high_watermark(), 6);
}

#[test]
fn controller_refusals_wait_for_metadata_or_retry() {
    let mut c = Cluster::new(1, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    c.produce(1).unwrap();
    c.fetch(2);
    c.fetch(2);
    c.tick(sum(&[LAG, NS]));
    assert_eq!(c.leader.pending_isr_change().map(|r| r.new_isr.clone()), Some(nodes(&[1, 2])));
    // Meanwhile the controller fences broker 3 itself: the leader's compare-and-set fails.
    let active = nodes(&[1, 2]);
    let eligibility =
        keel_metadata::Eligibility { min_isr: 1, unclean_leader_election: false, active: &active, mutation: None };
    assert!(c.registration.remove_replica(n(3), &eligibility));
    assert_eq!(c.controller_round(), Some(Err(ErrorCode::InvalidUpdateVersion)));
    c.tick(Duration::from_secs(1));
    assert_eq!(c.leader.poll_isr_change(c.now), None, "waits for metadata");
    assert!(c.leader.pending_isr_change().is_some());
    assert_eq!(c.leader.handle_metadata_update(c.now, &c.registration.clone(), c.min_isr), MetadataOutcome::Applied);
    assert_eq!((c.leader.isr(), c.leader.pending_isr_change()), (&nodes(&[1, 2])[..], None));
    assert_eq!(c.leader.handle_metadata_update(c.now, &c.registration.clone(), c.min_isr), MetadataOutcome::Stale);

    // A retriable failure is sent again after the backoff; an answer to another request is ignored.
    c.fetch(3);
    c.fetch(3);
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion");
    let mut other = expand.clone();
    other.request.new_isr = nodes(&[1]);
    c.leader.handle_isr_change_result(c.now, &other.request, Ok((PartitionEpoch(99), nodes(&[1]))));
    assert_eq!(c.leader.isr(), nodes(&[1, 2]));
    c.leader.handle_isr_change_result(c.now, &expand.request, Err(ErrorCode::RequestTimedOut));
    assert_eq!(c.leader.poll_isr_change(c.now), None);
    assert_eq!(c.leader.poll_timeout(), Some(c.now + Duration::from_millis(50)));
    c.tick(Duration::from_millis(50));
    assert_eq!(c.leader.poll_isr_change(c.now), Some(expand.clone()));

    // INELIGIBLE_REPLICA drops the change; it is proposed again only after the backoff, on the
    // follower's next fetch (a tick alone adds nobody, as in Kafka).
    c.leader.handle_isr_change_result(c.now, &expand.request, Err(ErrorCode::IneligibleReplica));
    assert_eq!(c.leader.pending_isr_change(), None);
    c.tick(Duration::from_millis(49));
    c.fetch(3);
    assert_eq!(c.leader.pending_isr_change(), None);
    c.tick(Duration::from_millis(1));
    assert_eq!(c.leader.pending_isr_change(), None, "no fetch since the backoff ended");
    c.fetch(3);
    assert_eq!(c.leader.pending_isr_change(), Some(&expand.request));
}

/// A follower that stopped fetching leaves the ISR once it lags too long, and does not come
/// back until it fetches again, even while the high watermark it reached is frozen (before,
/// every tick re-added it from what it had last fetched, and it left and joined the ISR over
/// and over).
#[test]
fn a_follower_that_stopped_fetching_rejoins_the_isr_only_by_fetching() {
    let mut c = Cluster::new(3, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    c.produce(1).unwrap();
    c.fetch(2);
    c.fetch(2);
    // Broker 3 is gone: it fetched offset 0 last, which is still the high watermark (min ISR 3).
    c.tick(sum(&[LAG, NS]));
    let shrink = c.leader.poll_isr_change(c.now).expect("a shrink");
    assert_eq!(c.answer(&shrink), Ok(nodes(&[1, 2])));
    assert_eq!(c.leader.high_watermark(), 0, "frozen below min ISR");
    for _ in 0..10 {
        c.tick(Duration::from_secs(1));
        assert_eq!(c.leader.poll_isr_change(c.now), None, "3 has not fetched since it left");
    }
    c.fetch(3);
    let expand = c.leader.poll_isr_change(c.now).expect("3 fetched up to the high watermark");
    assert_eq!(expand.request.new_isr, nodes(&[1, 2, 3]));
}

#[test]
fn fetches_with_a_stale_or_unknown_leader_epoch_or_from_strangers_are_refused() {
    let mut c = Cluster::new(1, 5, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    let fetch = |replica: i32, epoch: Option<i32>| FetchRequest {
        replica: n(replica),
        fetch_offset: 0,
        last_fetched_epoch: None,
        current_leader_epoch: epoch.map(LeaderEpoch),
        broker_epoch: None,
    };
    assert_eq!(c.raw_fetch(fetch(2, Some(4))), FetchDecision::Error(ErrorCode::FencedLeaderEpoch));
    assert_eq!(c.raw_fetch(fetch(2, Some(6))), FetchDecision::Error(ErrorCode::UnknownLeaderEpoch));
    assert_eq!(c.raw_fetch(fetch(9, Some(5))), FetchDecision::Error(ErrorCode::NotLeaderOrFollower));
    assert_eq!(c.raw_fetch(fetch(1, Some(5))), FetchDecision::Error(ErrorCode::NotLeaderOrFollower));
    assert_eq!(c.leader.replica_state(n(2)).unwrap().log_end_offset, None, "refused fetches record nothing");
    assert!(matches!(c.raw_fetch(fetch(2, None)), FetchDecision::Read { fetch_offset: 0, .. }));

    // The follower's side: an unknown epoch backs off; a fenced one waits for metadata.
    let (follower, log) = c.followers.get_mut(&n(2)).unwrap();
    let now = c.now;
    let action = respond(follower, log, now, FetchResponse::Error(ErrorCode::UnknownLeaderEpoch), &[]);
    let until = now + Duration::from_secs(1);
    assert_eq!(action, FollowerAction::Backoff { until });
    assert_eq!(follower.poll_timeout(), Some(until));
    assert_eq!(follower.next_fetch(until - NS, log), None);
    let request = follower.next_fetch(until, log).expect("backoff over");
    assert_eq!(request.current_leader_epoch, Some(LeaderEpoch(5)));
    let action =
        follower.handle_fetch_response(until, &request, FetchResponse::Error(ErrorCode::FencedLeaderEpoch), log);
    assert_eq!(action, FollowerAction::AwaitMetadata);
    assert!(follower.is_awaiting_metadata());
    assert_eq!(follower.next_fetch(until + LAG, log), None);

    // An answer to a request from another epoch is stale.
    let (follower, log) = c.followers.get_mut(&n(3)).unwrap();
    let mut old = follower.next_fetch(now, log).unwrap();
    old.current_leader_epoch = Some(LeaderEpoch(4));
    let records = FetchResponse::Records { high_watermark: 0, log_start_offset: 0, records_end: 3 };
    assert_eq!(follower.handle_fetch_response(now, &old, records, log), FollowerAction::Stale);
}

#[test]
fn fetches_outside_the_leaders_log_are_out_of_range_or_diverging() {
    let mut c = Cluster::new(1, 1, &[1, 2], 0, VecLog::from_epochs(&[0; 3]), vec![VecLog::new()]);
    let fetch = |offset: i64, last_fetched_epoch: Option<i32>| FetchRequest {
        replica: n(2),
        fetch_offset: offset,
        last_fetched_epoch: last_fetched_epoch.map(LeaderEpoch),
        current_leader_epoch: Some(LeaderEpoch(1)),
        broker_epoch: None,
    };
    assert_eq!(c.raw_fetch(fetch(5, None)), FetchDecision::OffsetOutOfRange { log_start_offset: 0, log_end_offset: 3 });
    assert!(matches!(
        c.raw_fetch(fetch(5, Some(1))),
        FetchDecision::Diverging { epoch: LeaderEpoch(1), end_offset: 3, .. }
    ));
    assert!(matches!(
        c.raw_fetch(fetch(5, Some(0))),
        FetchDecision::Diverging { epoch: LeaderEpoch(0), end_offset: 3, .. }
    ));
    assert!(matches!(c.raw_fetch(fetch(3, Some(0))), FetchDecision::Read { fetch_offset: 3, .. }));
    c.leader_log.delete_records_before(2);
    assert_eq!(c.raw_fetch(fetch(1, None)), FetchDecision::OffsetOutOfRange { log_start_offset: 2, log_end_offset: 3 });

    // The follower repairs from the bounds the answer carries.
    let registration = registration(2, 1, &[1, 2]);
    let now = c.now;
    let mut log = VecLog::from_epochs(&[0; 5]);
    let mut follower = Follower::new(config(2, 1), &registration, &log, 4).unwrap();
    let out_of_range = |start, end| FetchResponse::OffsetOutOfRange { log_start_offset: start, log_end_offset: end };
    let action = respond(&mut follower, &mut log, now, out_of_range(0, 3), &[]);
    assert_eq!(
        (action, log.log_end_offset(), follower.high_watermark()),
        (FollowerAction::Truncate { offset: 3 }, 3, 3)
    );
    let action = respond(&mut follower, &mut log, now, out_of_range(0, 9), &[]);
    assert_eq!(action, FollowerAction::Continue, "in range by now");
    let action = respond(&mut follower, &mut log, now, out_of_range(7, 9), &[]);
    assert_eq!(action, FollowerAction::ResetTo { offset: 7 });
    assert_eq!((log.log_start_offset(), log.log_end_offset(), follower.high_watermark()), (7, 7, 7));
}

/// A follower whose records all lie below the leader's log start, in an epoch the leader's
/// log no longer knows, cannot be compared: retention removed what the leader's epoch cache
/// knew there. Kafka's leader answers as if the follower agreed, so a record an old leader
/// wrote there, and never committed, survives with the producer state it left (the
/// simulator's seed 31824530 acknowledged a retry as a duplicate of such a record). keel
/// answers OFFSET_OUT_OF_RANGE, and the follower starts over at the leader's log start.
#[test]
fn a_follower_whose_records_all_lie_below_the_leaders_log_start_starts_over_there() {
    let leader_log = VecLog::from_epochs(&[1, 1]);
    let mut c = Cluster::new(1, 3, &[1, 2], 0, leader_log, vec![VecLog::new()]);
    c.leader_log.delete_records_before(2);
    let fetch = |last_fetched_epoch: i32| FetchRequest {
        replica: n(2),
        fetch_offset: 2,
        last_fetched_epoch: Some(LeaderEpoch(last_fetched_epoch)),
        current_leader_epoch: Some(LeaderEpoch(3)),
        broker_epoch: None,
    };
    let out_of_range = FetchDecision::OffsetOutOfRange { log_start_offset: 2, log_end_offset: 2 };
    assert_eq!(c.raw_fetch(fetch(0)), out_of_range, "epoch 0 is older than anything the leader knows");
    assert_eq!(c.leader.replica_state(n(2)).unwrap().log_end_offset, None, "and the fetch records nothing");
    // The leader's log held a record of its latest epoch just below its start, as the
    // follower does: they agree, and the follower reads on.
    assert!(matches!(c.raw_fetch(fetch(1)), FetchDecision::Read { fetch_offset: 2, .. }));

    // The follower starts over at the leader's log start: its records and epochs are gone.
    let mut log = VecLog::from_epochs(&[0, 0]);
    let mut follower = Follower::new(config(2, 1), &registration(2, 3, &[1, 2]), &log, 2).unwrap();
    let answer = FetchResponse::OffsetOutOfRange { log_start_offset: 2, log_end_offset: 2 };
    assert_eq!(respond(&mut follower, &mut log, c.now, answer, &[]), FollowerAction::ResetTo { offset: 2 });
    assert_eq!((log.log_start_offset(), log.log_end_offset(), log.latest_epoch()), (2, 2, None));
}

#[test]
fn the_follower_high_watermark_follows_the_leader_and_its_own_log_and_never_goes_back() {
    let registration = registration(2, 1, &[1, 2]);
    let now = keel_types::Instant::ZERO;
    let mut log = VecLog::from_epochs(&[0; 5]);
    let follower = Follower::new(config(2, 1), &registration, &log, 9).unwrap();
    assert_eq!(follower.high_watermark(), 5, "clamped into the log");
    let mut follower = Follower::new(config(2, 1), &registration, &log, 0).unwrap();
    let records =
        |high_watermark, records_end| FetchResponse::Records { high_watermark, log_start_offset: 0, records_end };
    let two = [LeaderEpoch(1); 2];
    assert_eq!(respond(&mut follower, &mut log, now, records(8, 7), &two), FollowerAction::Append);
    assert_eq!(follower.high_watermark(), 7, "min(leader's 8, own end 7)");
    assert_eq!(respond(&mut follower, &mut log, now, records(3, 7), &[]), FollowerAction::Continue);
    assert_eq!(follower.high_watermark(), 7, "a lower leader high watermark does not move it back");
    let diverging = FetchResponse::Diverging { epoch: LeaderEpoch(1), end_offset: 6 };
    assert_eq!(respond(&mut follower, &mut log, now, diverging, &[]), FollowerAction::Truncate { offset: 6 });
    assert_eq!(follower.high_watermark(), 6, "a cut log takes the high watermark with it");
    assert!(Follower::new(config(1, 1), &registration, &log, 0).unwrap_err().0.contains("cannot follow"));
}

/// Random interleavings of produce, fetch (with random sizes), time and controller answers
/// from divergent starting logs; afterwards every fault is healed and replication must settle.
#[test]
fn random_interleavings_keep_the_invariants_and_converge() {
    for seed in 0..200 {
        let mut rng = Rng::new(seed);
        let leader_log = VecLog::from_epochs(&[0, 0, 1]);
        let logs = vec![VecLog::from_epochs(&[0, 0, 1, 1, 1]), VecLog::from_epochs(&[0, 0])];
        let min_isr = 1 + rng.below(2) as usize;
        let mut c = Cluster::new(min_isr, 2, &[1, 2], 2, leader_log, logs);
        let mut silent: Option<i32> = None;
        let mut high_watermark = c.leader.high_watermark();
        let mut waiting = std::collections::BTreeMap::new();
        for _ in 0..300 {
            match rng.below(10) {
                0 | 1 => {
                    if let Ok(end) = c.produce(1 + rng.below(3) as usize) {
                        let deadline = c.now + Duration::from_secs(rng.below(60));
                        let waiter = c.leader.add_waiter(c.now, end, deadline);
                        waiting.insert(waiter, end);
                    }
                }
                2..=5 => {
                    let id = 2 + rng.below(2) as i32;
                    if silent != Some(id) {
                        c.fetch_records_max = 1 + rng.below(4) as usize;
                        c.fetch(id);
                    }
                }
                6 | 7 => c.tick(Duration::from_secs(rng.below(20))),
                8 => {
                    c.controller_round();
                }
                _ => silent = if rng.below(2) == 0 { None } else { Some(2 + rng.below(2) as i32) },
            }
            assert!(c.leader.high_watermark() >= high_watermark, "seed {seed}: high watermark went back");
            high_watermark = c.leader.high_watermark();
            let committed = c.leader_log.slice(0, high_watermark);
            for member in c.leader.isr().to_vec() {
                if member != n(1) {
                    let log = c.follower_log(member.0);
                    assert_eq!(
                        log.slice(0, high_watermark),
                        committed,
                        "seed {seed}: ISR member {member} misses committed records"
                    );
                }
            }
            for (follower, log) in c.followers.values() {
                assert!(follower.high_watermark() <= high_watermark, "seed {seed}");
                assert_eq!(log.slice(0, follower.high_watermark()), c.leader_log.slice(0, follower.high_watermark()));
            }
            for (waiter, result) in c.leader.drain_completed() {
                let end = waiting.remove(&waiter).expect("completed once");
                if result.is_ok() {
                    assert!(end <= high_watermark, "seed {seed}: acknowledged {end} above the high watermark");
                }
            }
        }
        // Heal: everyone fetches everything, the controller answers, time passes.
        c.fetch_records_max = usize::MAX;
        for _ in 0..20 {
            c.tick(Duration::from_secs(1));
            c.settle();
        }
        assert_eq!(c.follower_log(2), &c.leader_log, "seed {seed}");
        assert_eq!(c.follower_log(3), &c.leader_log, "seed {seed}");
        let mut isr = c.leader.isr().to_vec();
        isr.sort();
        assert_eq!(isr, nodes(&[1, 2, 3]), "seed {seed}");
        assert_eq!(c.leader.high_watermark(), c.leader_log.log_end_offset(), "seed {seed}");
        c.tick(Duration::from_secs(60));
        for (waiter, _) in c.leader.drain_completed() {
            waiting.remove(&waiter).expect("completed once");
        }
        assert_eq!((c.leader.waiting(), waiting.len()), (0, 0), "seed {seed}");
    }
}

#[test]
fn a_fenced_follower_is_not_proposed_for_the_isr_and_does_not_hold_the_high_watermark() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.produce(3).unwrap();
    c.settle();
    assert_eq!(c.leader.high_watermark(), 3);
    // Broker 3 dies while caught up; the controller fences it and takes it out of the ISR.
    let mut fenced = registration(3, c.epoch().0, &[1, 2]);
    fenced.partition_epoch = c.leader.partition_epoch().next();
    assert_eq!(c.leader.handle_metadata_update(c.now, &fenced, c.min_isr), MetadataOutcome::Applied);
    c.registration = fenced;
    c.leader.handle_ineligible_replicas(c.now, [n(3)]);
    c.produce(2).unwrap();
    c.fetch(2);
    c.fetch(2);
    c.leader.handle_tick(c.now);
    assert_eq!(c.leader.poll_isr_change(c.now), None, "a fenced replica is never proposed");
    assert_eq!(c.leader.high_watermark(), 5, "nor waited for, though it looked caught up");

    // Unfenced again, it joins once it has fetched in this epoch.
    c.leader.handle_ineligible_replicas(c.now, []);
    c.fetch(3);
    c.fetch(3);
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion");
    assert_eq!(expand.request.new_isr, nodes(&[1, 2, 3]));
}

#[test]
fn a_restarted_follower_is_not_vouched_for_on_what_it_fetched_before_its_restart() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.leader.handle_replica_epochs(c.now, [(n(2), BrokerEpoch(1)), (n(3), BrokerEpoch(1))]);
    c.produce(4).unwrap();
    c.settle();
    assert_eq!(c.leader.high_watermark(), 4);
    // Broker 3 crashes (losing what it fetched), is fenced and leaves the ISR, then registers
    // again with a new broker epoch and is unfenced. Its first fetch after the restart is lost:
    // the leader's state for it is still from before the crash.
    let mut shrunk = registration(3, c.epoch().0, &[1, 2]);
    shrunk.partition_epoch = c.leader.partition_epoch().next();
    c.leader.handle_metadata_update(c.now, &shrunk, c.min_isr);
    c.registration = shrunk;
    c.leader.handle_ineligible_replicas(c.now, [n(3)]);
    c.leader.handle_replica_epochs(c.now, [(n(2), BrokerEpoch(1)), (n(3), BrokerEpoch(2))]);
    c.leader.handle_ineligible_replicas(c.now, []);
    c.leader.handle_tick(c.now);
    assert_eq!(c.leader.poll_isr_change(c.now), None, "nothing vouches for the new process yet");
    assert_eq!(c.leader.replica_state(n(3)).and_then(|s| s.log_end_offset), None);
    // Once the new process fetches, it joins on what it really holds.
    c.fetch(3);
    c.fetch(3);
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion");
    assert_eq!(expand.request.new_isr, nodes(&[1, 2, 3]));
}

/// F1 (issue 17), defence in depth: a registration older than the epochs in the local log is
/// stale metadata (a snapshot replayed at restart); neither leading nor following it is safe.
#[test]
fn a_replica_refuses_a_role_in_an_epoch_older_than_its_log() {
    let log = VecLog::from_epochs(&[1, 1, 3, 3]);
    let stale = registration(3, 2, &[1, 2, 3]);
    let leading = Leader::new(config(1, 2), &stale, Instant::from_millis(1), &log, 4);
    assert!(leading.is_err_and(|e| e.0.contains("stale metadata")), "a leader in epoch 2 over a log of epoch 3");
    let following = Follower::new(config(2, 2), &stale, &log, 4);
    assert!(following.is_err_and(|e| e.0.contains("stale metadata")), "a follower in epoch 2 over epoch 3");
    // The registration that wrote epoch 3 (or a later one) is taken up.
    assert!(Leader::new(config(1, 2), &registration(3, 3, &[1, 2, 3]), Instant::from_millis(1), &log, 4).is_ok());
}

/// F4 (issue 17): an ISR addition vouches for the broker epoch of the process whose fetches
/// caught the follower up, fixed when it is proposed. If that follower restarts before the
/// change is sent (or while it waits for a retry), the change is dropped rather than sent with
/// the new process's epoch: the new process may have lost its tail.
#[test]
fn an_isr_addition_vouches_for_the_process_that_caught_up_and_is_dropped_when_it_restarts() {
    let mut c = Cluster::new(1, 1, &[1, 2], 0, VecLog::new(), empty_logs());
    c.produce(4).unwrap();
    let fetch = |offset: i64, broker_epoch: i64| FetchRequest {
        replica: n(3),
        fetch_offset: offset,
        last_fetched_epoch: (offset > 0).then_some(LeaderEpoch(1)),
        current_leader_epoch: Some(LeaderEpoch(1)),
        broker_epoch: Some(BrokerEpoch(broker_epoch)),
    };
    c.fetch(2);
    c.fetch(2);
    assert_eq!(c.leader.high_watermark(), 4);
    // Broker 3's process with broker epoch 7 fetches everything: it is proposed, vouched as 7.
    c.raw_fetch(fetch(0, 7));
    c.raw_fetch(fetch(4, 7));
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion");
    assert_eq!(
        (expand.request.new_isr.clone(), expand.added.clone()),
        (nodes(&[1, 2, 3]), vec![(n(3), BrokerEpoch(7))])
    );
    // The AlterPartition times out and waits for its retry; broker 3 restarts meanwhile with
    // an empty log, and its new process (broker epoch 8) fetches from 0.
    c.leader.handle_isr_change_result(c.now, &expand.request, Err(ErrorCode::RequestTimedOut));
    c.raw_fetch(fetch(0, 8));
    c.tick(Duration::from_secs(1));
    let retried = c.leader.poll_isr_change(c.now);
    assert!(
        retried.as_ref().is_none_or(|p| !p.added.contains(&(n(3), BrokerEpoch(8)))),
        "the new process is vouched for on what the old one fetched: {retried:?}"
    );
    assert_eq!(c.leader.replica_state(n(3)).and_then(|s| s.log_end_offset), Some(0));
    // Once the new process catches up it is proposed as itself.
    c.raw_fetch(fetch(4, 8));
    let expand = c.leader.poll_isr_change(c.now).expect("an expansion of the new process");
    assert_eq!(expand.added, vec![(n(3), BrokerEpoch(8))]);
}

/// F5 (issue 17): the controller may accept an ISR shrink under a min ISR the leader has not
/// replayed yet (raised from 2 to 3). Had the leader applied the answer with its old min ISR,
/// the high watermark would advance on two replicas while the controller holds that ISR below
/// min ISR and keeps the removed replica in the ELR as if it had every committed record. The
/// shrink takes effect only with the metadata that carries it, and that metadata's min ISR.
#[test]
fn an_accepted_isr_shrink_applies_with_the_min_isr_of_the_metadata_that_carries_it() {
    let mut c = Cluster::new(2, 1, &[1, 2, 3], 0, VecLog::new(), empty_logs());
    c.settle();
    c.produce(4).unwrap();
    c.fetch(2);
    c.fetch(2);
    c.tick(sum(&[LAG, NS]));
    let shrink = c.leader.poll_isr_change(c.now).expect("a shrink");
    assert_eq!(shrink.request.new_isr, nodes(&[1, 2]));
    // The controller has min ISR 3 by now and accepts the shrink.
    c.min_isr = 3;
    assert_eq!(c.answer_only(&shrink.request), Ok(nodes(&[1, 2])));
    c.fetch(2);
    assert_eq!(c.leader.high_watermark(), 0, "the high watermark advanced without broker 3 under min ISR 3");
    let waiter = c.leader.add_waiter(c.now, 4, c.now + Duration::from_secs(30));
    // The metadata arrives: ISR [1, 2] under min ISR 3. acks=all requests cannot complete.
    let registration = c.registration.clone();
    c.leader.handle_metadata_update(c.now, &registration, 3);
    assert_eq!(c.leader.isr(), nodes(&[1, 2]));
    assert_eq!(c.leader.high_watermark(), 0);
    assert_eq!(c.leader.drain_completed(), vec![(waiter, Err(ErrorCode::NotEnoughReplicasAfterAppend))]);
    assert_eq!(c.leader.check_produce(-1), Err(ErrorCode::NotEnoughReplicas));
}

/// Every planted bug in keel-replication's leader fails at least one of the tests above: the
/// checks they remove are needed.
/// A test by name.
type NamedTest = (&'static str, fn());

#[test]
fn every_mutation_of_the_leader_fails_a_test() {
    let table: [(Mutation, &[NamedTest]); 5] = [
        (
            Mutation::ExpandBelowEpochStart,
            &[(
                "a_follower_joins_only_after_reaching_this_epochs_start_and_fetching_in_this_epoch",
                a_follower_joins_only_after_reaching_this_epochs_start_and_fetching_in_this_epoch,
            )],
        ),
        (
            Mutation::KeepFollowerStateOnRestart,
            &[
                (
                    "a_restarted_follower_is_not_vouched_for_on_what_it_fetched_before_its_restart",
                    a_restarted_follower_is_not_vouched_for_on_what_it_fetched_before_its_restart,
                ),
                (
                    "an_isr_addition_vouches_for_the_process_that_caught_up_and_is_dropped_when_it_restarts",
                    an_isr_addition_vouches_for_the_process_that_caught_up_and_is_dropped_when_it_restarts,
                ),
            ],
        ),
        (
            Mutation::NoDivergenceCheck,
            &[(
                "a_follower_truncates_an_uncommitted_tail_from_an_older_epoch",
                a_follower_truncates_an_uncommitted_tail_from_an_older_epoch,
            )],
        ),
        (
            Mutation::IgnoreMinIsr,
            &[(
                "high_watermark_is_frozen_while_the_isr_is_below_min_isr",
                high_watermark_is_frozen_while_the_isr_is_below_min_isr,
            )],
        ),
        (
            Mutation::TrustBelowLogStart,
            &[(
                "a_follower_whose_records_all_lie_below_the_leaders_log_start_starts_over_there",
                a_follower_whose_records_all_lie_below_the_leaders_log_start_starts_over_there,
            )],
        ),
    ];
    for (mutation, tests) in table {
        for (name, test) in tests {
            common::MUTATION.set(Some(mutation));
            let outcome = std::panic::catch_unwind(test);
            common::MUTATION.set(None);
            assert!(outcome.is_err(), "{name} passes with {mutation:?} planted");
        }
    }
}
