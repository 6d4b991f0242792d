//! Every supported API at every supported version: the broker's response must encode. Fields
//! that exist only in some versions are the usual way a Kafka broker breaks old clients
//! (kcat's ListOffsets v2 closed connections before this test existed).

use keel_broker::broker::Reply;
use keel_kafka::kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use keel_kafka::kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use keel_kafka::kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keel_kafka::kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use keel_kafka::kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use keel_kafka::kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_kafka::{encode_response, SUPPORTED_APIS};

mod common;
use common::batch;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn request(api_key: ApiKey, version: i16, topic_id: uuid::Uuid, n: i16) -> RequestKind {
    let by_id = |t: &str| -> (TopicName, uuid::Uuid) {
        if version >= 13 {
            (name(""), topic_id)
        } else {
            (name(t), uuid::Uuid::nil())
        }
    };
    match api_key {
        ApiKey::ApiVersions => RequestKind::ApiVersions(ApiVersionsRequest::default()),
        ApiKey::Metadata => RequestKind::Metadata(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(name("t"))),
                    MetadataRequestTopic::default().with_name(Some(name("missing"))),
                ]))
                .with_allow_auto_topic_creation(false)
                .with_include_topic_authorized_operations(version >= 8)
                .with_include_cluster_authorized_operations((8..=10).contains(&version)),
        ),
        ApiKey::Produce => {
            let (known, known_id) = by_id("t");
            let good = TopicProduceData::default().with_name(known).with_topic_id(known_id).with_partition_data(vec![
                PartitionProduceData::default().with_index(0).with_records(Some(batch())),
                PartitionProduceData::default().with_index(0).with_records(Some(bytes::Bytes::from_static(b"junk"))),
                PartitionProduceData::default().with_index(9).with_records(Some(batch())),
            ]);
            let unknown = TopicProduceData::default()
                .with_name(name("missing"))
                .with_topic_id(uuid::Uuid::from_u128(1))
                .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(batch()))]);
            RequestKind::Produce(
                ProduceRequest::default().with_acks(-1).with_timeout_ms(1000).with_topic_data(vec![good, unknown]),
            )
        }
        ApiKey::Fetch => {
            let (known, known_id) = by_id("t");
            let partitions = vec![
                FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
                FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(1 << 40)
                    .with_partition_max_bytes(1 << 20),
                FetchPartition::default().with_partition(7).with_partition_max_bytes(100),
            ];
            RequestKind::Fetch(FetchRequest::default().with_max_wait_ms(0).with_max_bytes(1 << 20).with_topics(vec![
                FetchTopic::default().with_topic(known).with_topic_id(known_id).with_partitions(partitions),
            ]))
        }
        ApiKey::ListOffsets => {
            let partitions = [-1, -2, -3, 0]
                .into_iter()
                .map(|ts| ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts))
                .chain([ListOffsetsPartition::default().with_partition_index(5).with_timestamp(-1)])
                .collect();
            RequestKind::ListOffsets(ListOffsetsRequest::default().with_topics(vec![
                ListOffsetsTopic::default().with_name(name("t")).with_partitions(partitions),
                ListOffsetsTopic::default()
                    .with_name(name("missing"))
                    .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-2)]),
            ]))
        }
        ApiKey::CreateTopics => RequestKind::CreateTopics(CreateTopicsRequest::default().with_topics(vec![
                CreatableTopic::default()
                    .with_name(name(&format!("new-{n}")))
                    .with_num_partitions(2)
                    .with_replication_factor(1)
                    .with_configs(vec![CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1000")))]),
                CreatableTopic::default().with_name(name("t")).with_num_partitions(1).with_replication_factor(1),
                CreatableTopic::default().with_name(name("bad name")).with_num_partitions(1).with_replication_factor(1),
            ])),
        ApiKey::DeleteTopics => {
            let doomed = format!("new-{n}");
            if version >= 6 {
                RequestKind::DeleteTopics(DeleteTopicsRequest::default().with_topics(vec![
                    DeleteTopicState::default().with_name(Some(name(&doomed))),
                    DeleteTopicState::default().with_topic_id(uuid::Uuid::from_u128(3)),
                ]))
            } else {
                RequestKind::DeleteTopics(
                    DeleteTopicsRequest::default().with_topic_names(vec![name(&doomed), name("missing")]),
                )
            }
        }
        ApiKey::DescribeConfigs => {
            RequestKind::DescribeConfigs(DescribeConfigsRequest::default().with_resources(vec![
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t")),
                DescribeConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("missing")),
                DescribeConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("0")),
                DescribeConfigsResource::default()
                    .with_resource_type(9)
                    .with_resource_name(StrBytes::from_static_str("x")),
            ]))
        }
        ApiKey::FindCoordinator => RequestKind::FindCoordinator(
            FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str("g"))
                .with_coordinator_keys(vec![StrBytes::from_static_str("g"), StrBytes::from_static_str("h")]),
        ),
        ApiKey::InitProducerId => RequestKind::InitProducerId(
            InitProducerIdRequest::default().with_producer_id(ProducerId(-1)).with_producer_epoch(-1),
        ),
        ApiKey::JoinGroup => RequestKind::JoinGroup(
            JoinGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(format!("g{n}"))))
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(10_000)
                .with_group_instance_id(if version >= 5 { Some(StrBytes::from_static_str("i")) } else { None })
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(bytes::Bytes::from_static(b"m"))]),
        ),
        ApiKey::SyncGroup => RequestKind::SyncGroup(
            SyncGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("nope")))
                .with_member_id(StrBytes::from_static_str("m")),
        ),
        ApiKey::Heartbeat => RequestKind::Heartbeat(
            HeartbeatRequest::default().with_group_id(GroupId(StrBytes::from_static_str("nope"))),
        ),
        ApiKey::LeaveGroup => RequestKind::LeaveGroup(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("nope")))
                .with_member_id(if version < 3 { StrBytes::from_static_str("m") } else { StrBytes::default() })
                .with_members(if version >= 3 {
                    vec![leave_group_request::MemberIdentity::default().with_member_id(StrBytes::from_static_str("m"))]
                } else {
                    vec![]
                }),
        ),
        ApiKey::OffsetCommit => RequestKind::OffsetCommit(
            OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_static_str("committer")))
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(1),
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(9)
                            .with_committed_offset(1),
                    ])]),
        ),
        ApiKey::OffsetFetch => {
            if version >= 8 {
                RequestKind::OffsetFetch(
                    OffsetFetchRequest::default()
                        .with_groups(vec![offset_fetch_request::OffsetFetchRequestGroup::default()
                            .with_group_id(GroupId(StrBytes::from_static_str("committer")))]),
                )
            } else {
                RequestKind::OffsetFetch(
                    OffsetFetchRequest::default()
                        .with_group_id(GroupId(StrBytes::from_static_str("committer")))
                        .with_topics(None),
                )
            }
        }
        ApiKey::ListGroups => RequestKind::ListGroups(ListGroupsRequest::default()),
        ApiKey::DescribeGroups => RequestKind::DescribeGroups(DescribeGroupsRequest::default().with_groups(vec![
            GroupId(StrBytes::from_static_str("g1")),
            GroupId(StrBytes::from_static_str("committer")),
        ])),
        ApiKey::DeleteGroups => RequestKind::DeleteGroups(
            DeleteGroupsRequest::default().with_groups_names(vec![GroupId(StrBytes::from_static_str("nope"))]),
        ),
        ApiKey::OffsetDelete => RequestKind::OffsetDelete(
            OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_static_str("committer"))),
        ),
        ApiKey::CreatePartitions => {
            RequestKind::CreatePartitions(CreatePartitionsRequest::default().with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default().with_name(name("t")).with_count(1),
                create_partitions_request::CreatePartitionsTopic::default().with_name(name("missing")).with_count(3),
            ]))
        }
        ApiKey::AlterConfigs => RequestKind::AlterConfigs(AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("86400000")))]),
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(4)
                    .with_resource_name(StrBytes::from_static_str("0")),
            ])),
        ApiKey::IncrementalAlterConfigs => {
            RequestKind::IncrementalAlterConfigs(IncrementalAlterConfigsRequest::default().with_resources(vec![
                incremental_alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_static_str("t"))
                    .with_configs(vec![incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("segment.bytes"))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_static_str("1048576")))]),
            ]))
        }
        ApiKey::DeleteRecords => RequestKind::DeleteRecords(DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default().with_name(name("t")).with_partitions(vec![
                delete_records_request::DeleteRecordsPartition::default().with_partition_index(0).with_offset(0),
                delete_records_request::DeleteRecordsPartition::default().with_partition_index(3).with_offset(0),
            ]),
        ])),
        ApiKey::DescribeCluster => RequestKind::DescribeCluster(
            DescribeClusterRequest::default().with_include_cluster_authorized_operations(true),
        ),
        ApiKey::DescribeLogDirs => RequestKind::DescribeLogDirs(DescribeLogDirsRequest::default().with_topics(None)),
        ApiKey::SaslHandshake => RequestKind::SaslHandshake(
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
        ),
        ApiKey::SaslAuthenticate => RequestKind::SaslAuthenticate(SaslAuthenticateRequest::default()),
        ApiKey::DescribeUserScramCredentials => {
            RequestKind::DescribeUserScramCredentials(DescribeUserScramCredentialsRequest::default().with_users(None))
        }
        ApiKey::AlterUserScramCredentials => {
            RequestKind::AlterUserScramCredentials(AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                    .with_name(StrBytes::from_static_str("alice"))
                    .with_mechanism(1)
                    .with_iterations(4096)
                    .with_salt(bytes::Bytes::from_static(b"salt"))
                    .with_salted_password(bytes::Bytes::from_static(&[7; 32])),
            ]))
        }
        other => panic!("add a request for {other:?} to this test"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_supported_version_answers_and_encodes() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start_ready(common::single_node_config(dir.path())).await;
    let broker = &node.broker;
    let topic_id = common::create_topic(broker, "t", 1).await;
    let mut n = 0;
    let mut failures = Vec::new();
    for supported in SUPPORTED_APIS {
        // Delete needs the topic created by the CreateTopics round of the same version number.
        for version in supported.min..=supported.max {
            n += 1;
            let api_key = supported.api_key;
            if api_key == ApiKey::DeleteTopics {
                common::create_topic(broker, &format!("new-{n}"), 1).await;
            }
            let reply = broker.handle(api_key, version, request(api_key, version, topic_id, n)).await;
            let Reply::Response(response) = reply else {
                failures.push(format!("{api_key:?} v{version}: no response"));
                continue;
            };
            if let Err(e) = encode_response(api_key, version, 1, &response) {
                failures.push(format!("{api_key:?} v{version}: {e}"));
            }
        }
    }
    assert!(failures.is_empty(), "responses that do not encode:\n{}", failures.join("\n"));
    node.shutdown().await.unwrap();
}
