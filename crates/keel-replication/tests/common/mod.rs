//! A tiny deterministic harness: one leader, its followers, in-memory logs, and the
//! controller's partition rules from keel-metadata answering ISR changes. Every step is driven
//! explicitly by the test; invariants are checked after each one.

#![allow(dead_code)]

use std::collections::BTreeMap;

use keel_metadata::{AlterIsr, Eligibility, PartitionRegistration};
use keel_replication::testing::VecLog;
use keel_replication::{
    Config, FetchDecision, FetchRequest, FetchResponse, Follower, FollowerAction, IsrProposal, Leader, LocalLog,
    Mutation,
};
use keel_types::{Duration, ErrorCode, Instant, LeaderEpoch, NodeId, PartitionEpoch};

pub const LAG: Duration = Duration(30_000_000_000);

pub fn n(id: i32) -> NodeId {
    NodeId(id)
}

pub fn nodes(ids: &[i32]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

thread_local! {
    /// The planted bug every core this thread's harness builds runs with (mutation tests).
    pub static MUTATION: std::cell::Cell<Option<Mutation>> = const { std::cell::Cell::new(None) };
}

pub fn config(id: i32, min_isr: usize) -> Config {
    Config { min_isr, replica_lag_time_max: LAG, mutation: MUTATION.get(), ..Config::new(n(id)) }
}

/// A partition on replicas 1..=`replicas` led by node 1.
pub fn registration(replicas: i32, leader_epoch: i32, isr: &[i32]) -> PartitionRegistration {
    PartitionRegistration {
        replicas: (1..=replicas).map(NodeId).collect(),
        leader: Some(n(1)),
        leader_epoch: LeaderEpoch(leader_epoch),
        partition_epoch: PartitionEpoch(10),
        isr: nodes(isr),
        elr: Vec::new(),
        last_known_elr: Vec::new(),
    }
}

pub struct Cluster {
    pub now: Instant,
    pub min_isr: usize,
    /// The controller's view of the partition.
    pub registration: PartitionRegistration,
    pub leader_id: NodeId,
    pub leader: Leader,
    pub leader_log: VecLog,
    pub followers: BTreeMap<NodeId, (Follower, VecLog)>,
    /// Most records one fetch returns.
    pub fetch_records_max: usize,
}

impl Cluster {
    /// Node 1 leads `leader_epoch` with `leader_log`; nodes 2, 3, ... follow with their logs.
    /// `isr` is the committed ISR; high watermarks start at `high_watermark`.
    pub fn new(
        min_isr: usize,
        leader_epoch: i32,
        isr: &[i32],
        high_watermark: i64,
        leader_log: VecLog,
        follower_logs: Vec<VecLog>,
    ) -> Cluster {
        let registration = registration(follower_logs.len() as i32 + 1, leader_epoch, isr);
        let now = Instant::from_millis(1_000);
        let leader = Leader::new(config(1, min_isr), &registration, now, &leader_log, high_watermark).unwrap();
        let followers = follower_logs
            .into_iter()
            .zip(2..)
            .map(|(log, id)| {
                let follower = Follower::new(config(id, min_isr), &registration, &log, high_watermark).unwrap();
                (n(id), (follower, log))
            })
            .collect();
        let cluster = Cluster {
            now,
            min_isr,
            registration,
            leader_id: n(1),
            leader,
            leader_log,
            followers,
            fetch_records_max: usize::MAX,
        };
        cluster.check();
        cluster
    }

    pub fn check(&self) {
        self.leader.check_invariants().unwrap();
        for (follower, log) in self.followers.values() {
            follower.check_invariants(log).unwrap();
        }
    }

    pub fn epoch(&self) -> LeaderEpoch {
        self.leader.leader_epoch()
    }

    /// The leader appends `count` records (acks=all checked first). Returns the new log end.
    pub fn produce(&mut self, count: usize) -> Result<i64, ErrorCode> {
        self.leader.check_produce(-1)?;
        let end = self.leader_log.append(self.epoch(), count);
        self.leader.handle_local_append(self.now, end);
        self.check();
        Ok(end)
    }

    /// One fetch round trip from follower `id`, with the broker's part carried out.
    pub fn fetch(&mut self, id: i32) -> (Option<FetchDecision>, FollowerAction) {
        let (follower, log) = self.followers.get_mut(&n(id)).expect("a follower");
        let Some(request) = follower.next_fetch(self.now, log) else {
            return (None, FollowerAction::Continue);
        };
        let decision = self.leader.handle_fetch(self.now, &request, &self.leader_log);
        let records = match decision {
            FetchDecision::Read { fetch_offset, .. } => {
                let end = self
                    .leader_log
                    .log_end_offset()
                    .min(fetch_offset.saturating_add(i64::try_from(self.fetch_records_max).unwrap_or(i64::MAX)));
                self.leader_log.slice(fetch_offset, end)
            }
            _ => Vec::new(),
        };
        let response = decision.response(request.fetch_offset + records.len() as i64);
        let (follower, log) = self.followers.get_mut(&n(id)).expect("a follower");
        let action = follower.handle_fetch_response(self.now, &request, response, log);
        apply(follower, log, &action, &records, self.now);
        self.check();
        (Some(decision), action)
    }

    /// A fetch request sent straight to the leader.
    pub fn raw_fetch(&mut self, request: FetchRequest) -> FetchDecision {
        let decision = self.leader.handle_fetch(self.now, &request, &self.leader_log);
        self.check();
        decision
    }

    /// Fetches from every follower until nothing changes any more.
    pub fn settle(&mut self) {
        for _ in 0..50 {
            let before = (self.leader.clone(), self.followers.clone());
            let ids: Vec<i32> = self.followers.keys().map(|k| k.0).collect();
            for id in ids {
                self.fetch(id);
            }
            self.controller_round();
            if before == (self.leader.clone(), self.followers.clone()) {
                return;
            }
        }
        panic!("replication did not settle: {:?}\n{:?}", self.leader, self.followers);
    }

    pub fn tick(&mut self, by: Duration) {
        self.now = self.now + by;
        self.leader.handle_tick(self.now);
        self.check();
    }

    /// Sends the leader's pending ISR change to the controller and hands the answer back.
    /// Returns the controller's answer.
    pub fn controller_round(&mut self) -> Option<Result<Vec<NodeId>, ErrorCode>> {
        let request = self.leader.poll_isr_change(self.now)?;
        Some(self.answer(&request))
    }

    /// The controller (keel-metadata's rules, every replica active) decides `proposal`, the
    /// leader hears the answer, and then (if accepted) replays the new registration.
    pub fn answer(&mut self, proposal: &IsrProposal) -> Result<Vec<NodeId>, ErrorCode> {
        let result = self.answer_only(&proposal.request);
        if result.is_ok() {
            let registration = self.registration.clone();
            self.leader.handle_metadata_update(self.now, &registration, self.min_isr);
            self.check();
        }
        result
    }

    /// The controller decides `request` and the leader hears the answer; the metadata log's
    /// copy of the change has not reached the leader yet.
    pub fn answer_only(&mut self, request: &AlterIsr) -> Result<Vec<NodeId>, ErrorCode> {
        let active = self.registration.replicas.clone();
        let eligibility =
            Eligibility { min_isr: self.min_isr, unclean_leader_election: false, active: &active, mutation: None };
        let result = self
            .registration
            .alter_isr(request, &eligibility)
            .map(|()| (self.registration.partition_epoch, self.registration.isr.clone()));
        self.leader.handle_isr_change_result(self.now, request, result.clone());
        self.check();
        result.map(|(_, isr)| isr)
    }

    pub fn follower_log(&self, id: i32) -> &VecLog {
        &self.followers[&n(id)].1
    }

    pub fn follower(&self, id: i32) -> &Follower {
        &self.followers[&n(id)].0
    }
}

/// What a follower's broker does with an action.
pub fn apply(
    follower: &mut Follower,
    log: &mut VecLog,
    action: &FollowerAction,
    records: &[LeaderEpoch],
    now: Instant,
) {
    match *action {
        FollowerAction::Append => {
            log.append_records(records);
        }
        FollowerAction::Truncate { offset } => {
            log.truncate_to(offset);
        }
        FollowerAction::ResetTo { offset } => log.reset_to(offset),
        FollowerAction::Continue
        | FollowerAction::Backoff { .. }
        | FollowerAction::AwaitMetadata
        | FollowerAction::Stale => return,
    }
    follower.handle_log_updated(now, log);
}

/// A response built by hand, for follower-only tests.
pub fn respond(
    follower: &mut Follower,
    log: &mut VecLog,
    now: Instant,
    response: FetchResponse,
    records: &[LeaderEpoch],
) -> FollowerAction {
    let request = follower.next_fetch(now, log).expect("a fetch");
    let action = follower.handle_fetch_response(now, &request, response, log);
    apply(follower, log, &action, records, now);
    follower.check_invariants(log).unwrap();
    action
}
