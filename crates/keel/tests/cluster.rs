//! A three-node keel cluster in one process, used by librdkafka: replicated topics take
//! idempotent acks=all writes, a crashed leader's partitions fail over without losing or
//! duplicating an acknowledged record, and the crashed node catches up and rejoins the ISR; a
//! consumer group keeps its committed offsets when its coordinator crashes.

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use keel_broker::{BrokerConfig, RunningNode};
use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaErrorCode;

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;

struct Cluster {
    runtime: tokio::runtime::Runtime,
    controllers: String,
    kafka: BTreeMap<i32, String>,
    nodes: BTreeMap<i32, RunningNode>,
    dir: tempfile::TempDir,
    tweak: fn(&mut BrokerConfig),
}

impl Cluster {
    fn config(&self, id: i32) -> BrokerConfig {
        let mut config = node_config(id, &self.controllers, self.dir.path(), &self.kafka[&id]);
        (self.tweak)(&mut config);
        config
    }

    fn start(&mut self, id: i32) {
        let node = self.runtime.block_on(RunningNode::start(self.config(id))).expect("node starts");
        self.nodes.insert(id, node);
    }

    fn crash(&mut self, id: i32) {
        self.nodes.remove(&id).expect("running").crash();
    }

    fn brokers(&self) -> String {
        self.nodes.keys().map(|id| self.kafka[id].clone()).collect::<Vec<_>>().join(",")
    }
}

fn node_config(id: i32, controllers: &str, dir: &Path, kafka: &str) -> BrokerConfig {
    BrokerConfig {
        node_id: id,
        data_dir: dir.join(format!("node-{id}")),
        listen: kafka.parse().unwrap(),
        controllers: controllers.to_string(),
        ..BrokerConfig::default()
    }
}

fn start_cluster(tweak: fn(&mut BrokerConfig)) -> Cluster {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let controllers = (1..=3).map(|id| format!("{id}@127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
    let kafka = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
    let mut cluster =
        Cluster { runtime, controllers, kafka, nodes: BTreeMap::new(), dir: tempfile::tempdir().unwrap(), tweak };
    for id in 1..=3 {
        cluster.start(id);
    }
    let brokers = cluster.brokers();
    let started = Instant::now();
    while consumer(&brokers).fetch_metadata(None, Duration::from_secs(5)).map_or(0, |m| m.brokers().len()) < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "brokers did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    cluster
}

/// Creates `topic` with three replicas per partition and waits until every ISR is full.
fn create_replicated(cluster: &Cluster, topic: &str, partitions: i32) -> Metadata {
    let brokers = cluster.brokers();
    let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create().expect("admin");
    let created = cluster
        .runtime
        .block_on(admin.create_topics(
            [&NewTopic::new(topic, partitions, TopicReplication::Fixed(3))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    wait_for(&brokers, topic, "three in-sync replicas everywhere", |m| fully_replicated(m, topic, partitions))
}

fn metadata(brokers: &str, topic: &str) -> Metadata {
    consumer(brokers).fetch_metadata(Some(topic), Duration::from_secs(5)).expect("metadata")
}

/// Polls Metadata of `topic` until `done` holds, for at most 20 s.
fn wait_for(brokers: &str, topic: &str, what: &str, done: impl Fn(&Metadata) -> bool) -> Metadata {
    let started = Instant::now();
    loop {
        let metadata = metadata(brokers, topic);
        if done(&metadata) {
            return metadata;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fully_replicated(metadata: &Metadata, topic: &str, partitions: i32) -> bool {
    metadata.topics().iter().any(|t| {
        t.name() == topic
            && t.partitions().len() == partitions as usize
            && t.partitions().iter().all(|p| p.leader() >= 0 && p.isr().len() == 3)
    })
}

fn leader_of(metadata: &Metadata, topic: &str, partition: i32) -> i32 {
    let topic = metadata.topics().iter().find(|t| t.name() == topic).expect("topic");
    topic.partitions().iter().find(|p| p.id() == partition).expect("partition").leader()
}

#[test]
fn replicated_topic_keeps_every_acknowledged_record_through_a_leader_crash() {
    let mut cluster = start_cluster(|_| {});
    let brokers = cluster.brokers();
    let before = create_replicated(&cluster, TOPIC, PARTITIONS);

    let settings = [
        ("enable.idempotence", "true"),
        ("acks", "all"),
        ("retry.backoff.ms", "50"),
        ("message.timeout.ms", "60000"),
        ("topic.metadata.refresh.interval.ms", "500"),
    ];
    let producer = producer(&brokers, &settings);
    let first: Vec<Sent> = (0..3_000).map(record_for).collect();
    produce_all(&producer, TOPIC, &first);

    // Crash the leader of partition 0: the controller fences it and elects from the ISR.
    let crashed = leader_of(&before, TOPIC, 0);
    cluster.crash(crashed);
    let second: Vec<Sent> = (3_000..6_000).map(record_for).collect();
    produce_all(&producer, TOPIC, &second);
    let survivors = cluster.brokers();
    let after = metadata(&survivors, TOPIC);
    assert_ne!(leader_of(&after, TOPIC, 0), crashed, "partition 0 moved to another leader");

    let sent: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    let got = consume_all(&survivors, TOPIC, PARTITIONS, sent.len(), Duration::from_secs(30));
    assert_same(&sent, &got);

    // The crashed node restarts (uncleanly), catches up from the leaders and rejoins every ISR.
    cluster.start(crashed);
    wait_for(&cluster.brokers(), TOPIC, "the restarted node back in every ISR", |m| {
        fully_replicated(m, TOPIC, PARTITIONS)
    });
    let third: Vec<Sent> = (6_000..7_000).map(record_for).collect();
    produce_all(&producer, TOPIC, &third);
    drop(producer);
    // Everything is readable through the restarted node too, once it leads again or not.
    let sent: Vec<Sent> = sent.into_iter().chain(third).collect();
    let got = consume_all(&cluster.kafka[&crashed], TOPIC, PARTITIONS, sent.len(), Duration::from_secs(30));
    assert_same(&sent, &got);

    let runtime = cluster.runtime;
    for (_, node) in cluster.nodes {
        runtime.block_on(node.shutdown()).expect("clean shutdown");
    }
}

fn group_consumer(brokers: &str, group: &str) -> BaseConsumer {
    group_consumer_config(brokers, group).set("topic.metadata.refresh.interval.ms", "500").create().expect("consumer")
}

/// Consumes with `consumer`, committing each record synchronously before the next, until
/// `processed` holds `want` records (at most 60 s).
fn consume_committing(consumer: &BaseConsumer, processed: &mut Vec<(i32, i64)>, want: usize) {
    let started = Instant::now();
    while processed.len() < want {
        assert!(started.elapsed() < Duration::from_secs(60), "stalled after {} records", processed.len());
        let Some(message) = consumer.poll(Duration::from_millis(50)) else { continue };
        let message = match message {
            Ok(message) => message,
            // librdkafka reports its lost connection to a crashed broker through poll.
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::BrokerTransportFailure)) => continue,
            Err(error) => panic!("consume: {error}"),
        };
        processed.push((message.partition(), message.offset()));
        consumer.commit_message(&message, CommitMode::Sync).expect("commit");
    }
}

#[test]
fn consumer_group_resumes_from_its_commits_when_the_coordinator_crashes() {
    const GROUPED: &str = "grouped";
    const GROUP: &str = "survivors";
    const OFFSETS_PARTITIONS: u32 = 3;
    let mut cluster = start_cluster(|config| {
        config.offsets_topic_num_partitions = OFFSETS_PARTITIONS;
        config.group_initial_rebalance_delay_ms = 0;
    });
    let brokers = cluster.brokers();
    create_replicated(&cluster, GROUPED, 3);
    check_manual_assignment(&cluster);
    let sent: Vec<Sent> = (0..600).map(record_for).collect();
    produce_all(&producer(&brokers, &[("acks", "all")]), GROUPED, &sent);

    let mut processed = Vec::new();
    {
        let first = group_consumer(&brokers, GROUP);
        first.subscribe(&[GROUPED]).expect("subscribe");
        consume_committing(&first, &mut processed, 300);
        first.unsubscribe();
    }

    // The group's coordinator is the leader of its offsets partition: crash it.
    let offsets_partition = keel_groups::offsets_partition(GROUP, OFFSETS_PARTITIONS) as i32;
    let offsets = metadata(&brokers, "__consumer_offsets");
    let coordinator = leader_of(&offsets, "__consumer_offsets", offsets_partition);
    let replicas =
        offsets.topics()[0].partitions().iter().find(|p| p.id() == offsets_partition).unwrap().replicas().len();
    assert_eq!(replicas, 3, "__consumer_offsets is replicated like any topic");
    cluster.crash(coordinator);

    // A new leader loads the group from its replica and the next member resumes after the
    // last commit: every record is processed exactly once.
    let survivors = cluster.brokers();
    let second = group_consumer(&survivors, GROUP);
    second.subscribe(&[GROUPED]).expect("subscribe");
    consume_committing(&second, &mut processed, 600);
    let distinct: BTreeSet<(i32, i64)> = processed.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        600,
        "committed records were processed again: {} of {}",
        distinct.len(),
        processed.len()
    );
    let after = metadata(&survivors, "__consumer_offsets");
    assert_ne!(leader_of(&after, "__consumer_offsets", offsets_partition), coordinator);
    drop(second);

    let runtime = cluster.runtime;
    for (_, node) in cluster.nodes {
        runtime.block_on(node.shutdown()).expect("clean shutdown");
    }
}

/// CreateTopics and CreatePartitions with replica assignments (what kafka-topics.sh
/// --replica-assignment sends): the replicas land where asked, the first preferred as leader.
fn check_manual_assignment(cluster: &Cluster) {
    const PLACED: &str = "placed";
    let brokers = cluster.brokers();
    let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create().expect("admin");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let assignment: [&[i32]; 3] = [&[1, 2], &[2, 3], &[3, 1]];
    let topic = NewTopic::new(PLACED, 3, TopicReplication::Variable(&assignment));
    let created = cluster.runtime.block_on(admin.create_topics([&topic], &options)).expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let grown = NewPartitions::new(PLACED, 4).assign(&[&[3, 2]]);
    let grown = cluster.runtime.block_on(admin.create_partitions([&grown], &options)).expect("create partitions");
    assert!(grown.iter().all(Result::is_ok), "{grown:?}");
    let uneven: [&[i32]; 2] = [&[1, 2], &[3]];
    let refused = NewTopic::new("uneven", 2, TopicReplication::Variable(&uneven));
    let refused = cluster.runtime.block_on(admin.create_topics([&refused], &options)).expect("create topics");
    assert!(
        matches!(refused[0], Err((_, RDKafkaErrorCode::InvalidReplicaAssignment))),
        "uneven replication is refused: {refused:?}"
    );
    let metadata = wait_for(&brokers, PLACED, "the placed topic with both replicas in sync", |m| {
        m.topics().iter().any(|t| {
            t.name() == PLACED
                && t.partitions().len() == 4
                && t.partitions().iter().all(|p| p.leader() >= 0 && p.isr().len() == 2)
        })
    });
    let topic = metadata.topics().iter().find(|t| t.name() == PLACED).unwrap();
    let placed: Vec<(i32, Vec<i32>, i32)> =
        topic.partitions().iter().map(|p| (p.id(), p.replicas().to_vec(), p.leader())).collect();
    assert_eq!(
        placed,
        vec![(0, vec![1, 2], 1), (1, vec![2, 3], 2), (2, vec![3, 1], 3), (3, vec![3, 2], 3)],
        "replicas as assigned, the first of each leading"
    );
}
