//! What Kafka clients are told by a replicated partition's replicas: a follower refuses
//! Produce, Fetch and ListOffsets with NOT_LEADER_OR_FOLLOWER; a client's leader epoch that is
//! newer than a replica knows is UNKNOWN_LEADER_EPOCH, an older one FENCED_LEADER_EPOCH
//! (KIP-320); a leader takes acks=all writes only with min ISR in sync; records deleted at the
//! leader (DeleteRecords) are deleted at the followers too.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_broker::broker::Reply;
use keel_broker::RunningNode;
use keel_kafka::kafka_protocol::messages::create_topics_request::CreatableTopic;
use keel_kafka::kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keel_kafka::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use keel_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use keel_kafka::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;

mod common;
use common::{batch, free_port, node_config};

const TOPIC: &str = "epochs";

fn name() -> TopicName {
    TopicName(StrBytes::from_string(TOPIC.to_string()))
}

async fn ask(node: &RunningNode, api_key: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
    match node.broker.handle(api_key, version, request).await {
        Reply::Response(response) => response,
        other => panic!("{api_key:?}: no response: {other:?}"),
    }
}

async fn produce(node: &RunningNode) -> i16 {
    let data = TopicProduceData::default()
        .with_name(name())
        .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch()))]);
    let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![data]);
    match ask(node, ApiKey::Produce, 9, RequestKind::Produce(request)).await {
        ResponseKind::Produce(r) => r.responses[0].partition_responses[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn fetch(node: &RunningNode, current_leader_epoch: i32) -> i16 {
    let partition = FetchPartition::default()
        .with_partition(0)
        .with_current_leader_epoch(current_leader_epoch)
        .with_partition_max_bytes(1 << 20);
    let topic = FetchTopic::default().with_topic(name()).with_partitions(vec![partition]);
    let request = FetchRequest::default().with_replica_id(BrokerId(-1)).with_max_wait_ms(0).with_topics(vec![topic]);
    match ask(node, ApiKey::Fetch, 12, RequestKind::Fetch(request)).await {
        ResponseKind::Fetch(r) => r.responses[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    }
}

async fn list_offsets(node: &RunningNode) -> i16 {
    let partition = ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1);
    let topic = ListOffsetsTopic::default().with_name(name()).with_partitions(vec![partition]);
    let request = ListOffsetsRequest::default().with_replica_id(BrokerId(-1)).with_topics(vec![topic]);
    match ask(node, ApiKey::ListOffsets, 7, RequestKind::ListOffsets(request)).await {
        ResponseKind::ListOffsets(r) => r.topics[0].partitions[0].error_code,
        other => panic!("{other:?}"),
    }
}

/// DeleteRecords before `offset` in partition 0: (error code, low watermark).
async fn delete_records(node: &RunningNode, offset: i64) -> (i16, i64) {
    let partition = DeleteRecordsPartition::default().with_partition_index(0).with_offset(offset);
    let topic = DeleteRecordsTopic::default().with_name(name()).with_partitions(vec![partition]);
    let request = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![topic]);
    match ask(node, ApiKey::DeleteRecords, 2, RequestKind::DeleteRecords(request)).await {
        ResponseKind::DeleteRecords(r) => {
            let p = &r.topics[0].partitions[0];
            (p.error_code, p.low_watermark)
        }
        other => panic!("{other:?}"),
    }
}

fn log_start_offset(node: &RunningNode) -> i64 {
    node.broker.topics.get(TOPIC).and_then(|t| t.partition(0).map(|p| p.log.log_start_offset())).unwrap_or(-1)
}

/// Partition 0 as `node` reports it: (leader, leader epoch, ISR size).
async fn partition_0(node: &RunningNode) -> Option<(i32, i32, usize)> {
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(name()))]));
    let ResponseKind::Metadata(r) = ask(node, ApiKey::Metadata, 12, RequestKind::Metadata(request)).await else {
        return None;
    };
    let p = r.topics.first()?.partitions.first()?;
    Some((p.leader_id.0, p.leader_epoch, p.isr_nodes.len()))
}

/// Waits until every node agrees partition 0 satisfies `done`, and every replica has taken
/// its role (a produce to the leader no longer says NOT_LEADER_OR_FOLLOWER).
async fn wait_for(
    nodes: &BTreeMap<i32, RunningNode>,
    what: &str,
    done: impl Fn((i32, i32, usize)) -> bool,
) -> (i32, i32) {
    for _ in 0..200 {
        let mut views = Vec::new();
        for node in nodes.values() {
            views.push(partition_0(node).await);
        }
        if let Some(Some(first)) = views.first().copied() {
            if done(first) && views.iter().all(|v| *v == Some(first)) {
                return (first.0, first.1);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_answer_clients_with_kafkas_leadership_errors() {
    let dir = tempfile::tempdir().unwrap();
    let controllers = (1..=3).map(|id| format!("{id}@127.0.0.1:{}", free_port())).collect::<Vec<_>>().join(",");
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, RunningNode::start(node_config(id, &controllers, dir.path())).await.unwrap());
    }
    // Create the topic through any broker (it forwards to the controller) once all registered.
    let create = CreateTopicsRequest::default().with_timeout_ms(5000).with_topics(vec![CreatableTopic::default()
        .with_name(name())
        .with_num_partitions(1)
        .with_replication_factor(3)]);
    let mut created = false;
    for _ in 0..100 {
        let ResponseKind::CreateTopics(r) =
            ask(&nodes[&1], ApiKey::CreateTopics, 5, RequestKind::CreateTopics(create.clone())).await
        else {
            panic!("CreateTopics answered with another response")
        };
        if r.topics[0].error_code == 0 {
            created = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(created, "the topic was never created");
    let (leader, epoch) = wait_for(&nodes, "three in-sync replicas", |(l, _, isr)| l >= 0 && isr == 3).await;
    let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
    let mut produced = false;
    for _ in 0..100 {
        if produce(&nodes[&leader]).await == 0 {
            produced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(produced, "the leader never took an acks=all write");

    let not_leader = ErrorCode::NotLeaderOrFollower.code();
    assert_eq!(produce(&nodes[&follower]).await, not_leader);
    assert_eq!(fetch(&nodes[&follower], epoch).await, not_leader);
    assert_eq!(fetch(&nodes[&follower], -1).await, not_leader);
    assert_eq!(list_offsets(&nodes[&follower]).await, not_leader);
    assert_eq!(fetch(&nodes[&leader], epoch).await, 0);
    assert_eq!(fetch(&nodes[&leader], epoch + 1).await, ErrorCode::UnknownLeaderEpoch.code());
    assert_eq!(fetch(&nodes[&follower], epoch + 1).await, ErrorCode::UnknownLeaderEpoch.code());
    assert_eq!(list_offsets(&nodes[&leader]).await, 0);

    // The leader crashes: the new leader's epoch is higher, and the old epoch is fenced.
    nodes.remove(&leader).unwrap().crash();
    let (new_leader, new_epoch) =
        wait_for(&nodes, "a new leader", |(l, e, isr)| l >= 0 && l != leader && e > epoch && isr == 2).await;
    assert_eq!(fetch(&nodes[&new_leader], epoch).await, ErrorCode::FencedLeaderEpoch.code());
    assert_eq!(fetch(&nodes[&new_leader], new_epoch).await, 0);
    let mut produced = false;
    for _ in 0..100 {
        if produce(&nodes[&new_leader]).await == 0 {
            produced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(produced, "the new leader never took an acks=all write with 2 of 3 in sync");

    // DeleteRecords at the leader: the followers learn its log start offset from their
    // fetches and drop the same prefix.
    for _ in 0..3 {
        assert_eq!(produce(&nodes[&new_leader]).await, 0);
    }
    let follower = *nodes.keys().find(|&&id| id != new_leader).unwrap();
    assert_eq!(delete_records(&nodes[&follower], 2).await.0, not_leader);
    assert_eq!(delete_records(&nodes[&new_leader], 2).await, (0, 2));
    let mut followed = false;
    for _ in 0..100 {
        if nodes.values().all(|n| log_start_offset(n) == 2) {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let starts: Vec<i64> = nodes.values().map(log_start_offset).collect();
    assert!(followed, "every replica starts at offset 2: {starts:?}");
    for (_, node) in nodes {
        node.shutdown().await.unwrap();
    }
}
