//! A three-node keel cluster in one process, used by librdkafka: replicated topics take
//! idempotent acks=all writes, a crashed leader's partitions fail over without losing or
//! duplicating an acknowledged record, and the crashed node catches up and rejoins the ISR.

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use keel_broker::{BrokerConfig, RunningClusterNode};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::metadata::Metadata;

const TOPIC: &str = "replicated";
const PARTITIONS: i32 = 3;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Cluster {
    runtime: tokio::runtime::Runtime,
    controllers: String,
    kafka: BTreeMap<i32, String>,
    nodes: BTreeMap<i32, RunningClusterNode>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn config(&self, id: i32) -> BrokerConfig {
        node_config(id, &self.controllers, self.dir.path(), &self.kafka[&id])
    }

    fn start(&mut self, id: i32) {
        let node = self.runtime.block_on(RunningClusterNode::start(self.config(id))).expect("node starts");
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

fn start_cluster() -> Cluster {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let controllers = (1..=3).map(|id| format!("{id}@127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
    let kafka = (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()))).collect();
    let mut cluster =
        Cluster { runtime, controllers, kafka, nodes: BTreeMap::new(), dir: tempfile::tempdir().unwrap() };
    for id in 1..=3 {
        cluster.start(id);
    }
    cluster
}

fn metadata(brokers: &str) -> Metadata {
    consumer(brokers).fetch_metadata(Some(TOPIC), Duration::from_secs(5)).expect("metadata")
}

/// Polls Metadata until `done` holds, for at most 20 s.
fn wait_for(brokers: &str, what: &str, done: impl Fn(&Metadata) -> bool) -> Metadata {
    let started = Instant::now();
    loop {
        let metadata = metadata(brokers);
        if done(&metadata) {
            return metadata;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn fully_replicated(metadata: &Metadata) -> bool {
    metadata.topics().iter().any(|t| {
        t.name() == TOPIC
            && t.partitions().len() == PARTITIONS as usize
            && t.partitions().iter().all(|p| p.leader() >= 0 && p.isr().len() == 3)
    })
}

fn leader_of(metadata: &Metadata, partition: i32) -> i32 {
    let topic = metadata.topics().iter().find(|t| t.name() == TOPIC).expect("topic");
    topic.partitions().iter().find(|p| p.id() == partition).expect("partition").leader()
}

#[test]
fn replicated_topic_keeps_every_acknowledged_record_through_a_leader_crash() {
    let mut cluster = start_cluster();
    let brokers = cluster.brokers();
    let started = Instant::now();
    while consumer(&brokers).fetch_metadata(None, Duration::from_secs(5)).map_or(0, |m| m.brokers().len()) < 3 {
        assert!(started.elapsed() < Duration::from_secs(20), "brokers did not register");
        std::thread::sleep(Duration::from_millis(100));
    }
    let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create().expect("admin");
    let created = cluster
        .runtime
        .block_on(admin.create_topics(
            [&NewTopic::new(TOPIC, PARTITIONS, TopicReplication::Fixed(3))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topics");
    assert!(created.iter().all(Result::is_ok), "{created:?}");
    let before = wait_for(&brokers, "three in-sync replicas everywhere", fully_replicated);

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
    let crashed = leader_of(&before, 0);
    cluster.crash(crashed);
    let second: Vec<Sent> = (3_000..6_000).map(record_for).collect();
    produce_all(&producer, TOPIC, &second);
    let survivors = cluster.brokers();
    let after = metadata(&survivors);
    assert_ne!(leader_of(&after, 0), crashed, "partition 0 moved to another leader");

    let sent: Vec<Sent> = first.iter().chain(&second).cloned().collect();
    let got = consume_all(&survivors, TOPIC, PARTITIONS, sent.len(), Duration::from_secs(30));
    assert_same(&sent, &got);

    // The crashed node restarts (uncleanly), catches up from the leaders and rejoins every ISR.
    cluster.start(crashed);
    wait_for(&cluster.brokers(), "the restarted node back in every ISR", fully_replicated);
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
