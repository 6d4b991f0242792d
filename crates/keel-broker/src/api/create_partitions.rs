//! CreatePartitions: decided by the active controller.

use keel_kafka::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use keel_kafka::kafka_protocol::messages::*;
use keel_types::{ErrorCode, NodeId, Refusal};

use super::*;
use crate::broker::Broker;
use crate::cluster::protocol::Request;
use crate::cluster::ClusterLink;
use crate::groups::OFFSETS_TOPIC;

impl Broker {
    pub(crate) async fn create_partitions(
        &self,
        link: &ClusterLink,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let mut results = Vec::with_capacity(request.topics.len());
        for t in request.topics {
            let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            let name = t.name.0.to_string();
            let current = Self::image(link).topic_by_name(&name).map_or(0, |t| t.partitions.len() as i32);
            let assignment: Vec<Vec<NodeId>> =
                t.assignments.iter().flatten().map(|a| a.broker_ids.iter().map(|b| NodeId(b.0)).collect()).collect();
            let outcome = if t.assignments.is_some() && current > 0 && assignment.len() as i32 != t.count - current {
                Err(Refusal {
                    code: ErrorCode::InvalidReplicaAssignment,
                    message: format!(
                        "{} assignments for the {} new partitions of topic {name:?} (from {current} to {})",
                        assignment.len(),
                        t.count - current,
                        t.count
                    ),
                })
            } else if name == OFFSETS_TOPIC {
                Err(Refusal {
                    code: ErrorCode::InvalidTopicException,
                    message: "the consumer offsets topic cannot change".into(),
                })
            } else if request.validate_only {
                match Self::image(link).topic_by_name(&name) {
                    Some(topic) if (topic.partitions.len() as i32) < t.count => Ok(()),
                    Some(topic) => Err(Refusal {
                        code: ErrorCode::InvalidPartitions,
                        message: format!("topic {name:?} already has {} partitions", topic.partitions.len()),
                    }),
                    None => Err(Refusal {
                        code: ErrorCode::UnknownTopicOrPartition,
                        message: format!("topic {name:?} does not exist"),
                    }),
                }
            } else {
                match call(link, Request::CreatePartitions { name: name.clone(), total: t.count, assignment }).await {
                    Ok(_) => {
                        let count = t.count as usize;
                        Self::replayed(link, |image| {
                            image.topic_by_name(&name).is_some_and(|t| t.partitions.len() >= count)
                        })
                        .await;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            };
            results.push(match outcome {
                Ok(()) => result,
                Err(e) => result.with_error_code(e.code.code()).with_error_message(Some(s(e.message))),
            });
        }
        CreatePartitionsResponse::default().with_results(results)
    }
}
