//! The admin APIs real tools use beyond topic create/delete: adding partitions, changing topic
//! configs live, deleting records, describing the cluster and the log directory.

use std::collections::{BTreeMap, BTreeSet};

use keel_kafka::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use keel_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use keel_kafka::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use keel_kafka::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::{ErrorCode, Refusal};

use crate::broker::Broker;
use crate::clock::now_ms;
use crate::groups::OFFSETS_TOPIC;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

/// The result of one config change request, in the shape both AlterConfigs APIs share.
struct ConfigResult {
    error: ErrorCode,
    message: Option<String>,
    resource_type: i8,
    resource_name: StrBytes,
}

impl Broker {
    pub(crate) fn create_partitions(&self, request: CreatePartitionsRequest) -> CreatePartitionsResponse {
        let results = request
            .topics
            .into_iter()
            .map(|t| {
                let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
                let node = self.config.node_id;
                let bad_assignment =
                    t.assignments.as_ref().is_some_and(|a| a.iter().any(|a| a.broker_ids.iter().any(|b| b.0 != node)));
                let outcome = if bad_assignment {
                    Err(Refusal {
                        code: ErrorCode::InvalidReplicaAssignment,
                        message: format!("replicas may only be assigned to broker {node}"),
                    })
                } else if t.name.0.as_str() == OFFSETS_TOPIC {
                    Err(Refusal {
                        code: ErrorCode::InvalidTopicException,
                        message: "the consumer offsets topic cannot change".into(),
                    })
                } else {
                    self.topics.create_partitions(&t.name.0, t.count, request.validate_only, now_ms())
                };
                match outcome {
                    Ok(()) => result,
                    Err(e) => result.with_error_code(e.code.code()).with_error_message(Some(s(e.message))),
                }
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }

    /// AlterConfigs: replaces a topic's overrides with the given set.
    pub(crate) fn alter_configs(&self, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let responses = request
            .resources
            .into_iter()
            .map(|r| {
                let set: BTreeMap<String, String> = r
                    .configs
                    .iter()
                    .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                    .collect();
                let result = self.change_configs(
                    r.resource_type,
                    r.resource_name,
                    set,
                    BTreeSet::new(),
                    true,
                    request.validate_only,
                );
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(result.error.code())
                    .with_error_message(result.message.map(s))
                    .with_resource_type(result.resource_type)
                    .with_resource_name(result.resource_name)
            })
            .collect();
        AlterConfigsResponse::default().with_responses(responses)
    }

    /// IncrementalAlterConfigs: SET (0) and DELETE (1) per key; APPEND and SUBTRACT apply to
    /// list-valued configs, and keel's topic configs have none.
    pub(crate) fn incremental_alter_configs(
        &self,
        request: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let responses = request
            .resources
            .into_iter()
            .map(|r| {
                let mut set = BTreeMap::new();
                let mut delete = BTreeSet::new();
                let mut invalid = None;
                for c in &r.configs {
                    match (c.config_operation, &c.value) {
                        (0, Some(value)) => {
                            set.insert(c.name.to_string(), value.to_string());
                        }
                        (1, _) => {
                            delete.insert(c.name.to_string());
                        }
                        (op, _) => {
                            invalid = Some(format!(
                                "operation {op} on {} is not supported (only SET and DELETE; no list configs)",
                                c.name.as_str()
                            ))
                        }
                    }
                }
                let result = match invalid {
                    Some(message) => ConfigResult {
                        error: ErrorCode::InvalidConfig,
                        message: Some(message),
                        resource_type: r.resource_type,
                        resource_name: r.resource_name,
                    },
                    None => {
                        self.change_configs(r.resource_type, r.resource_name, set, delete, false, request.validate_only)
                    }
                };
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(result.error.code())
                    .with_error_message(result.message.map(s))
                    .with_resource_type(result.resource_type)
                    .with_resource_name(result.resource_name)
            })
            .collect();
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }

    fn change_configs(
        &self,
        resource_type: i8,
        resource_name: StrBytes,
        set: BTreeMap<String, String>,
        delete: BTreeSet<String>,
        replace: bool,
        validate_only: bool,
    ) -> ConfigResult {
        let outcome = match resource_type {
            RESOURCE_TOPIC => self.topics.alter_configs(&resource_name, set, delete, replace, validate_only),
            RESOURCE_BROKER => Err(Refusal {
                code: ErrorCode::InvalidRequest,
                message: "broker configs are static in keel: set them in the config file and restart".into(),
            }),
            other => Err(Refusal {
                code: ErrorCode::InvalidRequest,
                message: format!("resource type {other} has no configs"),
            }),
        };
        let (error, message) = match outcome {
            Ok(()) => (ErrorCode::None, None),
            Err(e) => (e.code, Some(e.message)),
        };
        ConfigResult { error, message, resource_type, resource_name }
    }

    /// DeleteRecords: moves each partition's log start up to the offset (-1: the high
    /// watermark); whole segments below it are deleted.
    pub(crate) fn delete_records(&self, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.topics.get(&t.name.0);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let result = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                            return result.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                        };
                        // In a cluster the leader deletes; followers drop the same prefix
                        // when their fetches show its new log start offset.
                        let high_watermark = match crate::broker::leader_view(partition, -1) {
                            Ok(view) => view.high_watermark,
                            Err((error, _)) => return result.with_error_code(error.code()),
                        };
                        let offset = if p.offset == -1 { high_watermark } else { p.offset };
                        if offset < 0 || offset > high_watermark {
                            return result.with_error_code(ErrorCode::OffsetOutOfRange.code());
                        }
                        match partition.log.delete_records_before(offset) {
                            Ok(low) => result.with_low_watermark(low),
                            Err(e) => result.with_error_code(e.error_code().code()),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }

    pub(crate) fn describe_cluster(&self, request: DescribeClusterRequest, version: i16) -> DescribeClusterResponse {
        let (host, port) = self.advertised();
        let node = self.config.node_id;
        self.describe_cluster_with(vec![(node, host, i32::from(port), None)], node, request, version)
    }

    /// The DescribeCluster answer for `brokers`: (node id, host, port, rack).
    pub(crate) fn describe_cluster_with(
        &self,
        brokers: Vec<(i32, String, i32, Option<String>)>,
        controller: i32,
        request: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let brokers = brokers
            .into_iter()
            .map(|(node, host, port, rack)| {
                DescribeClusterBroker::default()
                    .with_broker_id(BrokerId(node))
                    .with_host(s(host))
                    .with_port(port)
                    .with_rack(rack.map(s))
            })
            .collect();
        let response = DescribeClusterResponse::default()
            .with_cluster_id(s(self.cluster_id.clone()))
            .with_controller_id(BrokerId(controller))
            .with_brokers(brokers)
            .with_cluster_authorized_operations(if request.include_cluster_authorized_operations {
                crate::broker::CLUSTER_OPERATIONS_ALL
            } else {
                i32::MIN
            });
        if version >= 1 {
            response.with_endpoint_type(request.endpoint_type)
        } else {
            response
        }
    }

    /// DescribeLogDirs: keel has one log directory, the data directory.
    pub(crate) fn describe_log_dirs(&self, request: DescribeLogDirsRequest) -> DescribeLogDirsResponse {
        let wanted: Option<BTreeMap<String, Vec<i32>>> =
            request.topics.map(|topics| topics.into_iter().map(|t| (t.topic.to_string(), t.partitions)).collect());
        let topics = self
            .topics
            .list()
            .into_iter()
            .filter(|t| wanted.as_ref().is_none_or(|w| w.contains_key(&t.name)))
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .filter(|p| wanted.as_ref().and_then(|w| w.get(&t.name)).is_none_or(|ps| ps.contains(&p.index)))
                    .map(|p| {
                        DescribeLogDirsPartition::default()
                            .with_partition_index(p.index)
                            .with_partition_size(p.log.size_bytes() as i64)
                            .with_offset_lag(0)
                    })
                    .collect();
                DescribeLogDirsTopic::default().with_name(TopicName(s(t.name.clone()))).with_partitions(partitions)
            })
            .collect();
        let result = DescribeLogDirsResult::default()
            .with_log_dir(s(self.config.data_dir.display().to_string()))
            .with_topics(topics)
            .with_total_bytes(-1)
            .with_usable_bytes(-1);
        DescribeLogDirsResponse::default().with_results(vec![result])
    }
}
