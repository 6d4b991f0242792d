//! Bad group requests get Kafka's error codes and corrupt nothing: the broker reopens with
//! the good commits intact.

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use bytes::Bytes;
use common::ask;
use keel_kafka::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use keel_kafka::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use keel_kafka::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;

fn join(session_ms: i32, protocol_type: &str, metadata: Bytes) -> RequestKind {
    RequestKind::JoinGroup(
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("bad")))
            .with_session_timeout_ms(session_ms)
            .with_rebalance_timeout_ms(session_ms)
            .with_protocol_type(StrBytes::from_string(protocol_type.to_string()))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(metadata)]),
    )
}

fn commit(topic: &str, partition: i32, offset: i64) -> RequestKind {
    RequestKind::OffsetCommit(
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("committer")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(partition)
                    .with_committed_offset(offset)])]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_kafka_errors_and_corrupt_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_ready(common::single_node_config(dir.path())).await;
    let broker = &node.broker;
    common::create_topic(broker, "t", 2).await;
    wait_for_coordinator(broker, "bad").await;
    wait_for_coordinator(broker, "committer").await;

    let cases = [
        ("session timeout 0", join(0, "consumer", Bytes::new()), ErrorCode::InvalidSessionTimeout),
        ("session timeout i32::MAX", join(i32::MAX, "consumer", Bytes::new()), ErrorCode::InvalidSessionTimeout),
        ("negative session timeout", join(-5, "consumer", Bytes::new()), ErrorCode::InvalidSessionTimeout),
        ("empty protocol type", join(10_000, "", Bytes::new()), ErrorCode::InconsistentGroupProtocol),
        (
            "2 MiB of metadata",
            join(10_000, "consumer", Bytes::from(vec![7u8; 2 << 20])),
            ErrorCode::InconsistentGroupProtocol,
        ),
    ];
    for (name, request, expected) in cases {
        let ResponseKind::JoinGroup(r) = ask(broker, ApiKey::JoinGroup, 9, request).await else { panic!("{name}") };
        assert_eq!(r.error_code, expected.code(), "{name}");
    }
    // A good commit, then commits for a missing topic and a missing partition.
    let ResponseKind::OffsetCommit(ok) = ask(broker, ApiKey::OffsetCommit, 8, commit("t", 1, 77)).await else {
        panic!()
    };
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
    for (topic, partition) in [("missing", 0), ("t", 9)] {
        let ResponseKind::OffsetCommit(r) = ask(broker, ApiKey::OffsetCommit, 8, commit(topic, partition, 5)).await
        else {
            panic!()
        };
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UnknownTopicOrPartition.code(),
            "{topic}/{partition}"
        );
    }
    node.shutdown().await.unwrap();

    // The offsets log replays cleanly and holds only the good commit.
    let node = common::start_ready(common::single_node_config(dir.path())).await;
    let broker = &node.broker;
    wait_for_coordinator(broker, "committer").await;
    let fetch =
        RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("committer")))
            .with_topics(None)]));
    let ResponseKind::OffsetFetch(r) = ask(broker, ApiKey::OffsetFetch, 8, fetch).await else { panic!() };
    let committed: Vec<(String, i32, i64)> = r.groups[0]
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset)))
        .collect();
    assert_eq!(committed, vec![("t".to_string(), 1, 77)]);
    node.shutdown().await.unwrap();
}

/// Waits (at most 10 s) until this broker coordinates `group`: `__consumer_offsets` exists,
/// is led here, and the group's partition is loaded.
async fn wait_for_coordinator(broker: &keel_broker::Broker, group: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let find = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.to_string()));
        let ResponseKind::FindCoordinator(found) =
            ask(broker, ApiKey::FindCoordinator, 3, RequestKind::FindCoordinator(find)).await
        else {
            panic!("not a FindCoordinator response")
        };
        let fetch = RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(
            vec![OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
                .with_topics(None)],
        ));
        let ResponseKind::OffsetFetch(fetched) = ask(broker, ApiKey::OffsetFetch, 8, fetch).await else { panic!() };
        if found.error_code == 0 && fetched.groups[0].error_code == 0 {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "no coordinator for {group} after 10 s: {found:?} {fetched:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
