//! Bad group requests get Kafka's error codes and corrupt nothing: the broker reopens with
//! the good commits intact.

use bytes::Bytes;
use keel_broker::broker::Reply;
use keel_broker::{Broker, BrokerConfig};
use keel_kafka::kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use keel_kafka::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use keel_kafka::kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;

fn open(dir: &std::path::Path) -> Broker {
    let (_tx, shutdown) = tokio::sync::watch::channel(false);
    let config = BrokerConfig {
        data_dir: dir.to_path_buf(),
        group_initial_rebalance_delay_ms: 0,
        offsets_topic_num_partitions: 3,
        ..BrokerConfig::default()
    };
    Broker::open(config, shutdown).unwrap()
}

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

async fn ask(broker: &Broker, api: ApiKey, version: i16, request: RequestKind) -> ResponseKind {
    match broker.handle(api, version, request).await {
        Reply::Response(r) => r,
        other => panic!("no response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_group_requests_get_kafka_errors_and_corrupt_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path());
    broker.topics.create("t", Some(2), Default::default(), false, 0).unwrap();

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
        let ResponseKind::JoinGroup(r) = ask(&broker, ApiKey::JoinGroup, 9, request).await else { panic!("{name}") };
        assert_eq!(r.error_code, expected.code(), "{name}");
    }
    // A good commit, then commits for a missing topic and a missing partition.
    let ResponseKind::OffsetCommit(ok) = ask(&broker, ApiKey::OffsetCommit, 8, commit("t", 1, 77)).await else {
        panic!()
    };
    assert_eq!(ok.topics[0].partitions[0].error_code, 0);
    for (topic, partition) in [("missing", 0), ("t", 9)] {
        let ResponseKind::OffsetCommit(r) = ask(&broker, ApiKey::OffsetCommit, 8, commit(topic, partition, 5)).await
        else {
            panic!()
        };
        assert_eq!(
            r.topics[0].partitions[0].error_code,
            ErrorCode::UnknownTopicOrPartition.code(),
            "{topic}/{partition}"
        );
    }
    broker.close().unwrap();
    drop(broker);

    // The offsets log replays cleanly and holds only the good commit.
    let broker = open(dir.path());
    let fetch =
        RequestKind::OffsetFetch(OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("committer")))
            .with_topics(None)]));
    let ResponseKind::OffsetFetch(r) = ask(&broker, ApiKey::OffsetFetch, 8, fetch).await else { panic!() };
    let committed: Vec<(String, i32, i64)> = r.groups[0]
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index, p.committed_offset)))
        .collect();
    assert_eq!(committed, vec![("t".to_string(), 1, 77)]);
}
