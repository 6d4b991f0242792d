//! DeleteTopics: decided by the active controller.

use keel_kafka::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use keel_kafka::kafka_protocol::messages::*;
use keel_types::{ErrorCode, TopicId};
use uuid::Uuid;

use super::*;
use crate::broker::Broker;
use crate::cluster::protocol::Request;
use crate::cluster::ClusterLink;
use crate::groups::OFFSETS_TOPIC;

impl Broker {
    pub(crate) async fn delete_topics(
        &self,
        link: &ClusterLink,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        let targets: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
            request.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
        } else {
            request.topic_names.into_iter().map(|n| (Some(n), Uuid::nil())).collect()
        };
        let mut responses = Vec::with_capacity(targets.len());
        for (name, id) in targets {
            let image = Self::image(link);
            let resolved = match &name {
                Some(name) => image.topic_by_name(name).map(|t| (t.name.clone(), t.id)),
                None => image.topic(TopicId(id.as_u128())).map(|t| (t.name.clone(), t.id)),
            };
            let result = DeletableTopicResult::default().with_name(name.clone()).with_topic_id(id);
            let Some((resolved, topic_id)) = resolved else {
                let error = if name.is_some() { ErrorCode::UnknownTopicOrPartition } else { ErrorCode::UnknownTopicId };
                responses.push(result.with_error_code(error.code()));
                continue;
            };
            if resolved == OFFSETS_TOPIC {
                responses.push(
                    result
                        .with_error_code(ErrorCode::InvalidTopicException.code())
                        .with_error_message(Some(s("the consumer offsets topic cannot be deleted"))),
                );
                continue;
            }
            let outcome = call(link, Request::DeleteTopic { name: resolved }).await;
            let result = match outcome {
                Ok(_) => {
                    Self::replayed(link, |image| image.topic(topic_id).is_none()).await;
                    result.with_topic_id(Uuid::from_u128(topic_id.0))
                }
                Err(e) => result.with_error_code(e.code.code()).with_error_message(Some(s(e.message))),
            };
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }
}
