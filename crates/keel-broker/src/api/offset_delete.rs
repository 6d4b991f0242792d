//! OffsetDelete.

use keel_groups::Response;
use keel_kafka::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use keel_kafka::kafka_protocol::messages::*;

use super::join_group::subscribed_topics;
use super::*;
use crate::broker::Broker;

impl Broker {
    pub(crate) async fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let partitions: Vec<(String, i32)> = request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index)))
            .collect();
        let group_id = request.group_id.to_string();
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, _now, token| {
                c.handle_offset_delete(token, &group_id, partitions, |metadata, topic| {
                    subscribed_topics(metadata).iter().any(|t| t == topic)
                })
            })
            .await;
        let (error, partitions) = match answer {
            Ok(Response::OffsetDelete { error, partitions }) => (error, partitions),
            answer => return OffsetDeleteResponse::default().with_error_code(failure(answer).code()),
        };
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for r in partitions {
            let partition = OffsetDeleteResponsePartition::default()
                .with_partition_index(r.partition)
                .with_error_code(r.error.code());
            match topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(s(r.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetDeleteResponse::default().with_error_code(error.code()).with_topics(topics)
    }
}
