//! OffsetCommit.

use std::collections::BTreeSet;

use keel_groups::{OffsetToCommit, PartitionResult, Response};
use keel_kafka::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
    pub(crate) async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut unknown = BTreeSet::new();
        let mut offsets = Vec::new();
        for topic in &request.topics {
            let known = self.topics.get(&topic.name.0);
            for p in &topic.partitions {
                if known.as_ref().and_then(|t| t.partition(p.partition_index)).is_none() {
                    unknown.insert((topic.name.to_string(), p.partition_index));
                }
                offsets.push(OffsetToCommit {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let instance = request.group_instance_id.map(|i| i.to_string());
        let generation_id = request.generation_id_or_member_epoch;
        let requested: Vec<(String, i32)> = offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, now, token| {
                c.handle_offset_commit(
                    now,
                    token,
                    &group_id,
                    generation_id,
                    &member_id,
                    instance.as_deref(),
                    offsets,
                    &unknown,
                )
            })
            .await;
        let results = match answer {
            Ok(Response::OffsetCommit(results)) => results,
            answer => {
                // Every partition gets the request's error (NOT_COORDINATOR: the client looks
                // for the coordinator again).
                let error = failure(answer);
                requested.into_iter().map(|(topic, partition)| PartitionResult { topic, partition, error }).collect()
            }
        };
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        for r in results {
            let partition = OffsetCommitResponsePartition::default()
                .with_partition_index(r.partition)
                .with_error_code(r.error.code());
            match topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(s(r.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    }
}
