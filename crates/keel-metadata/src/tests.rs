//! Scenario tests of the controller, driven the way the shell drives it: every decision's
//! records are committed in order, replayed into a separate image (a broker's), and reported
//! back to the controller. After every step both images and the controller's invariants are
//! checked, and after every commit the replayed image must equal the controller's.

use std::collections::BTreeMap;

use keel_types::{BrokerEpoch, Duration, ErrorCode, Instant, LeaderEpoch, NodeId, Refusal, Rng, TopicId};

use crate::{
    AlterIsr, BrokerRegistrationRequest, Controller, ControllerConfig, Decision, Endpoint, HeartbeatReply,
    MetadataImage, MetadataRecord, Mutation, PartitionRegistration, ProducerIdBlock, MIN_INSYNC_REPLICAS,
    PRODUCER_ID_BLOCK_SIZE, UNCLEAN_LEADER_ELECTION_ENABLE,
};

const SESSION: Duration = Duration(9_000_000_000);

fn n(ids: &[i32]) -> Vec<NodeId> {
    ids.iter().map(|&i| NodeId(i)).collect()
}

struct Cluster {
    controller: Controller,
    /// What a broker has replayed: every committed record.
    replayed: MetadataImage,
    /// Decided and not yet committed.
    pending: Vec<MetadataRecord>,
    /// Every record ever committed, in order.
    log: Vec<MetadataRecord>,
    epochs: BTreeMap<NodeId, BrokerEpoch>,
    racks: BTreeMap<NodeId, String>,
    /// The last process id drawn: every registration comes from a new process.
    process_id: u128,
    now: Instant,
    rng: Rng,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with(ControllerConfig::default())
    }

    fn with(config: ControllerConfig) -> Cluster {
        Cluster {
            controller: Controller::new(config, MetadataImage::default(), Instant::ZERO),
            replayed: MetadataImage::default(),
            pending: Vec::new(),
            log: Vec::new(),
            epochs: BTreeMap::new(),
            racks: BTreeMap::new(),
            process_id: 0,
            now: Instant::ZERO,
            rng: Rng::new(7),
        }
    }

    /// Takes a decision's records for the log; checks invariants.
    fn take<T>(&mut self, decision: Result<Decision<T>, Refusal>) -> Result<T, ErrorCode> {
        self.controller.check_invariants().unwrap();
        let decision = decision.map_err(|e| e.code)?;
        self.pending.extend(decision.records);
        Ok(decision.reply)
    }

    fn commit(&mut self) {
        for record in std::mem::take(&mut self.pending) {
            let bytes = MetadataRecord::encode_batch(std::slice::from_ref(&record));
            let [decoded]: [MetadataRecord; 1] = MetadataRecord::decode_batch(&bytes).unwrap().try_into().unwrap();
            self.replayed.apply(&decoded);
            self.controller.handle_committed(&decoded);
            self.log.push(decoded);
        }
        self.replayed.check_invariants().unwrap();
        self.controller.check_invariants().unwrap();
        assert_eq!(&self.replayed, self.controller.image(), "replay differs from the controller's image");
        assert_eq!(&self.replayed, self.controller.committed());
    }

    fn advance(&mut self, by: Duration) {
        self.now = self.now + by;
    }

    /// A new process of `node` registers; `clean_shutdown`: its marker names the epoch it is
    /// registered with (as a broker's does after a clean shutdown), else it has no marker.
    fn register(&mut self, node: i32, clean_shutdown: bool) -> BrokerEpoch {
        let previous_broker_epoch = self.epochs.get(&NodeId(node)).copied().filter(|_| clean_shutdown);
        self.process_id += 1;
        self.register_with(node, previous_broker_epoch, self.process_id)
    }

    fn register_with(
        &mut self,
        node: i32,
        previous_broker_epoch: Option<BrokerEpoch>,
        process_id: u128,
    ) -> BrokerEpoch {
        let request = BrokerRegistrationRequest {
            node: NodeId(node),
            listeners: vec![Endpoint { name: "PLAINTEXT".into(), host: format!("broker-{node}"), port: 9092 }],
            rack: self.racks.get(&NodeId(node)).cloned(),
            previous_broker_epoch,
            process_id,
            incarnation: node as u64,
        };
        let decision = self.controller.register_broker(self.now, request);
        let epoch = self.take(decision).unwrap();
        self.epochs.insert(NodeId(node), epoch);
        epoch
    }

    fn heartbeat(&mut self, node: i32, caught_up: bool, want_shutdown: bool) -> HeartbeatReply {
        let epoch = self.epochs[&NodeId(node)];
        let decision = self.controller.heartbeat(self.now, NodeId(node), epoch, caught_up, want_shutdown);
        self.take(decision).unwrap()
    }

    /// Registers and unfences brokers, committing everything.
    fn start(&mut self, nodes: &[i32]) {
        for &node in nodes {
            self.register(node, true);
            self.commit();
            assert!(!self.heartbeat(node, true, false).fenced);
            self.commit();
        }
    }

    fn tick(&mut self) {
        let records = self.controller.tick(self.now);
        self.take(Ok(Decision { reply: (), records })).unwrap();
        self.commit();
    }

    fn create(&mut self, name: &str, partitions: i32, rf: i16, min_isr: Option<usize>) -> Result<TopicId, ErrorCode> {
        let configs = min_isr.map(|m| (MIN_INSYNC_REPLICAS.to_string(), m.to_string())).into_iter().collect();
        let decision = self.controller.create_topic(name, partitions, rf, configs, &mut self.rng);
        let id = self.take(decision)?;
        self.commit();
        Ok(id)
    }

    fn fence(&mut self, node: NodeId) {
        let decision = self.controller.fence_broker(node);
        self.take(decision).unwrap();
        self.commit();
    }

    fn partition(&self, topic_id: TopicId, index: i32) -> PartitionRegistration {
        self.controller.image().partition(topic_id, index).unwrap().clone()
    }

    fn alter_isr(
        &mut self,
        topic_id: TopicId,
        index: i32,
        new_isr: &[i32],
    ) -> Result<PartitionRegistration, ErrorCode> {
        let p = self.partition(topic_id, index);
        let leader = p.leader.unwrap();
        let request =
            AlterIsr { leader, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, new_isr: n(new_isr) };
        let decision = self.controller.alter_partition(leader, self.epochs[&leader], topic_id, index, &request, &[]);
        let registration = self.take(decision)?;
        self.commit();
        Ok(registration)
    }
}

#[test]
fn replaying_the_log_rebuilds_the_controllers_image() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let orders = c.create("orders", 3, 3, Some(2)).unwrap();
    c.create("audit", 2, 2, None).unwrap();
    let leader = c.partition(orders, 0).leader.unwrap();
    c.alter_isr(orders, 0, &[leader.0]).unwrap();
    c.fence(NodeId(2));
    c.register(2, false);
    c.commit();
    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "true".to_string())]);
    let decision = c.controller.alter_configs("orders", configs);
    c.take(decision).unwrap();
    let decision = c.controller.create_partitions("audit", 4, &mut c.rng);
    c.take(decision).unwrap();
    let decision = c.controller.delete_topic("audit");
    c.take(decision).unwrap();
    c.commit();
    // A fresh replay of the whole log, and a snapshot of it, give the same image.
    let mut fresh = MetadataImage::default();
    c.log.iter().for_each(|r| fresh.apply(r));
    assert_eq!(&fresh, c.controller.image());
    assert_eq!(MetadataImage::decode(&fresh.encode()).unwrap(), fresh);
    assert!(c.log.iter().any(|r| matches!(r, MetadataRecord::RemoveTopic { .. })));
}

#[test]
fn brokers_register_fenced_and_heartbeats_unfence_them_once_caught_up() {
    let mut c = Cluster::new();
    let first = c.register(1, true);
    c.commit();
    assert!(c.controller.image().broker(NodeId(1)).unwrap().fenced);
    assert_eq!(c.heartbeat(1, false, false), HeartbeatReply { fenced: true, should_shut_down: false });
    assert!(c.pending.is_empty());
    assert_eq!(c.heartbeat(1, true, false), HeartbeatReply { fenced: false, should_shut_down: false });
    c.commit();
    assert_eq!(c.controller.image().active_brokers(), n(&[1]));
    // Epochs grow across nodes and re-registrations; a re-registration starts fenced again.
    let second = c.register(2, true);
    let again = c.register(1, true);
    c.commit();
    assert!(first < second && second < again, "{first} {second} {again}");
    assert!(c.controller.image().broker(NodeId(1)).unwrap().fenced);
    // The old epoch is stale now, as is an unknown broker.
    let stale = c.controller.heartbeat(c.now, NodeId(1), first, true, false);
    assert_eq!(stale.map(|_| ()).unwrap_err().code, ErrorCode::StaleBrokerEpoch);
    let unknown = c.controller.heartbeat(c.now, NodeId(9), BrokerEpoch(1), true, false);
    assert_eq!(unknown.map(|_| ()).unwrap_err().code, ErrorCode::StaleBrokerEpoch);
    assert!(c.pending.is_empty(), "refusals change nothing");
}

#[test]
fn an_expired_session_fences_the_broker_and_its_partitions_fail_over() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let leader = c.partition(t, 0).leader.unwrap();
    let replicas = c.partition(t, 0).replicas;
    assert_eq!(replicas[0], leader);
    let others: Vec<i32> = [1, 2, 3].into_iter().filter(|&b| NodeId(b) != leader).collect();
    c.advance(Duration::from_secs(5));
    for &b in &others {
        c.heartbeat(b, true, false);
    }
    c.advance(Duration(SESSION.0 - Duration::from_secs(5).0 - 1));
    c.tick();
    assert_eq!(c.partition(t, 0).leader, Some(leader), "a session lasts its full timeout");
    assert_eq!(c.controller.poll_timeout(), Some(Instant::ZERO + SESSION));
    c.advance(Duration(1));
    c.tick();
    assert!(c.controller.image().broker(leader).unwrap().fenced);
    let p = c.partition(t, 0);
    assert_eq!((p.leader, p.isr, p.leader_epoch), (Some(replicas[1]), replicas[1..].to_vec(), LeaderEpoch(1)));
    // A new active controller gives every broker a full session from when it took over.
    c.advance(Duration::from_secs(60));
    let committed = c.controller.committed().clone();
    c.controller.reset(committed, c.now);
    c.advance(Duration(SESSION.0 - 1));
    c.tick();
    assert_eq!(c.controller.image().active_brokers(), n(&others));
    c.advance(Duration(1));
    c.tick();
    assert_eq!(c.controller.image().active_brokers(), n(&[]));
}

#[test]
fn a_broker_silent_since_before_the_election_is_fenced_a_session_after_it_went_silent() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    // Node 3 (the previous active controller, say) went silent; a new controller takes over
    // 2 s later. The others were heard from just now.
    let silent_since = c.now;
    c.advance(Duration::from_secs(2));
    let committed = c.controller.committed().clone();
    c.controller.reset(committed, c.now);
    c.controller.handle_last_contact(NodeId(3), silent_since);
    c.controller.handle_last_contact(NodeId(2), c.now + Duration::from_secs(1)); // not before: ignored
    c.controller.handle_last_contact(NodeId(9), silent_since); // not registered: ignored
    assert_eq!(c.controller.poll_timeout(), Some(silent_since + SESSION));
    c.advance(Duration(SESSION.0 - Duration::from_secs(2).0 - 1));
    c.tick();
    assert_eq!(c.controller.image().active_brokers(), n(&[1, 2, 3]));
    c.advance(Duration(1));
    c.tick();
    assert_eq!(c.controller.image().active_brokers(), n(&[1, 2]), "node 3 is fenced a session after it went silent");
    // The rest keep a full session from the election.
    c.advance(Duration(Duration::from_secs(2).0 - 1));
    c.tick();
    assert_eq!(c.controller.image().active_brokers(), n(&[1, 2]));
}

#[test]
fn a_broker_declared_dead_stays_fenced_until_it_is_seen_alive_at_a_higher_incarnation() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let leader = c.partition(t, 0).leader.unwrap();
    let decision = c.controller.handle_membership(leader, 4, false);
    c.take(Ok(decision)).unwrap();
    c.commit();
    assert!(c.controller.image().broker(leader).unwrap().fenced, "fenced at once, not at the end of its session");
    assert_ne!(c.partition(t, 0).leader, Some(leader));
    // Its heartbeats do not unfence it while the accusation stands ...
    assert!(c.heartbeat(leader.0, true, false).fenced);
    assert!(c.controller.handle_membership(leader, 3, true).records.is_empty());
    assert!(c.controller.handle_membership(leader, 4, true).records.is_empty());
    assert!(c.heartbeat(leader.0, true, false).fenced, "alive at the accused incarnation is not a refutation");
    // ... until it refutes it with a higher incarnation.
    assert!(c.controller.handle_membership(leader, 5, true).records.is_empty());
    assert!(!c.heartbeat(leader.0, true, false).fenced);
    c.commit();
    assert_eq!(c.controller.image().active_brokers(), n(&[1, 2, 3]));
}

#[test]
fn a_fenced_leader_fails_over_to_the_isr_then_the_elr() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let replicas = c.partition(t, 0).replicas;
    let [a, b, z] = [replicas[0], replicas[1], replicas[2]];
    c.fence(a);
    let p = c.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (Some(b), vec![b, z], vec![]));
    c.fence(b);
    let p = c.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (Some(z), vec![z], vec![b]));
    c.fence(z);
    let p = c.partition(t, 0);
    assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (None, vec![], vec![b, z]));
    // `a` comes back cleanly, but it left while the ISR met min ISR: it may not lead.
    c.register(a.0, true);
    c.commit();
    c.heartbeat(a.0, true, false);
    c.commit();
    assert_eq!(c.partition(t, 0).leader, None);
    // `b` comes back cleanly: elected from the ELR.
    c.register(b.0, true);
    c.commit();
    c.heartbeat(b.0, true, false);
    c.commit();
    let p = c.partition(t, 0);
    assert_eq!((p.leader, p.isr, p.elr), (Some(b), vec![b], vec![z]));
}

#[test]
fn an_unclean_restart_loses_the_elr_and_leadership() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let leader = c.partition(t, 0).leader.unwrap();
    // The leader shrinks the ISR to itself: the others join the ELR.
    c.alter_isr(t, 0, &[leader.0]).unwrap();
    let elr = c.partition(t, 0).elr;
    assert_eq!(elr.len(), 2);
    // The leader's process dies and restarts without its clean-shutdown marker, before its
    // session ends: the new registration replaces the old one at once.
    c.register(leader.0, false);
    c.commit();
    let p = c.partition(t, 0);
    assert_ne!(p.leader, Some(leader));
    assert!(!p.isr.contains(&leader) && !p.elr.contains(&leader), "{p:?}");
    assert!(p.leader.is_some_and(|l| elr.contains(&l)), "an ELR member takes over: {p:?}");
    // An ELR member that restarts uncleanly leaves the ELR.
    let remaining = p.elr[0];
    c.register(remaining.0, false);
    c.commit();
    assert_eq!(c.partition(t, 0).elr, vec![]);
    // Caught up and unfenced, the unclean leader still may not lead: it is in neither set.
    c.heartbeat(leader.0, true, false);
    c.commit();
    assert!(!c.partition(t, 0).isr.contains(&leader));
}

/// A partition with a single replica has no other copy to prefer: after an unclean restart
/// of its broker it is led by it again (keel differs from KIP-966 here, which leaves it
/// offline until an unclean election; docs/cluster.md). What its log lost, nothing else holds;
/// with flush `always`, the single node's default, it lost nothing acknowledged. A kill -9 of
/// a single node must not take every partition offline.
#[test]
fn the_only_replica_leads_again_after_an_unclean_restart() {
    let mut c = Cluster::new();
    c.start(&[1]);
    let t = c.create("t", 2, 1, Some(1)).unwrap();
    assert_eq!(c.partition(t, 0).leader, Some(NodeId(1)));
    c.register(1, false);
    c.commit();
    c.heartbeat(1, true, false);
    c.commit();
    for index in 0..2 {
        let p = c.partition(t, index);
        assert_eq!((p.leader, p.isr.clone()), (Some(NodeId(1)), vec![NodeId(1)]), "{p:?}");
    }
}

#[test]
fn controlled_shutdown_moves_leadership_before_the_broker_may_stop() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 6, 3, Some(2)).unwrap();
    assert_eq!(c.controller.image().leader_count(NodeId(1)), 2);
    let reply = c.heartbeat(1, true, true);
    assert_eq!(reply, HeartbeatReply { fenced: false, should_shut_down: false });
    assert!(matches!(c.pending[0], MetadataRecord::BeginControlledShutdown { node: NodeId(1), .. }));
    assert_eq!(c.controller.image().leader_count(NodeId(1)), 0);
    // Not committed yet: the broker must keep waiting.
    assert!(!c.heartbeat(1, true, true).should_shut_down);
    c.commit();
    assert!(c.heartbeat(1, true, true).should_shut_down);
    for index in 0..6 {
        let p = c.partition(t, index);
        assert!(p.leader.is_some() && p.leader != Some(NodeId(1)) && !p.isr.contains(&NodeId(1)), "{p:?}");
    }
    // Shutting down, it gets no new replicas and is not unfenced by later heartbeats.
    assert_eq!(c.create("u", 1, 3, None), Err(ErrorCode::InvalidReplicationFactor));
    assert_eq!(c.controller.image().active_brokers(), n(&[2, 3]));
}

#[test]
fn preferred_leaders_return_once_back_in_the_isr() {
    let config = ControllerConfig { leader_imbalance_check_interval: Duration::from_secs(1), ..Default::default() };
    let mut c = Cluster::with(config);
    c.start(&[1, 2, 3]);
    let t = c.create("t", 3, 3, Some(2)).unwrap();
    let preferred = c.partition(t, 0).replicas[0];
    c.fence(preferred);
    c.register(preferred.0, true);
    c.commit();
    c.heartbeat(preferred.0, true, false);
    c.commit();
    let p = c.partition(t, 0);
    assert_ne!(p.leader, Some(preferred), "not in the ISR yet");
    assert!(!c.controller.preferred_election_needed());
    let mut isr: Vec<i32> = p.isr.iter().map(|r| r.0).collect();
    isr.push(preferred.0);
    c.alter_isr(t, 0, &isr).unwrap();
    assert!(c.controller.preferred_election_needed());
    c.advance(Duration::from_secs(1));
    for b in [1, 2, 3] {
        c.heartbeat(b, true, false);
    }
    c.tick();
    assert_eq!(c.partition(t, 0).leader, Some(preferred));
    assert!(!c.controller.preferred_election_needed());
}

#[test]
fn topics_are_placed_evenly_and_on_distinct_racks() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 6, 3, None).unwrap();
    let mut leaders = BTreeMap::new();
    for index in 0..6 {
        *leaders.entry(c.partition(t, index).leader.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(NodeId(1), 2), (NodeId(2), 2), (NodeId(3), 2)]));
    // Growing the topic continues the round-robin.
    let decision = c.controller.create_partitions("t", 9, &mut c.rng);
    c.take(decision).unwrap();
    c.commit();
    let mut leaders = BTreeMap::new();
    for index in 0..9 {
        *leaders.entry(c.partition(t, index).replicas[0]).or_insert(0) += 1;
    }
    assert_eq!(leaders, BTreeMap::from([(NodeId(1), 3), (NodeId(2), 3), (NodeId(3), 3)]));

    let mut c = Cluster::new();
    for (node, rack) in [(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c"), (6, "c")] {
        c.racks.insert(NodeId(node), rack.to_string());
    }
    c.start(&[1, 2, 3, 4, 5, 6]);
    let t = c.create("racked", 12, 3, None).unwrap();
    for index in 0..12 {
        let racks: std::collections::BTreeSet<_> =
            c.partition(t, index).replicas.iter().map(|r| c.racks[r].clone()).collect();
        assert_eq!(racks.len(), 3, "partition {index}");
    }
}

#[test]
fn create_topic_refuses_what_kafka_refuses() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    c.register(4, true); // Registered but fenced: not counted for placement.
    c.commit();
    c.create("a.b", 1, 1, None).unwrap();
    let long = "x".repeat(250);
    let with = |key: &str, value: &str| BTreeMap::from([(key.to_string(), value.to_string())]);
    let table = vec![
        ("", 1, 1, BTreeMap::new(), ErrorCode::InvalidTopicException),
        ("..", 1, 1, BTreeMap::new(), ErrorCode::InvalidTopicException),
        ("a b", 1, 1, BTreeMap::new(), ErrorCode::InvalidTopicException),
        (&long, 1, 1, BTreeMap::new(), ErrorCode::InvalidTopicException),
        ("a_b", 1, 1, BTreeMap::new(), ErrorCode::InvalidTopicException),
        ("a.b", 1, 1, BTreeMap::new(), ErrorCode::TopicAlreadyExists),
        ("p", 0, 1, BTreeMap::new(), ErrorCode::InvalidPartitions),
        ("p", -2, 1, BTreeMap::new(), ErrorCode::InvalidPartitions),
        ("p", 10_001, 1, BTreeMap::new(), ErrorCode::InvalidPartitions),
        ("p", 1, 0, BTreeMap::new(), ErrorCode::InvalidReplicationFactor),
        ("p", 1, 4, BTreeMap::new(), ErrorCode::InvalidReplicationFactor),
        ("p", 1, 3, with(MIN_INSYNC_REPLICAS, "x"), ErrorCode::InvalidConfig),
        ("p", 1, 3, with(MIN_INSYNC_REPLICAS, "0"), ErrorCode::InvalidConfig),
        ("p", 1, 3, with(MIN_INSYNC_REPLICAS, "4"), ErrorCode::InvalidConfig),
        ("p", 1, 3, with(UNCLEAN_LEADER_ELECTION_ENABLE, "maybe"), ErrorCode::InvalidConfig),
    ];
    for (name, partitions, rf, configs, code) in table {
        let before = c.controller.clone();
        let result = c.controller.create_topic(name, partitions, rf, configs, &mut c.rng);
        assert_eq!(result.map(|d| d.reply).map_err(|e| e.code), Err(code), "{name:?} {partitions} {rf}");
        assert_eq!(c.controller, before, "a refusal changes nothing");
    }
    // Defaults: -1 partitions and replication factor, and min ISR capped at the factor.
    let config = ControllerConfig { default_min_isr: 2, default_partitions: 4, ..Default::default() };
    let mut c = Cluster::with(config);
    c.start(&[1, 2]);
    let id = c.create("d", -1, -1, None).unwrap();
    let topic = c.controller.image().topic(id).unwrap();
    assert_eq!((topic.partitions.len(), topic.replication_factor(), topic.min_isr()), (4, 1, 1));
    let id = c.create("e", 1, 2, None).unwrap();
    assert_eq!(c.controller.image().topic(id).unwrap().min_isr(), 2);
    assert_eq!((id.0 >> 76) & 0xf, 4, "topic ids are version-4 UUIDs");
}

#[test]
fn alter_partition_needs_the_current_broker_epoch_and_partition_state() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let p = c.partition(t, 0);
    let leader = p.leader.unwrap();
    let epoch = c.epochs[&leader];
    let request =
        AlterIsr { leader, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, new_isr: vec![leader] };
    let code = |result: Result<Decision<PartitionRegistration>, Refusal>| result.map(|_| ()).unwrap_err().code;
    assert_eq!(
        code(c.controller.alter_partition(leader, BrokerEpoch(epoch.0 - 1), t, 0, &request, &[])),
        ErrorCode::StaleBrokerEpoch
    );
    assert_eq!(
        code(c.controller.alter_partition(leader, epoch, TopicId(t.0 + 1), 0, &request, &[])),
        ErrorCode::UnknownTopicId
    );
    assert_eq!(
        code(c.controller.alter_partition(leader, epoch, t, 1, &request, &[])),
        ErrorCode::UnknownTopicOrPartition
    );
    let follower = p.isr.iter().copied().find(|&r| r != leader).unwrap();
    let as_follower = c.controller.alter_partition(follower, c.epochs[&follower], t, 0, &request, &[]);
    assert_eq!(code(as_follower), ErrorCode::InvalidRequest);
    let decision = c.controller.alter_partition(leader, epoch, t, 0, &request, &[]);
    let registration = c.take(decision).unwrap();
    c.commit();
    assert_eq!((registration.isr, registration.partition_epoch), (vec![leader], p.partition_epoch.next()));
    assert_eq!(code(c.controller.alter_partition(leader, epoch, t, 0, &request, &[])), ErrorCode::InvalidUpdateVersion);
    // After the leader re-registers, its old epoch is stale.
    c.register(leader.0, true);
    c.commit();
    assert_eq!(code(c.controller.alter_partition(leader, epoch, t, 0, &request, &[])), ErrorCode::StaleBrokerEpoch);
}

#[test]
fn an_isr_member_must_be_vouched_for_by_its_current_process() {
    // KIP-903: broker 3 crashed and registered again; fetches its earlier process made do not
    // let it back into the ISR.
    let vouched = |mutation| {
        let mut c = Cluster::with(ControllerConfig { mutation, ..ControllerConfig::default() });
        c.start(&[1, 2, 3]);
        let t = c.create("t", 1, 3, Some(1)).unwrap();
        let old = c.epochs[&NodeId(3)];
        c.register(3, false);
        c.commit();
        c.heartbeat(3, true, false);
        c.commit();
        let p = c.partition(t, 0);
        assert!(!p.isr.contains(&NodeId(3)), "a registration takes the replica out of the ISR");
        let leader = p.leader.unwrap();
        let mut new_isr = p.isr.clone();
        new_isr.push(NodeId(3));
        let request = AlterIsr { leader, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, new_isr };
        let try_with = |c: &Cluster, added: &[(NodeId, BrokerEpoch)]| {
            let mut controller = c.controller.clone();
            let decision = controller.alter_partition(leader, c.epochs[&leader], t, 0, &request, added);
            decision.map(|d| d.reply.isr.len()).map_err(|e| e.code)
        };
        let stale = try_with(&c, &[(NodeId(3), old)]);
        let unknown = try_with(&c, &[(NodeId(9), BrokerEpoch(1))]);
        let current = try_with(&c, &[(NodeId(3), c.epochs[&NodeId(3)])]);
        assert_eq!(current, Ok(3));
        (stale, unknown)
    };
    let refused = Err(ErrorCode::IneligibleReplica);
    assert_eq!(vouched(None), (refused, refused));
    assert_eq!(vouched(Some(Mutation::NoBrokerEpochCheck)), (Ok(3), Ok(3)), "the planted bug skips the check");
}

#[test]
fn a_deposed_leader_hears_it_is_fenced_before_hearing_of_an_ineligible_replica() {
    // Leader b1 asked to add b3 in leader epoch e; meanwhile b1 was fenced (its partition
    // moved to a new leader in a later epoch) and b3 registered again. A refusal for b3
    // (INELIGIBLE_REPLICA) would tell b1 to drop the change and go back to the ISR it last saw
    // committed, counting followers it no longer waits for; it must hear that it lost the
    // partition instead, as Kafka checks the epochs before the new ISR members (found by
    // `keel sim cluster --seed 1914 --controllers 1`: the deposed leader's high watermark
    // passed a record another leader had replaced).
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(2)).unwrap();
    let p = c.partition(t, 0);
    let leader = p.leader.unwrap();
    let epoch = c.epochs[&leader];
    let stale_follower = (1..=3).map(NodeId).find(|&r| r != leader).unwrap();
    let old = c.epochs[&stale_follower];
    let request =
        AlterIsr { leader, leader_epoch: p.leader_epoch, partition_epoch: p.partition_epoch, new_isr: p.isr.clone() };
    c.fence(leader);
    c.register(stale_follower.0, false);
    c.commit();
    let now = c.partition(t, 0);
    assert!(now.leader != Some(leader) && now.leader_epoch > p.leader_epoch, "{now:?}");
    let refused = c.controller.alter_partition(leader, epoch, t, 0, &request, &[(stale_follower, old)]);
    let code = refused.map(|_| ()).unwrap_err().code;
    assert!(matches!(code, ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch), "{code:?}");
}

#[test]
fn a_min_isr_change_revisits_the_elr_unless_the_planted_bug_skips_it() {
    let lower_min_isr = |mutation| {
        let mut c = Cluster::with(ControllerConfig { mutation, ..ControllerConfig::default() });
        c.start(&[1, 2, 3]);
        let t = c.create("t", 1, 3, Some(3)).unwrap();
        let leader = c.partition(t, 0).leader.unwrap();
        let other = (1..=3).map(NodeId).find(|&r| r != leader).unwrap();
        c.fence(other);
        assert!(!c.partition(t, 0).elr.is_empty(), "an ISR below min ISR keeps the ELR");
        let configs = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "1".to_string())]);
        let _kept_in_the_working_image = c.controller.alter_configs("t", configs).unwrap();
        c.controller.check_invariants().map(|()| c.partition(t, 0).elr)
    };
    assert_eq!(lower_min_isr(None), Ok(Vec::new()));
    let kept = lower_min_isr(Some(Mutation::IgnoreMinIsrChange)).unwrap_err();
    assert!(kept.contains("kept while the ISR"), "{kept}");
}

#[test]
fn replicas_can_be_assigned_by_hand() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    c.fence(NodeId(3));
    let assignment = vec![n(&[3, 1]), n(&[2, 3])];
    let decision = c.controller.create_topic_assigned("manual", assignment.clone(), BTreeMap::new(), &mut c.rng);
    let t = c.take(decision).unwrap();
    c.commit();
    let p0 = c.partition(t, 0);
    assert_eq!(p0.replicas, assignment[0]);
    assert_eq!(p0.leader, Some(NodeId(1)), "the fenced preferred leader is passed over");
    assert_eq!(c.partition(t, 1).leader, Some(NodeId(2)));
    let decision = c.controller.create_partitions_assigned("manual", vec![n(&[1, 2])]);
    c.take(decision).unwrap();
    c.commit();
    assert_eq!(c.partition(t, 2).replicas, n(&[1, 2]));

    let refused = |c: &mut Cluster, assignment: Vec<Vec<NodeId>>| {
        let decision = c.controller.create_topic_assigned("refused", assignment, BTreeMap::new(), &mut c.rng);
        decision.map(drop).map_err(|e| e.code)
    };
    let invalid = Err(ErrorCode::InvalidReplicaAssignment);
    assert_eq!(refused(&mut c, vec![]), Err(ErrorCode::InvalidPartitions));
    assert_eq!(refused(&mut c, vec![n(&[1, 2]), n(&[3])]), invalid, "uneven replication");
    assert_eq!(refused(&mut c, vec![n(&[1, 1])]), invalid, "a broker twice");
    assert_eq!(refused(&mut c, vec![n(&[1, 7])]), invalid, "an unknown broker");
    assert_eq!(refused(&mut c, vec![vec![]]), invalid);
    let wrong_rf = c.controller.create_partitions_assigned("manual", vec![n(&[1, 2, 3])]);
    assert_eq!(wrong_rf.map(drop).map_err(|e| e.code), invalid);
    let none = c.controller.create_partitions_assigned("manual", vec![]);
    assert_eq!(none.map(drop).map_err(|e| e.code), Err(ErrorCode::InvalidPartitions));
    let taken = c.controller.create_topic_assigned("manual", vec![n(&[1])], BTreeMap::new(), &mut c.rng);
    assert_eq!(taken.map(drop).map_err(|e| e.code), Err(ErrorCode::TopicAlreadyExists));
}

#[test]
fn config_changes_reach_the_partitions() {
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let t = c.create("t", 1, 3, Some(3)).unwrap();
    let leader = c.partition(t, 0).leader.unwrap();
    c.alter_isr(t, 0, &[leader.0]).unwrap();
    assert_eq!(c.partition(t, 0).elr.len(), 2);
    // min ISR 1: the ISR meets it, so the ELR members are no longer safe leaders.
    let configs = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "1".to_string())]);
    let decision = c.controller.alter_configs("t", configs);
    c.take(decision).unwrap();
    c.commit();
    assert_eq!(c.partition(t, 0).elr, vec![]);
    let too_high = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "4".to_string())]);
    let refused = c.controller.alter_configs("t", too_high).map(|_| ()).unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidConfig);
    assert_eq!(
        c.controller.alter_configs("nope", BTreeMap::new()).map(|_| ()).unwrap_err().code,
        ErrorCode::UnknownTopicOrPartition
    );
    // The last ISR member goes: nobody may lead...
    c.fence(leader);
    assert_eq!(c.partition(t, 0).leader, None);
    // ...until unclean election is enabled. Leaving min ISR out brings the default back.
    let configs = BTreeMap::from([(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "true".to_string())]);
    let decision = c.controller.alter_configs("t", configs);
    c.take(decision).unwrap();
    c.commit();
    let p = c.partition(t, 0);
    assert!(p.leader.is_some() && p.leader != Some(leader), "{p:?}");
    assert_eq!(c.controller.image().topic(t).unwrap().configs.get(MIN_INSYNC_REPLICAS).map(String::as_str), Some("1"));
}

#[test]
fn deleting_a_topic_frees_its_name() {
    let mut c = Cluster::new();
    c.start(&[1]);
    let first = c.create("t", 1, 1, None).unwrap();
    let decision = c.controller.delete_topic("t");
    assert_eq!(c.take(decision), Ok(first));
    c.commit();
    assert_eq!(c.controller.delete_topic("t").map(|_| ()).unwrap_err().code, ErrorCode::UnknownTopicOrPartition);
    let second = c.create("t", 1, 1, None).unwrap();
    assert_ne!(first, second);
}

#[test]
fn the_default_replication_factor_is_capped_at_the_brokers_but_an_explicit_one_is_not() {
    let mut cluster = Cluster::with(ControllerConfig {
        default_replication_factor: 3,
        default_min_isr: 2,
        ..ControllerConfig::default()
    });
    cluster.start(&[1, 2]);
    let id = cluster.create("defaults", 1, -1, None).unwrap();
    let partition = cluster.partition(id, 0);
    assert_eq!(partition.replicas.len(), 2, "{partition:?}");
    assert_eq!(cluster.create("explicit", 1, 3, None), Err(ErrorCode::InvalidReplicationFactor));
}

#[test]
fn only_the_registered_broker_epoch_makes_a_registration_clean() {
    // F2 of issue 17: a broker whose data directory was replaced came back "clean", stayed in
    // the ELR as the last replica standing and was elected with an empty log.
    enum Marker {
        /// No marker: a crash, or an empty (replaced) data directory.
        None,
        /// A marker naming an epoch of an earlier run (a restored backup, say).
        Older,
        /// The marker of a clean shutdown after the current registration.
        Registered,
    }
    for (what, marker, clean) in [
        ("a replaced (empty) data directory", Marker::None, false),
        ("a marker from an older run", Marker::Older, false),
        ("the marker of its registered epoch", Marker::Registered, true),
    ] {
        let mut c = Cluster::new();
        c.start(&[1, 2, 3]);
        // Every broker restarts cleanly once, so each has an older epoch a stale marker can name.
        let older = c.epochs.clone();
        for node in [1, 2, 3] {
            c.register(node, true);
            c.commit();
            c.heartbeat(node, true, false);
            c.commit();
        }
        let t = c.create("t", 1, 3, Some(2)).unwrap();
        let replicas = c.partition(t, 0).replicas;
        let [a, b, z] = [replicas[0], replicas[1], replicas[2]];
        c.fence(a);
        c.fence(b);
        c.fence(z);
        let p = c.partition(t, 0);
        assert_eq!((p.leader, p.isr, p.elr), (None, vec![], vec![b, z]), "{what}");
        // z, the last replica standing, comes back first.
        let previous = match marker {
            Marker::None => None,
            Marker::Older => Some(older[&z]),
            Marker::Registered => Some(c.epochs[&z]),
        };
        c.register_with(z.0, previous, 100);
        c.commit();
        c.heartbeat(z.0, true, false);
        c.commit();
        let p = c.partition(t, 0);
        if clean {
            assert_eq!((p.leader, p.elr), (Some(z), vec![b]), "{what}: elected from the ELR");
        } else {
            assert!(!p.elr.contains(&z), "{what}: an unclean broker leaves the ELR: {p:?}");
            assert_eq!(p.leader, None, "{what}: an unclean broker is not elected: {p:?}");
        }
        assert_eq!(c.controller.image().broker(z).unwrap().clean_shutdown, clean, "{what}");
    }
}

#[test]
fn a_broker_never_registered_before_is_unclean() {
    let mut c = Cluster::new();
    for previous in [None, Some(BrokerEpoch(1))] {
        let request = BrokerRegistrationRequest {
            node: NodeId(5),
            listeners: vec![],
            rack: None,
            previous_broker_epoch: previous,
            process_id: 1,
            incarnation: 0,
        };
        assert_eq!(c.controller.restart(&request), crate::Restart::Unclean, "{previous:?}");
    }
    c.register_with(5, Some(BrokerEpoch(1)), 1);
    c.commit();
    assert!(!c.controller.image().broker(NodeId(5)).unwrap().clean_shutdown);
}

#[test]
fn the_same_process_registering_again_keeps_what_its_first_registration_found() {
    // A registration whose answer was lost is sent again by the same process, with the same
    // marker epoch; the first one committed meanwhile. The process lost nothing since: the
    // retry neither turns unclean (which would drop it from the ELR) nor clean.
    for clean in [true, false] {
        let mut c = Cluster::new();
        c.start(&[1, 2, 3]);
        let t = c.create("t", 1, 3, Some(2)).unwrap();
        let replicas = c.partition(t, 0).replicas;
        let [a, b, z] = [replicas[0], replicas[1], replicas[2]];
        c.fence(a);
        c.fence(b);
        c.fence(z);
        let previous = c.epochs[&z];
        let marker = clean.then_some(previous);
        let first = c.register_with(z.0, marker, 100);
        c.commit();
        let retried = c.register_with(z.0, marker, 100);
        c.commit();
        assert!(retried > first);
        assert_eq!(c.controller.image().broker(z).unwrap().clean_shutdown, clean);
        assert_eq!(c.partition(t, 0).elr.contains(&z), clean, "the retry changed nothing about the ELR");
        // After a stale broker epoch, the process sends the epoch it was registered with.
        let again = c.register_with(z.0, Some(retried), 100);
        c.commit();
        assert!(again > retried);
        assert_eq!(c.controller.image().broker(z).unwrap().clean_shutdown, clean);
        // Another process with that epoch's marker (it shut down cleanly) is clean; a third
        // that finds the same marker again (a restored copy) is not.
        c.register_with(z.0, Some(again), 101);
        c.commit();
        assert!(c.controller.image().broker(z).unwrap().clean_shutdown);
        c.register_with(z.0, Some(again), 102);
        c.commit();
        assert!(!c.controller.image().broker(z).unwrap().clean_shutdown);
    }
}

#[test]
fn producer_id_blocks_never_overlap_across_brokers_restarts_failovers_and_snapshots() {
    // F3 of issue 17: ids came from a counter in each node's data directory, which a disk swap
    // reset. Blocks from the metadata log survive all of that.
    let mut c = Cluster::new();
    c.start(&[1, 2, 3]);
    let mut blocks = Vec::new();
    for round in 0..4 {
        for node in [1, 2, 3] {
            let decision = c.controller.allocate_producer_ids(NodeId(node), c.epochs[&NodeId(node)]);
            blocks.push(c.take(decision).unwrap());
            c.commit();
        }
        // A broker comes back on an empty disk: nothing about producer ids starts over.
        c.register(round % 3 + 1, false);
        c.commit();
        // A new active controller, on a snapshot of the committed image.
        let snapshot = MetadataImage::decode(&c.controller.committed().encode()).unwrap();
        assert_eq!(&snapshot, c.controller.committed(), "the snapshot carries the next producer id");
        c.controller.reset(snapshot, c.now);
    }
    assert_eq!(blocks[0], ProducerIdBlock { first: 0, size: PRODUCER_ID_BLOCK_SIZE });
    for pair in blocks.windows(2) {
        assert_eq!(pair[0].end(), pair[1].first, "blocks follow each other without overlap: {pair:?}");
    }
    // Replaying the whole log gives the same next block.
    let mut replayed = MetadataImage::default();
    c.log.iter().for_each(|record| replayed.apply(record));
    assert_eq!(replayed.next_producer_id(), blocks.last().unwrap().end());
    assert_eq!(replayed, *c.controller.committed());
}

#[test]
fn only_a_brokers_current_registration_gets_producer_ids() {
    let mut c = Cluster::new();
    c.start(&[1]);
    let old = c.epochs[&NodeId(1)];
    c.register(1, true);
    c.commit();
    for (node, epoch) in [(1, old), (9, BrokerEpoch(1))] {
        let before = c.controller.clone();
        let refused = c.controller.allocate_producer_ids(NodeId(node), epoch).map(|d| d.reply).map_err(|e| e.code);
        assert_eq!(refused, Err(ErrorCode::StaleBrokerEpoch), "broker {node} at epoch {epoch}");
        assert_eq!(c.controller, before, "a refusal changes nothing");
    }
    // A fenced broker may still have ids: any broker answers InitProducerId.
    c.fence(NodeId(1));
    let decision = c.controller.allocate_producer_ids(NodeId(1), c.epochs[&NodeId(1)]);
    assert_eq!(c.take(decision).map(|block| block.first), Ok(0));
    c.commit();
}

#[test]
fn the_last_producer_id_block_is_refused_rather_than_wrapped() {
    let mut c = Cluster::new();
    c.start(&[1]);
    let mut image = c.controller.committed().clone();
    let epoch = c.epochs[&NodeId(1)];
    let near_the_end = i64::MAX - PRODUCER_ID_BLOCK_SIZE;
    image.apply(&MetadataRecord::ProducerIds { node: NodeId(1), broker_epoch: epoch, next_producer_id: near_the_end });
    c.controller.reset(image, c.now);
    let block = c.controller.allocate_producer_ids(NodeId(1), epoch).unwrap().reply;
    assert_eq!((block.first, block.end()), (near_the_end, i64::MAX));
    let refused = c.controller.allocate_producer_ids(NodeId(1), epoch).map(|d| d.reply).map_err(|e| e.code);
    assert_eq!(refused, Err(ErrorCode::UnknownServerError));
}
