//! ListOffsets.

use keel_kafka::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use super::fetch::served_partition;
use crate::broker::{code, Broker};
use crate::topics::Partition;

impl Broker {
    pub(crate) fn list_offsets(&self, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        const EARLIEST_LOCAL: i64 = -4;
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.topics.get(&t.name.0);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                        let (partition, view) =
                            match served_partition(topic.as_ref(), p.partition_index, p.current_leader_epoch) {
                                Ok(served) => served,
                                Err(error) => return response.with_error_code(code(error)),
                            };
                        let high_watermark = view.high_watermark;
                        let found = match p.timestamp {
                            // A new leader's high watermark may still be below its
                            // predecessor's: Kafka answers OFFSET_NOT_AVAILABLE meanwhile.
                            LATEST if !view.caught_up => Err(ErrorCode::OffsetNotAvailable),
                            LATEST => Ok(Some((-1, high_watermark))),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((-1, partition.log.log_start_offset()))),
                            MAX_TIMESTAMP => max_timestamp(partition),
                            timestamp if timestamp < 0 => Err(ErrorCode::InvalidRequest),
                            timestamp => partition
                                .log
                                .offset_for_timestamp(timestamp)
                                .map(|found| found.filter(|&(_, offset)| offset < high_watermark))
                                .map_err(|e| e.error_code()),
                        };
                        match found {
                            Ok(Some((timestamp, offset))) => {
                                // The leader epoch field exists from v4 on.
                                let epoch = if version >= 4 { view.leader_epoch } else { -1 };
                                response.with_timestamp(timestamp).with_offset(offset).with_leader_epoch(epoch)
                            }
                            Ok(None) => response.with_timestamp(-1).with_offset(-1),
                            Err(error) => response.with_error_code(code(error)),
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }
}

/// ListOffsets with timestamp -3: the record with the largest timestamp.
pub(crate) fn max_timestamp(partition: &Partition) -> Result<Option<(i64, i64)>, ErrorCode> {
    let Some(max) = partition.log.max_timestamp() else { return Ok(None) };
    partition.log.offset_for_timestamp(max).map_err(|e| e.error_code())
}
