//! The admin APIs real tools use beyond topic create/delete: adding partitions, changing topic
//! configs live, deleting records, describing the cluster and the log directory.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use keel_kafka::kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use keel_kafka::kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;

use crate::broker::Broker;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

impl Broker {
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
