//! A data directory keel's single node wrote (before a single node became a cluster of one)
//! opens as a cluster of one: its topics keep their ids, logs and configs, and producer ids
//! continue after the ones it handed out. The directory is built here as keel 0.1 laid it
//! out: `meta.properties`, `topics.json` without hosted partitions, `producer-ids`, and
//! partition logs in leader epoch 0.

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use std::sync::Arc;

use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_kafka::kafka_protocol::records::RecordBatchDecoder;
use keel_storage::backend::FileBackend;
use keel_storage::{Log, LogConfig};
use keel_types::LeaderEpoch;

const ORDERS_ID: &str = "6f1d2c1e-7f47-4c1c-9d55-2f7b0e1c2a01";

fn write_legacy_directory(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("meta.properties"), "version=1\ncluster.id=legacyclusterid0000000\nnode.id=0\n").unwrap();
    let topics =
        format!(r#"[{{"name":"orders","id":"{ORDERS_ID}","partitions":2,"configs":{{"retention.ms":"86400000"}}}}]"#);
    std::fs::write(dir.join("topics.json"), topics).unwrap();
    std::fs::write(dir.join("producer-ids"), "3000").unwrap();
    for index in 0..2 {
        let (log, _) =
            Log::open(Arc::new(FileBackend), dir.join(format!("orders-{index}")), LogConfig::default(), 0).unwrap();
        for _ in 0..3 + index {
            log.append(&common::batch(), LeaderEpoch(0), keel_broker::clock::now_ms()).unwrap();
        }
        log.close(0).unwrap();
    }
}

/// Fetches partition `partition` of orders from offset 0; returns the partition's high
/// watermark as the answer reports it.
async fn fetched_high_watermark(broker: &keel_broker::Broker, partition: i32) -> i64 {
    let fetch =
        FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    let ResponseKind::Fetch(fetched) = common::ask(broker, ApiKey::Fetch, 11, RequestKind::Fetch(fetch)).await else {
        panic!("not a Fetch response")
    };
    let p = &fetched.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "partition {partition}: {p:?}");
    let mut bytes = p.records.clone().unwrap_or_default();
    let first = RecordBatchDecoder::decode(&mut bytes).unwrap();
    assert_eq!(first.records[0].offset, 0, "the first record is served");
    p.high_watermark
}

/// Waits (at most 10 s) until orders, with its migrated id, is led here and both partitions
/// serve their records.
async fn wait_until_led(broker: &keel_broker::Broker) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metadata = MetadataRequest::default().with_topics(None);
        let ResponseKind::Metadata(m) =
            common::ask(broker, ApiKey::Metadata, 12, RequestKind::Metadata(metadata)).await
        else {
            panic!()
        };
        let orders = m.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "orders")).unwrap();
        assert_eq!(orders.topic_id.to_string(), ORDERS_ID);
        let led = orders.partitions.iter().all(|p| p.leader_id.0 == 1);
        let local = broker.topics.get("orders").is_some_and(|t| t.partitions.iter().all(|p| p.high_watermark() >= 3));
        if led && local {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "orders is not led here after 10 s: {orders:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_directory_opens_as_a_cluster_of_one() {
    let dir = tempfile::tempdir().unwrap();
    write_legacy_directory(dir.path());
    let node = common::start_ready(common::single_node_config(dir.path())).await;
    let broker = &node.broker;
    assert_eq!(broker.cluster_id, "legacyclusterid0000000", "the cluster id stays");

    // The topic, its id and config, and every record are there, led by this node (once its
    // registration is unfenced and the partitions elect it).
    wait_until_led(broker).await;
    assert_eq!((fetched_high_watermark(broker, 0).await, fetched_high_watermark(broker, 1).await), (3, 4));
    assert_eq!(broker.topics.get("orders").unwrap().log_config.retention_ms, Some(86_400_000));

    // Producer ids continue after the 3000 the single node reserved.
    let init = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(60_000);
    let ResponseKind::InitProducerId(id) =
        common::ask(broker, ApiKey::InitProducerId, 4, RequestKind::InitProducerId(init)).await
    else {
        panic!()
    };
    assert_eq!(id.error_code, 0);
    assert!(id.producer_id.0 >= 3000, "producer id {} could repeat one the single node handed out", id.producer_id.0);
    node.shutdown().await.unwrap();

    // It opens again as the cluster of one it is now.
    let node = common::start_ready(common::single_node_config(dir.path())).await;
    wait_until_led(&node.broker).await;
    assert_eq!(fetched_high_watermark(&node.broker, 1).await, 4);
    node.shutdown().await.unwrap();
}
