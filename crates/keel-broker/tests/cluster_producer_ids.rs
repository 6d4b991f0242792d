//! Producer ids in a cluster come from blocks the controller allocates through the metadata
//! log (KIP-730): a broker whose data directory was replaced never hands out an id again.

use std::time::Duration;

use keel_broker::broker::Reply;
use keel_broker::RunningNode;
use keel_kafka::kafka_protocol::messages::{ApiKey, InitProducerIdRequest, ProducerId, RequestKind, ResponseKind};
use keel_types::ErrorCode;

mod common;
use common::{broker_only_config, node_config, one_voter};

/// A new producer id from `node`, retrying while it answers COORDINATOR_LOAD_IN_PROGRESS (as
/// clients do), for at most 20 s.
async fn new_producer_id(node: &RunningNode) -> i64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        let reply = node.broker.handle(ApiKey::InitProducerId, 4, RequestKind::InitProducerId(request)).await;
        let Reply::Response(ResponseKind::InitProducerId(response)) = reply else { panic!("{reply:?}") };
        if response.error_code == ErrorCode::None.code() {
            assert!(response.producer_id.0 >= 0, "{response:?}");
            return response.producer_id.0;
        }
        assert_eq!(response.error_code, ErrorCode::CoordinatorLoadInProgress.code(), "{response:?}");
        assert!(tokio::time::Instant::now() < deadline, "no producer id within 20 s: {response:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_data_directory_never_hands_out_a_producer_id_again() {
    let dir = tempfile::tempdir().unwrap();
    let (_, controllers) = one_voter();
    let broker_only = || broker_only_config(2, &controllers, dir.path());
    let voter_node = RunningNode::start(node_config(1, &controllers, dir.path())).await.unwrap();
    let node = RunningNode::start(broker_only()).await.unwrap();
    let before: Vec<i64> = vec![new_producer_id(&node).await, new_producer_id(&node).await];
    assert_ne!(before[0], before[1]);

    // The broker's disk is replaced: it starts on an empty data directory.
    node.shutdown().await.unwrap();
    std::fs::remove_dir_all(broker_only().data_dir).unwrap();
    let node = RunningNode::start(broker_only()).await.unwrap();
    let after = new_producer_id(&node).await;
    assert!(!before.contains(&after), "producer id {after} was handed out before the disk swap: {before:?}");
    let elsewhere = new_producer_id(&voter_node).await;
    assert!(!before.contains(&elsewhere) && elsewhere != after, "{elsewhere} {after} {before:?}");

    node.shutdown().await.unwrap();
    voter_node.shutdown().await.unwrap();
}
