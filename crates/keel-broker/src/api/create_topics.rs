//! CreateTopics: decided by the active controller.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use keel_kafka::kafka_protocol::messages::*;
use keel_types::{ErrorCode, NodeId, Refusal};
use uuid::Uuid;

use super::*;
use crate::broker::Broker;
use crate::cluster::ClusterLink;
use crate::topics::{topic_log_config, validate_topic_name};

impl Broker {
    pub(crate) async fn create_topics(&self, link: &ClusterLink, request: CreateTopicsRequest) -> CreateTopicsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        for t in request.topics {
            let name = t.name.0.to_string();
            let result = CreatableTopicResult::default().with_name(t.name.clone());
            let configs: BTreeMap<String, String> = t
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            let outcome = match creation_assignment(&t) {
                Err(e) => Err(e),
                Ok(_) if request.validate_only => validate_topic_name(&name)
                    .and_then(|()| topic_log_config(self.topics.defaults(), &configs).map(drop)),
                Ok(assignment) => {
                    let (partitions, replication_factor) = (t.num_partitions, t.replication_factor);
                    let assignment = assignment.unwrap_or_default();
                    self.create_through_controller(link, &name, partitions, replication_factor, configs, assignment)
                        .await
                }
            };
            let result = match outcome {
                Ok(()) => {
                    let image = Self::image(link);
                    match image.topic_by_name(&name) {
                        Some(topic) => result
                            .with_topic_id(Uuid::from_u128(topic.id.0))
                            .with_num_partitions(topic.partitions.len() as i32)
                            .with_replication_factor(topic.replication_factor() as i16),
                        None => {
                            result.with_num_partitions(t.num_partitions).with_replication_factor(t.replication_factor)
                        }
                    }
                }
                Err(e) => result.with_error_code(e.code.code()).with_error_message(Some(s(e.message))),
            };
            results.push(result);
        }
        CreateTopicsResponse::default().with_topics(results)
    }
}

/// A CreateTopics entry's replica assignment, by partition (`None`: the controller places
/// replicas). As in Kafka, an assignment replaces the partition count and replication factor,
/// and must list partitions 0 to n-1.
pub(crate) fn creation_assignment(
    topic: &create_topics_request::CreatableTopic,
) -> Result<Option<Vec<Vec<NodeId>>>, Refusal> {
    if topic.assignments.is_empty() {
        return Ok(None);
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err(Refusal {
            code: ErrorCode::InvalidRequest,
            message: "numPartitions and replicationFactor must be -1 when replica assignments are given".into(),
        });
    }
    let mut assignments: Vec<_> = topic.assignments.iter().collect();
    assignments.sort_by_key(|a| a.partition_index);
    if assignments.iter().enumerate().any(|(i, a)| a.partition_index != i as i32) {
        return Err(Refusal {
            code: ErrorCode::InvalidReplicaAssignment,
            message: format!("the assignment must list partitions 0 to {} once each", assignments.len() - 1),
        });
    }
    Ok(Some(assignments.iter().map(|a| a.broker_ids.iter().map(|b| NodeId(b.0)).collect()).collect()))
}
