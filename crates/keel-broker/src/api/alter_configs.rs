//! AlterConfigs: topic configs changed through the active controller.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::*;
use keel_types::{ErrorCode, Refusal};

use super::*;
use crate::broker::Broker;
use crate::cluster::protocol::Request;
use crate::cluster::ClusterLink;
use crate::topics::topic_log_config;

impl Broker {
    pub(crate) async fn alter_configs(&self, link: &ClusterLink, request: AlterConfigsRequest) -> AlterConfigsResponse {
        let mut responses = Vec::with_capacity(request.resources.len());
        for r in request.resources {
            let set: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            let outcome =
                self.change_configs(link, r.resource_type, &r.resource_name, |_| set, request.validate_only).await;
            let (error, message) = split(outcome);
            responses.push(
                alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(error.code())
                    .with_error_message(message.map(s))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name),
            );
        }
        AlterConfigsResponse::default().with_responses(responses)
    }

    /// Sends a topic's whole new config map to the controller (both AlterConfigs forms).
    pub(crate) async fn change_configs(
        &self,
        link: &ClusterLink,
        resource_type: i8,
        name: &str,
        change: impl FnOnce(&BTreeMap<String, String>) -> BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), Refusal> {
        match resource_type {
            RESOURCE_TOPIC => {}
            RESOURCE_BROKER => {
                return Err(Refusal {
                    code: ErrorCode::InvalidRequest,
                    message: "broker configs are static in keel: set them in the config file and restart".into(),
                })
            }
            other => {
                return Err(Refusal {
                    code: ErrorCode::InvalidRequest,
                    message: format!("resource type {other} has no configs"),
                })
            }
        }
        let image = Self::image(link);
        let topic = image.topic_by_name(name).ok_or_else(|| Refusal {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!("topic {name:?} does not exist"),
        })?;
        let configs = change(&topic.configs);
        topic_log_config(self.topics.defaults(), &configs)?;
        if validate_only {
            return Ok(());
        }
        call(link, Request::AlterConfigs { name: name.to_string(), configs: configs.clone() }).await?;
        Self::replayed(link, |image| image.topic_by_name(name).is_some_and(|t| t.configs == configs)).await;
        Ok(())
    }
}
