//! What counts as a clean shutdown (KIP-966): a broker registers as clean only when its
//! clean-shutdown marker names the broker epoch it is registered with in the metadata log. A
//! marker from an older run, or a replaced (empty) data directory, is an unclean shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_broker::cluster::protocol::{ControllerStatus, Frame, Request, Response};
use keel_broker::cluster::transport::Caller;
use keel_broker::RunningNode;
use keel_metadata::{BrokerRegistration, MetadataImage};
use keel_types::{BrokerEpoch, NodeId};

mod common;
use common::{broker_only_config, node_config, one_voter};

async fn status(address: std::net::SocketAddr) -> Option<ControllerStatus> {
    match Caller::new(address).call::<_, Response>(&Frame::Request(Request::Status), Duration::from_secs(1)).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// Polls the controller until broker `node` is registered with an epoch above `after`, or
/// fails after 20 s.
async fn registered_after(voter: std::net::SocketAddr, node: i32, after: BrokerEpoch) -> BrokerRegistration {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = status(voter).await {
            let image = MetadataImage::decode(&status.image).unwrap();
            if let Some(broker) = image.broker(NodeId(node)).filter(|b| b.broker_epoch > after) {
                return broker.clone();
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for broker {node} to register");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_marker_naming_the_registered_epoch_is_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let (voter, controllers) = one_voter();
    let broker_only = || broker_only_config(2, &controllers, dir.path());
    let data_dir = broker_only().data_dir;
    let marker = data_dir.join("clean-shutdown");
    let mut nodes = BTreeMap::new();
    nodes.insert(1, RunningNode::start(node_config(1, &controllers, dir.path())).await.unwrap());
    nodes.insert(2, RunningNode::start(broker_only()).await.unwrap());
    let first = registered_after(voter, 2, BrokerEpoch(0)).await;

    // A controlled shutdown and a restart on the same directory: clean.
    nodes.remove(&2).unwrap().shutdown().await.unwrap();
    let stale = std::fs::read(&marker).unwrap();
    nodes.insert(2, RunningNode::start(broker_only()).await.unwrap());
    let second = registered_after(voter, 2, first.broker_epoch).await;
    assert!(second.clean_shutdown, "the marker names the registered epoch: {second:?}");

    // A marker from an older run (a restored backup, say): unclean.
    nodes.remove(&2).unwrap().shutdown().await.unwrap();
    std::fs::write(&marker, &stale).unwrap();
    nodes.insert(2, RunningNode::start(broker_only()).await.unwrap());
    let third = registered_after(voter, 2, second.broker_epoch).await;
    assert!(
        !third.clean_shutdown,
        "the marker names epoch {}, not {}: {third:?}",
        first.broker_epoch, second.broker_epoch
    );

    // A replaced, empty data directory: unclean, whatever the previous run did.
    nodes.remove(&2).unwrap().shutdown().await.unwrap();
    std::fs::remove_dir_all(&data_dir).unwrap();
    nodes.insert(2, RunningNode::start(broker_only()).await.unwrap());
    let fourth = registered_after(voter, 2, third.broker_epoch).await;
    assert!(!fourth.clean_shutdown, "an empty data directory is an unclean shutdown: {fourth:?}");

    for (_, node) in nodes {
        node.shutdown().await.unwrap();
    }
}
