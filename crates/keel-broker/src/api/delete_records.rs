//! DeleteRecords.

use keel_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use crate::broker::Broker;

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
                        let high_watermark = match super::fetch::leader_view(partition, -1) {
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
}
