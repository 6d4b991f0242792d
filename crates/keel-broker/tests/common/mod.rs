//! Helpers shared by the broker's integration tests.
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

use std::path::Path;

use bytes::BytesMut;
use keel_broker::BrokerConfig;
use keel_kafka::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Cluster member `id` of the quorum `controllers`, on free loopback ports, data under `dir`.
pub fn node_config(id: i32, controllers: &str, dir: &Path) -> BrokerConfig {
    BrokerConfig {
        node_id: id,
        data_dir: dir.join(format!("node-{id}")),
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        controllers: controllers.to_string(),
        ..BrokerConfig::default()
    }
}

/// One uncompressed record batch holding one record, as a producer sends it.
/// A one-voter controller quorum on a free port: the voter's cluster address and the
/// `controllers` setting naming it.
pub fn one_voter() -> (std::net::SocketAddr, String) {
    let voter: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (voter, format!("1@{voter}"))
}

/// Node `id` with the broker role only, in `dir`.
pub fn broker_only_config(id: i32, controllers: &str, dir: &Path) -> BrokerConfig {
    BrokerConfig { process_roles: Some("broker".to_string()), ..node_config(id, controllers, dir) }
}

pub fn batch() -> bytes::Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: keel_broker::clock::now_ms(),
        key: None,
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    buf.freeze()
}

/// A cluster of one (the single node `keel serve` runs) on ephemeral loopback ports, with
/// groups that start at once over 3 offsets partitions.
pub fn single_node_config(dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        controller_listen: "127.0.0.1:0".parse().unwrap(),
        group_initial_rebalance_delay_ms: 0,
        offsets_topic_num_partitions: 3,
        ..BrokerConfig::default()
    }
}

/// Starts `config` and waits until it serves every request.
pub async fn start_ready(config: BrokerConfig) -> keel_broker::RunningNode {
    let node = keel_broker::RunningNode::start(config).await.expect("the node starts");
    assert!(node.wait_ready(std::time::Duration::from_secs(30)).await, "the node registers with itself");
    node
}

/// Sends `request` and returns its response.
pub async fn ask(
    broker: &keel_broker::Broker,
    api: keel_kafka::kafka_protocol::messages::ApiKey,
    version: i16,
    request: keel_kafka::kafka_protocol::messages::RequestKind,
) -> keel_kafka::kafka_protocol::messages::ResponseKind {
    match broker.handle(api, version, request).await {
        keel_broker::broker::Reply::Response(r) => r,
        other => panic!("no response: {other:?}"),
    }
}

/// Creates topic `name` through CreateTopics and waits (at most 10 s) until this broker
/// leads every partition. Returns its id.
pub async fn create_topic(broker: &keel_broker::Broker, name: &str, partitions: i32) -> uuid::Uuid {
    use keel_kafka::kafka_protocol::messages::create_topics_request::CreatableTopic;
    use keel_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use keel_kafka::kafka_protocol::messages::*;
    use keel_kafka::kafka_protocol::protocol::StrBytes;
    let topic_name = TopicName(StrBytes::from_string(name.to_string()));
    let create = CreateTopicsRequest::default().with_timeout_ms(10_000).with_topics(vec![CreatableTopic::default()
        .with_name(topic_name.clone())
        .with_num_partitions(partitions)
        .with_replication_factor(-1)]);
    let ResponseKind::CreateTopics(created) =
        ask(broker, ApiKey::CreateTopics, 5, RequestKind::CreateTopics(create)).await
    else {
        panic!("not a CreateTopics response")
    };
    assert_eq!(created.topics[0].error_code, 0, "{:?}", created.topics[0].error_message);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metadata = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(topic_name.clone()))]));
        let ResponseKind::Metadata(m) = ask(broker, ApiKey::Metadata, 12, RequestKind::Metadata(metadata)).await else {
            panic!("not a Metadata response")
        };
        let topic = &m.topics[0];
        let led = topic.partitions.len() == partitions as usize && topic.partitions.iter().all(|p| p.leader_id.0 >= 0);
        if topic.error_code == 0
            && led
            && broker.topics.get(name).is_some_and(|t| t.partitions.len() == partitions as usize)
        {
            return topic.topic_id;
        }
        assert!(std::time::Instant::now() < deadline, "topic {name} has no leaders after 10 s: {topic:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
