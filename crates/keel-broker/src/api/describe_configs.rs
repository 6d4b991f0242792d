//! DescribeConfigs: topic and broker configs.

use keel_kafka::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use crate::broker::{code, str_bytes, Broker};
use crate::topics::{describe_topic_configs, topic_log_config};

impl Broker {
    pub(crate) fn describe_configs(&self, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
        const TOPIC: i8 = 2;
        const BROKER: i8 = 4;
        const SOURCE_TOPIC: i8 = 1;
        const SOURCE_STATIC_BROKER: i8 = 4;
        const SOURCE_DEFAULT: i8 = 5;
        let results = request
            .resources
            .into_iter()
            .map(|resource| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name.clone());
                let entries: Vec<(String, String, i8)> = match resource.resource_type {
                    // From the replayed metadata image, which an AlterConfigs answered by this
                    // broker has reached, not from the local replicas, which follow it later.
                    TOPIC => match Self::image(&self.cluster).topic_by_name(&resource.resource_name) {
                        Some(topic) => {
                            let log_config = match topic_log_config(self.topics.defaults(), &topic.configs) {
                                Ok(log_config) => log_config,
                                Err(refusal) => {
                                    return result
                                        .with_error_code(code(refusal.code))
                                        .with_error_message(Some(str_bytes(refusal.message)))
                                }
                            };
                            describe_topic_configs(&topic.configs, &log_config)
                                .into_iter()
                                .map(|(k, v, default)| {
                                    (k.to_string(), v, if default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                                })
                                .collect()
                        }
                        None => {
                            return result.with_error_code(code(ErrorCode::UnknownTopicOrPartition)).with_error_message(
                                Some(str_bytes(format!("topic {:?} does not exist", resource.resource_name.as_str()))),
                            )
                        }
                    },
                    BROKER
                        if resource.resource_name.is_empty()
                            || resource.resource_name.as_str() == self.config.node_id.to_string() =>
                    {
                        self.broker_configs()
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v, SOURCE_STATIC_BROKER))
                            .collect()
                    }
                    BROKER => {
                        return result.with_error_code(code(ErrorCode::InvalidRequest)).with_error_message(Some(
                            str_bytes(format!("this broker is node {}", self.config.node_id)),
                        ))
                    }
                    other => {
                        return result.with_error_code(code(ErrorCode::InvalidRequest)).with_error_message(Some(
                            str_bytes(format!("resource type {other} is not supported; use 2 (topic) or 4 (broker)")),
                        ))
                    }
                };
                let wanted =
                    resource.configuration_keys.map(|keys| keys.iter().map(|k| k.to_string()).collect::<Vec<_>>());
                let configs = entries
                    .into_iter()
                    .filter(|(key, _, _)| wanted.as_ref().is_none_or(|w| w.contains(key)))
                    .map(|(key, value, source)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(str_bytes(key))
                            .with_value(Some(str_bytes(value)))
                            .with_read_only(source != SOURCE_TOPIC && resource.resource_type == BROKER)
                            .with_config_source(source)
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
        DescribeConfigsResponse::default().with_results(results)
    }

    pub(crate) fn broker_configs(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let d = &c.topic_defaults;
        let listeners = |show: &dyn Fn(&crate::config::KafkaListener) -> String| {
            self.listeners.iter().map(|l| format!("{}://{}", l.name(), show(l))).collect::<Vec<_>>().join(",")
        };
        vec![
            ("node.id", c.node_id.to_string()),
            ("broker.id", c.node_id.to_string()),
            ("log.dirs", c.data_dir.display().to_string()),
            ("listeners", listeners(&|l| l.bind.to_string())),
            ("advertised.listeners", listeners(&|l| format!("{}:{}", l.advertised.0, l.advertised.1))),
            ("sasl.enabled.mechanisms", c.sasl_mechanisms.join(",")),
            ("auto.create.topics.enable", c.auto_create_topics_enable.to_string()),
            ("socket.request.max.bytes", c.socket_request_max_bytes.to_string()),
            ("num.partitions", d.num_partitions.to_string()),
            ("default.replication.factor", "1".to_string()),
            ("log.retention.ms", d.retention_ms.to_string()),
            ("log.retention.bytes", d.retention_bytes.to_string()),
            ("log.segment.bytes", d.segment_bytes.to_string()),
            ("log.roll.ms", d.segment_ms.to_string()),
            ("message.max.bytes", d.max_message_bytes.to_string()),
            ("log.flush.policy", d.flush_policy_name().to_string()),
            ("log.flush.interval.messages", d.flush_messages.to_string()),
            ("log.flush.interval.ms", d.flush_ms.to_string()),
        ]
    }
}
