//! DeleteRecords.

use keel_kafka::kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use super::fetch::served_partition;
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
                        // The leader deletes; followers drop the same prefix when their
                        // fetches show its new log start offset.
                        let (partition, high_watermark) = match served_partition(topic.as_ref(), p.partition_index, -1)
                        {
                            Ok((partition, view)) => (partition, view.high_watermark),
                            Err(error) => return result.with_error_code(error.code()),
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
