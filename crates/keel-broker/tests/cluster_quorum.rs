//! Three keel nodes in one process, each with its own data directory and cluster port: the
//! controller quorum elects a leader, brokers register and are unfenced, topics are placed,
//! a crashed node is fenced and its partitions fail over, and a restart tells clean from
//! unclean shutdowns.

use std::collections::BTreeMap;
use std::time::Duration;

use keel_broker::cluster::protocol::{ControllerStatus, Frame, Request, Response};
use keel_broker::cluster::transport::Caller;
use keel_broker::RunningNode;
use keel_metadata::MetadataImage;
use keel_types::NodeId;

mod common;
use common::{free_port, node_config};

async fn status(address: std::net::SocketAddr) -> Option<ControllerStatus> {
    match Caller::new(address).call::<_, Response>(&Frame::Request(Request::Status), Duration::from_secs(1)).await {
        Ok(Response::Status(status)) => Some(status),
        _ => None,
    }
}

/// Polls the controllers until `done` holds for the leader's view, or fails after 20 s.
async fn wait_for(
    addresses: &BTreeMap<i32, std::net::SocketAddr>,
    what: &str,
    done: impl Fn(&ControllerStatus, &MetadataImage) -> bool,
) -> (ControllerStatus, MetadataImage) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        for &address in addresses.values() {
            if let Some(status) = status(address).await {
                if status.role == "leader" {
                    let image = MetadataImage::decode(&status.image).unwrap();
                    if done(&status, &image) {
                        return (status, image);
                    }
                }
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn all_active(image: &MetadataImage, nodes: &[i32]) -> bool {
    nodes.iter().all(|&n| image.broker(NodeId(n)).is_some_and(|b| b.is_active()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_elects_registers_fails_over_and_tells_clean_from_unclean_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let addresses: BTreeMap<i32, std::net::SocketAddr> =
        (1..=3).map(|id| (id, format!("127.0.0.1:{}", free_port()).parse().unwrap())).collect();
    let controllers = addresses.iter().map(|(id, a)| format!("{id}@{a}")).collect::<Vec<_>>().join(",");
    let mut nodes: BTreeMap<i32, RunningNode> = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, RunningNode::start(node_config(id, &controllers, dir.path())).await.unwrap());
    }
    let (status, _) =
        wait_for(&addresses, "a leader and three active brokers", |_, image| all_active(image, &[1, 2, 3])).await;
    assert_eq!((status.replication_quorum, status.election_quorum, status.voters.len()), (2, 2, 3));

    // A topic through the controller: RF 3, min ISR 2 by default, leaders spread.
    let client = nodes[&1].node.client.clone();
    let created = client
        .call_active(
            Request::CreateTopic {
                name: "orders".to_string(),
                partitions: 3,
                replication_factor: 3,
                configs: BTreeMap::new(),
                assignment: Vec::new(),
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(matches!(created, Response::TopicCreated { .. }), "{created:?}");
    let (_, image) = wait_for(&addresses, "the topic", |_, image| image.topic_by_name("orders").is_some()).await;
    let topic = image.topic_by_name("orders").unwrap();
    let mut leaders: Vec<NodeId> = topic.partitions.iter().map(|p| p.leader.unwrap()).collect();
    leaders.sort();
    assert_eq!(leaders, vec![NodeId(1), NodeId(2), NodeId(3)], "one leader per broker");
    assert_eq!(topic.min_isr(), 2);

    // Crash the active controller's node: a new controller is elected, the node is fenced
    // and the partition it led moves to another ISR member.
    let crashed = status.node.0;
    nodes.remove(&crashed).unwrap().crash();
    let (after, image) = wait_for(&addresses, "failover", |status, image| {
        // A newly elected leader shows the topic once it has applied the entries it holds.
        let Some(topic) = image.topic_by_name("orders") else { return false };
        status.node.0 != crashed
            && image.broker(NodeId(crashed)).is_some_and(|b| b.fenced)
            && topic.partitions.iter().all(|p| p.leader.is_some_and(|l| l.0 != crashed))
    })
    .await;
    assert!(after.term > status.term);
    for partition in &image.topic_by_name("orders").unwrap().partitions {
        assert!(!partition.isr.contains(&NodeId(crashed)), "{partition:?}");
        assert!(partition.elr.is_empty(), "two ISR members meet min ISR: no ELR");
    }

    // The crashed node restarts without its clean-shutdown marker.
    nodes.insert(crashed, RunningNode::start(node_config(crashed, &controllers, dir.path())).await.unwrap());
    let (_, image) = wait_for(&addresses, "the restarted node", |_, image| all_active(image, &[1, 2, 3])).await;
    assert!(!image.broker(NodeId(crashed)).unwrap().clean_shutdown, "a crash is an unclean shutdown");

    // A controlled shutdown leaves the marker: the next registration is clean.
    let other = if crashed == 1 { 2 } else { 1 };
    nodes.remove(&other).unwrap().shutdown().await.unwrap();
    nodes.insert(other, RunningNode::start(node_config(other, &controllers, dir.path())).await.unwrap());
    let (_, image) = wait_for(&addresses, "the cleanly restarted node", |_, image| {
        all_active(image, &[1, 2, 3]) && image.broker(NodeId(other)).is_some_and(|b| b.broker_epoch.0 > 4)
    })
    .await;
    assert!(image.broker(NodeId(other)).unwrap().clean_shutdown, "a controlled shutdown is clean");
    for (_, node) in nodes {
        node.shutdown().await.unwrap();
    }
}

/// A broker-only node (no cluster port) registers, joins the membership through the voter's
/// cluster port, and its view reaches `keel cluster status` through its heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_only_node_gossips_and_reports_its_view_with_its_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let voter: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let controllers = format!("1@{voter}");
    let addresses = BTreeMap::from([(1, voter)]);
    let mut nodes = Vec::new();
    nodes.push(RunningNode::start(node_config(1, &controllers, dir.path())).await.unwrap());
    let broker_only = keel_broker::BrokerConfig {
        process_roles: Some("broker".to_string()),
        membership_probe_interval_ms: 100,
        ..node_config(2, &controllers, dir.path())
    };
    nodes.push(RunningNode::start(broker_only).await.unwrap());
    let both_alive = |view: &[keel_broker::cluster::protocol::ViewEntry]| {
        [1, 2].iter().all(|&n| view.iter().any(|(id, _, _, state)| *id == NodeId(n) && state == "alive"))
    };
    let (status, _) = wait_for(&addresses, "node 2's view, reported with its heartbeat", |status, image| {
        all_active(image, &[1, 2])
            && both_alive(&status.membership)
            && status.reported.iter().any(|(node, _, view)| *node == NodeId(2) && both_alive(view))
    })
    .await;
    assert_eq!(status.voters, vec![NodeId(1)], "node 2 is no voter");
    drop(nodes);
}
