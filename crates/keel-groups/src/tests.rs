//! Scenario tests of the coordinator, with invariants checked after every step.

use super::*;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;

/// Drives a coordinator like the broker does: every persist completes at once (unless held),
/// answers are collected by token.
struct Harness {
    coordinator: Coordinator,
    now: Instant,
    next_token: Token,
    answers: BTreeMap<Token, Response>,
    persisted: Vec<Record>,
    hold_persists: bool,
    held: Vec<u64>,
}

impl Harness {
    fn new(initial_delay_ms: i32) -> Harness {
        let config = Config { initial_rebalance_delay_ms: initial_delay_ms, ..Config::default() };
        Harness {
            coordinator: Coordinator::new(config, 7, 1_700_000_000_000).unwrap(),
            now: Instant::ZERO,
            next_token: 0,
            answers: BTreeMap::new(),
            persisted: Vec::new(),
            hold_persists: false,
            held: Vec::new(),
        }
    }

    fn settle(&mut self) {
        loop {
            self.coordinator.check_invariants();
            let effects = self.coordinator.drain_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Respond { token, response } => {
                        assert!(self.answers.insert(token, response).is_none(), "token {token} answered twice");
                    }
                    Effect::Persist { id, records, .. } => {
                        self.persisted.extend(records);
                        if self.hold_persists {
                            self.held.push(id);
                        } else {
                            self.coordinator.handle_persisted(id, true, self.now);
                        }
                    }
                }
            }
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    fn advance(&mut self, ms: u64) {
        self.now = self.now + Duration::from_millis(ms);
        self.coordinator.handle_tick(self.now);
        self.settle();
    }

    fn join(&mut self, member_id: &str, instance: Option<&str>, protocols: &[&str]) -> Token {
        let token = self.token();
        let request = JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            group_instance_id: instance.map(str::to_string),
            client_id: "client".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: "consumer".into(),
            protocols: protocols.iter().map(|p| (p.to_string(), Bytes::from(format!("meta-{p}")))).collect(),
            require_known_member_id: true,
        };
        self.coordinator.handle_join(self.now, token, request);
        self.settle();
        token
    }

    fn join_answer(&self, token: Token) -> Option<JoinResponse> {
        match self.answers.get(&token) {
            Some(Response::Join(r)) => Some(r.clone()),
            None => None,
            other => panic!("not a join answer: {other:?}"),
        }
    }

    /// Two-phase join of a new dynamic member; returns its member id (join still pending or
    /// answered, see the returned token).
    fn new_member(&mut self, protocols: &[&str]) -> (String, Token) {
        let first = self.join("", None, protocols);
        let answer = self.join_answer(first).expect("answered at once");
        assert_eq!(answer.error, ErrorCode::MemberIdRequired);
        let id = answer.member_id;
        let token = self.join(&id, None, protocols);
        (id, token)
    }

    fn sync(&mut self, member_id: &str, generation_id: i32, assignments: &[(&str, &str)]) -> Token {
        let token = self.token();
        let request = SyncRequest {
            group_id: "g".into(),
            generation_id,
            member_id: member_id.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments.iter().map(|(m, a)| (m.to_string(), Bytes::from(a.to_string()))).collect(),
        };
        self.coordinator.handle_sync(self.now, token, request);
        self.settle();
        token
    }

    fn sync_answer(&self, token: Token) -> Option<SyncResponse> {
        match self.answers.get(&token) {
            Some(Response::Sync(r)) => Some(r.clone()),
            None => None,
            other => panic!("not a sync answer: {other:?}"),
        }
    }

    fn heartbeat(&mut self, member_id: &str, instance: Option<&str>, generation_id: i32) -> ErrorCode {
        let token = self.token();
        self.coordinator.handle_heartbeat(self.now, token, "g", member_id, instance, generation_id);
        self.settle();
        match self.answers[&token] {
            Response::Heartbeat(e) => e,
            ref other => panic!("not a heartbeat answer: {other:?}"),
        }
    }

    fn commit(&mut self, member_id: &str, generation_id: i32, offset: i64) -> Token {
        let token = self.token();
        let offsets = vec![OffsetToCommit { topic: "t".into(), partition: 0, offset, leader_epoch: 0, metadata: None }];
        self.coordinator.handle_offset_commit(
            self.now,
            token,
            "g",
            generation_id,
            member_id,
            None,
            offsets,
            &BTreeSet::new(),
        );
        self.settle();
        token
    }

    fn commit_errors(&self, token: Token) -> Option<Vec<ErrorCode>> {
        match self.answers.get(&token) {
            Some(Response::OffsetCommit(r)) => Some(r.iter().map(|p| p.error).collect()),
            None => None,
            other => panic!("not a commit answer: {other:?}"),
        }
    }
}

#[test]
fn offsets_partition_matches_kafka_hashing() {
    assert_eq!(offsets_partition("a", 50), 47);
    assert_eq!(offsets_partition("my-group", 50), 12);
    assert_eq!(offsets_partition("console-consumer-12345", 50), 6);
    assert_eq!(offsets_partition("polygenelubricants", 50), 0, "i32::MIN hash");
}

#[test]
fn first_member_joins_leads_and_gets_its_assignment() {
    let mut h = Harness::new(0);
    let (id, join) = h.new_member(&["range", "roundrobin"]);
    let answer = h.join_answer(join).expect("single member: join completes at once");
    assert_eq!((answer.error, answer.generation_id, answer.leader.as_str()), (ErrorCode::None, 1, id.as_str()));
    assert_eq!(answer.protocol_name.as_deref(), Some("range"));
    assert_eq!(answer.members.len(), 1, "the leader sees the roster");
    assert_eq!(answer.members[0].metadata, Bytes::from("meta-range"));
    let sync = h.sync(&id, 1, &[(&id, "p0,p1")]);
    assert_eq!(h.sync_answer(sync).unwrap().assignment, Bytes::from("p0,p1"));
    assert_eq!(h.coordinator.group_state("g"), Some(GroupState::Stable));
    assert_eq!(h.heartbeat(&id, None, 1), ErrorCode::None);
    assert_eq!(h.heartbeat(&id, None, 0), ErrorCode::IllegalGeneration);
    assert_eq!(h.heartbeat("stranger", None, 1), ErrorCode::UnknownMemberId);
    assert!(matches!(h.persisted.last(), Some(Record::Group { value: Some(_), .. })), "the group is persisted at sync");
}

#[test]
fn a_second_member_triggers_a_rebalance_and_both_get_shares() {
    let mut h = Harness::new(0);
    let (a, join_a) = h.new_member(&["range"]);
    h.join_answer(join_a).unwrap();
    h.sync(&a, 1, &[(&a, "all")]);
    let (b, join_b) = h.new_member(&["range"]);
    assert!(h.join_answer(join_b).is_none(), "b waits for a to rejoin");
    assert_eq!(h.heartbeat(&a, None, 1), ErrorCode::RebalanceInProgress);
    let rejoin_a = h.join(&a, None, &["range"]);
    let (ra, rb) = (h.join_answer(rejoin_a).unwrap(), h.join_answer(join_b).unwrap());
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!(ra.leader, a, "the leader stays the leader");
    assert_eq!((ra.members.len(), rb.members.len()), (2, 0));
    // The follower's sync waits for the leader's.
    let sync_b = h.sync(&b, 2, &[]);
    assert!(h.sync_answer(sync_b).is_none());
    let sync_a = h.sync(&a, 2, &[(&a, "p0"), (&b, "p1")]);
    assert_eq!(h.sync_answer(sync_a).unwrap().assignment, Bytes::from("p0"));
    assert_eq!(h.sync_answer(sync_b).unwrap().assignment, Bytes::from("p1"));
    // A stale generation cannot sync or commit.
    let stale = h.sync(&b, 1, &[]);
    assert_eq!(h.sync_answer(stale).unwrap().error, ErrorCode::IllegalGeneration);
    let commit = h.commit(&b, 1, 5);
    assert_eq!(h.commit_errors(commit).unwrap(), vec![ErrorCode::IllegalGeneration]);
}

#[test]
fn silent_members_expire_and_leavers_trigger_rebalances() {
    let mut h = Harness::new(0);
    let (a, ja) = h.new_member(&["range"]);
    h.join_answer(ja).unwrap();
    h.sync(&a, 1, &[]);
    let (b, jb) = h.new_member(&["range"]);
    let ra = h.join(&a, None, &["range"]);
    assert_eq!(h.join_answer(ra).unwrap().generation_id, 2);
    h.join_answer(jb).unwrap();
    h.sync(&a, 2, &[]);
    h.sync(&b, 2, &[]);
    // b keeps heartbeating; a falls silent past its session timeout.
    for _ in 0..3 {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&b, None, 2), ErrorCode::None);
    }
    h.advance(1_100);
    assert_eq!(h.heartbeat(&b, None, 2), ErrorCode::RebalanceInProgress, "a expired: rebalance");
    let rb = h.join(&b, None, &["range"]);
    let answer = h.join_answer(rb).unwrap();
    assert_eq!((answer.generation_id, answer.leader.as_str(), answer.members.len()), (3, b.as_str(), 1));
    h.sync(&b, 3, &[]);
    // b leaves: the group is empty.
    let token = h.token();
    h.coordinator.handle_leave(
        h.now,
        token,
        "g",
        vec![MemberIdentity { member_id: b.clone(), group_instance_id: None }],
    );
    h.settle();
    assert_eq!(h.coordinator.group_state("g"), Some(GroupState::Empty));
    assert!(matches!(&h.answers[&token], Response::Leave { members, .. } if members[0].1 == ErrorCode::None));
}

#[test]
fn members_that_do_not_rejoin_in_time_are_dropped_from_the_rebalance() {
    let mut h = Harness::new(0);
    let (a, ja) = h.new_member(&["range"]);
    h.join_answer(ja).unwrap();
    h.sync(&a, 1, &[]);
    let (_b, jb) = h.new_member(&["range"]);
    // a keeps heartbeating but never rejoins: after the rebalance timeout b proceeds alone.
    for _ in 0..9 {
        h.advance(3_000);
        assert_eq!(h.heartbeat(&a, None, 1), ErrorCode::RebalanceInProgress);
    }
    h.advance(3_100);
    let answer = h.join_answer(jb).expect("join completes at the rebalance timeout");
    assert_eq!((answer.generation_id, answer.members.len()), (2, 1));
    assert_eq!(h.heartbeat(&a, None, 1), ErrorCode::UnknownMemberId);
}

#[test]
fn the_initial_rebalance_delay_gathers_members() {
    let mut h = Harness::new(3_000);
    let (_a, ja) = h.new_member(&["range"]);
    h.advance(1_000);
    let (_b, jb) = h.new_member(&["range"]);
    assert!(h.join_answer(ja).is_none() && h.join_answer(jb).is_none());
    h.advance(2_100);
    let (ra, rb) = (h.join_answer(ja).unwrap(), h.join_answer(jb).unwrap());
    assert_eq!((ra.generation_id, rb.generation_id), (1, 1));
    assert_eq!(ra.members.len() + rb.members.len(), 2, "one leader sees both");
}

#[test]
fn static_members_rejoin_without_rebalancing_and_fence_their_old_id() {
    let mut h = Harness::new(0);
    let first = h.join("", Some("instance-1"), &["range"]);
    let answer = h.join_answer(first).expect("static members skip MEMBER_ID_REQUIRED");
    let old_id = answer.member_id.clone();
    h.sync(&old_id, 1, &[(&old_id, "mine")]);
    let (b, jb) = h.new_member(&["range"]);
    let ra = h.join(&old_id, Some("instance-1"), &["range"]);
    h.join_answer(ra).unwrap();
    h.join_answer(jb).unwrap();
    let leader = h.join_answer(ra).unwrap().leader;
    let follower = if leader == b { old_id.clone() } else { b.clone() };
    h.sync(&follower, 2, &[]);
    h.sync(&leader, 2, &[(&old_id, "static-share"), (&b, "b-share")]);
    // The static member restarts (new member id, same instance id) while b is the leader.
    if leader == b {
        let rejoin = h.join("", Some("instance-1"), &["range"]);
        let answer = h.join_answer(rejoin).expect("answered at once");
        assert_eq!((answer.error, answer.generation_id), (ErrorCode::None, 2), "no rebalance");
        assert_ne!(answer.member_id, old_id);
        assert_eq!(h.coordinator.group_state("g"), Some(GroupState::Stable));
        assert_eq!(h.heartbeat(&old_id, Some("instance-1"), 2), ErrorCode::FencedInstanceId);
        let sync = h.sync(&answer.member_id, 2, &[]);
        assert_eq!(h.sync_answer(sync).unwrap().assignment, Bytes::from("static-share"), "keeps its assignment");
    }
}

#[test]
fn commits_are_answered_after_they_are_persisted_and_survive_a_reload() {
    let mut h = Harness::new(0);
    // Outside group management (generation -1): allowed on an empty group.
    h.hold_persists = true;
    let commit = h.commit("", -1, 42);
    assert!(h.commit_errors(commit).is_none(), "not answered before the persist completes");
    assert_eq!(h.coordinator.offset_fetch("g", Some(&[("t".into(), 0)]))[0].offset, -1, "not visible yet");
    let held = std::mem::take(&mut h.held);
    for id in held {
        h.coordinator.handle_persisted(id, true, h.now);
    }
    h.hold_persists = false;
    h.settle();
    assert_eq!(h.commit_errors(commit).unwrap(), vec![ErrorCode::None]);
    assert_eq!(h.coordinator.offset_fetch("g", None)[0].offset, 42);

    // A member of an active group cannot be bypassed by a generation -1 commit.
    let (a, ja) = h.new_member(&["range"]);
    h.join_answer(ja).unwrap();
    h.sync(&a, 1, &[]);
    let outsider = h.commit("", -1, 7);
    assert_eq!(h.commit_errors(outsider).unwrap(), vec![ErrorCode::UnknownMemberId]);
    let member = h.commit(&a, 1, 50);
    assert_eq!(h.commit_errors(member).unwrap(), vec![ErrorCode::None]);

    // Replaying the persisted records rebuilds offsets and membership.
    let mut reloaded = Coordinator::new(Config::default(), 1, 1_700_000_000_000).unwrap();
    for record in h.persisted.clone() {
        reloaded.load(record, Instant::ZERO);
    }
    reloaded.check_invariants();
    assert_eq!(reloaded.offset_fetch("g", None)[0].offset, 50);
    assert_eq!(reloaded.group_state("g"), Some(GroupState::Stable));
    assert_eq!(reloaded.describe_group("g").members.len(), 1);
    // A failed persist answers with a retriable error and changes nothing.
    h.hold_persists = true;
    let failed = h.commit(&a, 1, 60);
    for id in std::mem::take(&mut h.held) {
        h.coordinator.handle_persisted(id, false, h.now);
    }
    h.settle();
    assert_eq!(h.commit_errors(failed).unwrap(), vec![ErrorCode::CoordinatorNotAvailable]);
    assert_eq!(h.coordinator.offset_fetch("g", None)[0].offset, 50);
}

#[test]
fn bad_joins_get_kafka_errors() {
    let mut h = Harness::new(0);
    let token = h.token();
    let mut request = JoinRequest {
        group_id: "g".into(),
        member_id: String::new(),
        group_instance_id: None,
        client_id: "c".into(),
        client_host: "h".into(),
        session_timeout_ms: 1,
        rebalance_timeout_ms: 1,
        protocol_type: "consumer".into(),
        protocols: vec![("range".into(), Bytes::new())],
        require_known_member_id: true,
    };
    h.coordinator.handle_join(h.now, token, request.clone());
    h.settle();
    assert_eq!(h.join_answer(token).unwrap().error, ErrorCode::InvalidSessionTimeout);
    request.session_timeout_ms = i32::MAX;
    let token = h.token();
    h.coordinator.handle_join(h.now, token, request.clone());
    h.settle();
    assert_eq!(h.join_answer(token).unwrap().error, ErrorCode::InvalidSessionTimeout);
    request.session_timeout_ms = SESSION_MS;
    request.protocols = vec![("range".into(), Bytes::from(vec![0u8; 2 << 20]))];
    let token = h.token();
    h.coordinator.handle_join(h.now, token, request.clone());
    h.settle();
    assert_eq!(h.join_answer(token).unwrap().error, ErrorCode::InconsistentGroupProtocol, "oversized metadata");
    let (_a, ja) = h.new_member(&["range"]);
    h.join_answer(ja).unwrap();
    let other = h.join("", None, &["sticky"]);
    assert_eq!(h.join_answer(other).unwrap().error, ErrorCode::InconsistentGroupProtocol);
    let unknown = h.join("ghost", None, &["range"]);
    assert_eq!(h.join_answer(unknown).unwrap().error, ErrorCode::UnknownMemberId);
}

#[test]
fn deleting_groups_and_expiring_offsets() {
    let mut h = Harness::new(0);
    h.commit("", -1, 1);
    let (a, ja) = h.new_member(&["range"]);
    h.join_answer(ja).unwrap();
    let token = h.token();
    h.coordinator.handle_delete_groups(h.now, token, vec!["g".into(), "nope".into()]);
    h.settle();
    assert_eq!(
        h.answers[&token],
        Response::DeleteGroups(vec![
            ("g".into(), ErrorCode::NonEmptyGroup),
            ("nope".into(), ErrorCode::GroupIdNotFound)
        ])
    );
    let leave = h.token();
    h.coordinator.handle_leave(h.now, leave, "g", vec![MemberIdentity { member_id: a, group_instance_id: None }]);
    h.settle();
    // Empty for longer than offsets.retention: the offsets and the group go.
    h.advance(7 * 24 * 3600 * 1000 + 1);
    assert!(h.coordinator.group_state("g").is_none());
    assert!(matches!(h.persisted.last(), Some(Record::Group { value: None, .. })));
}

#[test]
fn the_last_rebalance_is_timed_from_its_start_and_from_its_last_join() {
    let mut h = Harness::new(0);
    let (a, join_a) = h.new_member(&["range"]);
    h.join_answer(join_a).unwrap();
    h.sync(&a, 1, &[(&a, "all")]);
    let first = h.coordinator.last_rebalance("g").expect("the first rebalance completed");
    assert_eq!((first.generation_id, first.members), (1, 1));
    h.advance(1000);
    // b joins at 1000; a learns of it from its heartbeat 300 ms later and rejoins; the leader
    // syncs 20 ms after that.
    let (b, join_b) = h.new_member(&["range"]);
    h.advance(300);
    assert_eq!(h.heartbeat(&a, None, 1), ErrorCode::RebalanceInProgress);
    let rejoin_a = h.join(&a, None, &["range"]);
    let generation = h.join_answer(rejoin_a).expect("everyone rejoined").generation_id;
    h.join_answer(join_b).expect("b is answered too");
    h.advance(20);
    let leader = h.join_answer(rejoin_a).unwrap().leader;
    let follower = if leader == a { b.clone() } else { a.clone() };
    h.sync(&follower, generation, &[]);
    assert_eq!(h.coordinator.last_rebalance("g"), Some(first), "not stable until the leader syncs");
    h.sync(&leader, generation, &[(&a, "half"), (&b, "half")]);
    let second = h.coordinator.last_rebalance("g").expect("the second rebalance completed");
    assert_eq!((second.generation_id, second.members), (generation, 2));
    let ms = |from: Instant| second.stable.saturating_since(from).as_millis();
    assert_eq!((ms(second.started), ms(second.last_joined)), (320, 20));
}
