//! keel driven by a real Kafka client (librdkafka through the rdkafka crate).

mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::Consumer;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    client_config(brokers).create().unwrap()
}

fn create_topic(broker: &TestBroker, name: &str, partitions: i32) {
    let admin = admin(&broker.brokers());
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = broker.runtime.block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

#[test]
fn hundred_thousand_records_round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "orders", 4);
    let sent: Vec<Sent> = (0..100_000).map(record_for).collect();
    // Idempotent, so a retried batch cannot overtake a later one (Kafka promises order under
    // retries only so): this test checks order, not how often the client retries.
    let settings = [("acks", "all"), ("batch.size", "131072"), ("enable.idempotence", "true")];
    let producer = producer(&broker.brokers(), &settings);
    produce_all(&producer, "orders", &sent);
    let got = consume_all(&broker.brokers(), "orders", 4, sent.len(), Duration::from_secs(60));
    assert_same(&sent, &got);
    let partitions_used = got.keys().map(|(p, _)| *p).collect::<std::collections::BTreeSet<_>>();
    assert_eq!(partitions_used.len(), 4, "keys spread over every partition");
    broker.stop();
}

#[test]
fn every_compression_codec_and_acks_level() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    let cases = [("none", "all"), ("gzip", "1"), ("snappy", "all"), ("lz4", "1"), ("zstd", "all"), ("none", "0")];
    for (i, (codec, acks)) in cases.iter().enumerate() {
        let topic = format!("codec-{codec}-acks-{acks}");
        create_topic(&broker, &topic, 2);
        let sent: Vec<Sent> = (0..2_000).map(|j| record_for(i as u64 * 10_000 + j)).collect();
        let producer = producer(&broker.brokers(), &[("compression.type", codec), ("acks", acks)]);
        produce_all(&producer, &topic, &sent);
        let got = consume_all(&broker.brokers(), &topic, 2, sent.len(), Duration::from_secs(30));
        assert_same(&sent, &got);
    }
    // Batches are stored as sent: a compressed topic's files are much smaller.
    let size = |topic: &str| -> u64 {
        (0..2)
            .map(|p| std::fs::metadata(dir.path().join(format!("{topic}-{p}/00000000000000000000.log"))).unwrap().len())
            .sum()
    };
    assert!(size("codec-zstd-acks-all") * 2 < size("codec-none-acks-all"), "zstd batches were not stored compressed");
    broker.stop();
}

#[test]
fn list_offsets_by_time_earliest_and_latest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "times", 1);
    let sent: Vec<Sent> = (0..1_000).map(record_for).collect(); // timestamps base + i
    produce_all(&producer(&broker.brokers(), &[]), "times", &sent);
    let consumer = consumer(&broker.brokers());
    let (low, high) = consumer.fetch_watermarks("times", 0, Duration::from_secs(5)).unwrap();
    assert_eq!((low, high), (0, 1000));
    let base = base_timestamp();
    for (target, expected) in
        [(base - 10, Offset::Offset(0)), (base + 500, Offset::Offset(500)), (base + 1_000, Offset::End)]
    {
        let mut query = TopicPartitionList::new();
        query.add_partition_offset("times", 0, Offset::Offset(target)).unwrap();
        let answer = consumer.offsets_for_times(query, Duration::from_secs(5)).unwrap();
        let offset = answer.find_partition("times", 0).unwrap().offset();
        assert_eq!(offset, expected, "timestamp {target}");
    }
    broker.stop();
}

#[test]
fn topics_are_created_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    let admin = admin(&broker.brokers());
    let options = AdminOptions::new();
    let ok = NewTopic::new("alpha", 3, TopicReplication::Fixed(1)).set("retention.ms", "60000");
    let too_many_replicas = NewTopic::new("beta", 1, TopicReplication::Fixed(3));
    let bad_config = NewTopic::new("gamma", 1, TopicReplication::Fixed(1)).set("cleanup.policy", "compact");
    let results =
        broker.runtime.block_on(admin.create_topics([&ok, &too_many_replicas, &bad_config], &options)).unwrap();
    assert_eq!(results[0], Ok("alpha".to_string()));
    assert_eq!(results[1], Err(("beta".to_string(), RDKafkaErrorCode::InvalidReplicationFactor)));
    assert_eq!(results[2], Err(("gamma".to_string(), RDKafkaErrorCode::InvalidConfig)));
    let again = broker.runtime.block_on(admin.create_topics([&ok], &options)).unwrap();
    assert_eq!(again[0], Err(("alpha".to_string(), RDKafkaErrorCode::TopicAlreadyExists)));

    let consumer = consumer(&broker.brokers());
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).unwrap();
    let alpha = metadata.topics().iter().find(|t| t.name() == "alpha").expect("alpha listed");
    assert_eq!(alpha.partitions().len(), 3);

    let deleted = broker.runtime.block_on(admin.delete_topics(&["alpha", "nope"], &options)).unwrap();
    assert_eq!(deleted[0], Ok("alpha".to_string()));
    assert_eq!(deleted[1], Err(("nope".to_string(), RDKafkaErrorCode::UnknownTopicOrPartition)));
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(5)).unwrap();
    assert!(metadata.topics().iter().all(|t| t.name() != "alpha"));
    // The replicas go once the broker replays the deletion, as in Kafka.
    wait_until("alpha-0 leaves the disk", Duration::from_secs(10), || !dir.path().join("alpha-0").exists());
    broker.stop();
}

#[test]
fn producing_to_a_new_topic_auto_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    let sent: Vec<Sent> = (0..100).map(record_for).collect();
    produce_all(&producer(&broker.brokers(), &[]), "auto", &sent);
    assert_same(&sent, &consume_all(&broker.brokers(), "auto", 1, 100, Duration::from_secs(20)));
    broker.stop();
}

#[test]
fn clean_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "durable", 3);
    let sent: Vec<Sent> = (0..5_000).map(record_for).collect();
    produce_all(&producer(&broker.brokers(), &[]), "durable", &sent);
    broker.stop();
    let broker = TestBroker::start(dir.path());
    assert_same(&sent, &consume_all(&broker.brokers(), "durable", 3, sent.len(), Duration::from_secs(30)));
    broker.stop();
}

/// kill -9 of a real `keel serve` process: everything acknowledged (acks=all, the default
/// flush policy `always`) is there after restart.
#[test]
fn kill_9_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let start = || {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args(["--listen", &addr])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start keel");
        wait_for_port(&addr, Duration::from_secs(20));
        child
    };
    let mut child = start();
    let sent: Vec<Sent> = (0..20_000).map(record_for).collect();
    // Idempotent, so a retry (a fresh topic's leader may not lead yet) keeps the order the
    // check below reads back.
    produce_all(&producer(&addr, &[("acks", "all"), ("enable.idempotence", "true")]), "crashy", &sent);
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let mut child = start();
    let got = consume_all(&addr, "crashy", 1, sent.len(), Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_same(&sent, &got);
}

#[test]
fn admin_partitions_configs_and_record_deletion() {
    use rdkafka::admin::{AlterConfig, NewPartitions, ResourceSpecifier};
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "admin", 2);
    let sent: Vec<Sent> = (0..1_000).map(record_for).collect();
    produce_all(&producer(&broker.brokers(), &[]), "admin", &sent);
    let admin = admin(&broker.brokers());
    let options = AdminOptions::new();

    // More partitions: metadata shows them, they accept records.
    let grown = broker.runtime.block_on(admin.create_partitions([&NewPartitions::new("admin", 5)], &options)).unwrap();
    assert_eq!(grown[0], Ok("admin".to_string()));
    let shrink = broker.runtime.block_on(admin.create_partitions([&NewPartitions::new("admin", 3)], &options)).unwrap();
    assert_eq!(shrink[0], Err(("admin".to_string(), RDKafkaErrorCode::InvalidPartitions)));
    let consumer = consumer(&broker.brokers());
    let metadata = consumer.fetch_metadata(Some("admin"), Duration::from_secs(5)).unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 5);

    // Configs change live and DescribeConfigs shows them.
    let alter =
        AlterConfig::new(ResourceSpecifier::Topic("admin")).set("retention.ms", "3600000").set("flush.policy", "never");
    let altered = broker.runtime.block_on(admin.alter_configs([&alter], &options)).unwrap();
    assert!(altered[0].is_ok(), "{altered:?}");
    let described =
        broker.runtime.block_on(admin.describe_configs([&ResourceSpecifier::Topic("admin")], &options)).unwrap();
    let resource = described[0].as_ref().unwrap();
    let entry = |name: &str| resource.entries.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(entry("retention.ms").as_deref(), Some("3600000"));
    assert_eq!(entry("flush.policy").as_deref(), Some("never"));
    let topic = broker.running.as_ref().unwrap().broker.topics.get("admin").unwrap();
    assert_eq!(topic.partitions[0].log.config().retention_ms, Some(3_600_000), "applied to the open log");
    let bad = AlterConfig::new(ResourceSpecifier::Topic("admin")).set("retention.ms", "soon");
    // (rust-rdkafka does not surface per-resource AlterConfigs errors; check the effect.)
    broker.runtime.block_on(admin.alter_configs([&bad], &options)).unwrap();
    assert_eq!(topic.partitions[0].log.config().retention_ms, Some(3_600_000), "an invalid value changes nothing");
    let topic = broker.running.as_ref().unwrap().broker.topics.get("admin").unwrap();
    assert_eq!(topic.configs.get("retention.ms").map(String::as_str), Some("3600000"));

    // DeleteRecords moves the low watermark.
    let mut offsets = TopicPartitionList::new();
    offsets.add_partition_offset("admin", 0, Offset::Offset(10)).unwrap();
    let deleted = broker.runtime.block_on(admin.delete_records(&offsets, &options)).unwrap();
    assert_eq!(deleted.find_partition("admin", 0).unwrap().offset(), Offset::Offset(10));
    let (low, _) = consumer.fetch_watermarks("admin", 0, Duration::from_secs(5)).unwrap();
    assert_eq!(low, 10);
    broker.stop();
}
