//! IncrementalAlterConfigs: topic configs changed through the active controller.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::*;
use keel_types::{ErrorCode, Refusal};

use super::*;
use crate::broker::Broker;
use crate::cluster::ClusterLink;

impl Broker {
    pub(crate) async fn incremental_alter_configs(
        &self,
        link: &ClusterLink,
        request: IncrementalAlterConfigsRequest,
    ) -> IncrementalAlterConfigsResponse {
        let mut responses = Vec::with_capacity(request.resources.len());
        for r in request.resources {
            let mut set = BTreeMap::new();
            let mut delete = Vec::new();
            let mut invalid = None;
            for c in &r.configs {
                match (c.config_operation, &c.value) {
                    (0, Some(value)) => {
                        set.insert(c.name.to_string(), value.to_string());
                    }
                    (1, _) => delete.push(c.name.to_string()),
                    (op, _) => {
                        invalid = Some(format!(
                            "operation {op} on {} is not supported (only SET and DELETE; no list configs)",
                            c.name.as_str()
                        ))
                    }
                }
            }
            let outcome = match invalid {
                Some(message) => Err(Refusal { code: ErrorCode::InvalidConfig, message }),
                None => {
                    let change = |current: &BTreeMap<String, String>| {
                        let mut configs = current.clone();
                        for key in &delete {
                            configs.remove(key);
                        }
                        configs.extend(set);
                        configs
                    };
                    self.change_configs(link, r.resource_type, &r.resource_name, change, request.validate_only).await
                }
            };
            let (error, message) = split(outcome);
            responses.push(
                incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                    .with_error_code(error.code())
                    .with_error_message(message.map(s))
                    .with_resource_type(r.resource_type)
                    .with_resource_name(r.resource_name),
            );
        }
        IncrementalAlterConfigsResponse::default().with_responses(responses)
    }
}
