//! OffsetFetch.

use keel_kafka::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
    pub(crate) fn offset_fetch(&self, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|g| {
                    let wanted: Option<Vec<(String, i32)>> = g.topics.map(|topics| {
                        topics
                            .iter()
                            .flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p)))
                            .collect()
                    });
                    let fetched =
                        match self.groups.read(&g.group_id, |c| c.offset_fetch(&g.group_id, wanted.as_deref())) {
                            Ok(fetched) => fetched,
                            Err(error) => {
                                return OffsetFetchResponseGroup::default()
                                    .with_group_id(g.group_id)
                                    .with_error_code(error.code())
                            }
                        };
                    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
                    for f in fetched {
                        let partition = OffsetFetchResponsePartitions::default()
                            .with_partition_index(f.partition)
                            .with_committed_offset(f.offset)
                            .with_committed_leader_epoch(f.leader_epoch)
                            .with_metadata(Some(s(f.metadata.unwrap_or_default())));
                        match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
                            Some(t) => t.partitions.push(partition),
                            None => topics.push(
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(f.topic)))
                                    .with_partitions(vec![partition]),
                            ),
                        }
                    }
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted: Option<Vec<(String, i32)>> = request.topics.map(|topics| {
            topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p))).collect()
        });
        let fetched =
            match self.groups.read(&request.group_id, |c| c.offset_fetch(&request.group_id, wanted.as_deref())) {
                Ok(fetched) => fetched,
                // v0 and v1 have no request-level error: the client sees none of its offsets and
                // finds the coordinator again on its next attempt.
                Err(error) => return OffsetFetchResponse::default().with_error_code(error.code()),
            };
        let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
        for f in fetched {
            let mut partition = OffsetFetchResponsePartition::default()
                .with_partition_index(f.partition)
                .with_committed_offset(f.offset)
                .with_metadata(Some(s(f.metadata.unwrap_or_default())));
            if version >= 5 {
                partition = partition.with_committed_leader_epoch(f.leader_epoch);
            }
            match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(f.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetFetchResponse::default().with_topics(topics)
    }
}
