//! Metadata: from the replayed metadata image, auto-creating topics through the controller.

use std::collections::BTreeMap;

use keel_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_metadata::image::TopicImage;
use keel_metadata::MetadataImage;
use keel_types::{ErrorCode, NodeId, Refusal, TopicId};
use uuid::Uuid;

use super::*;
use crate::broker::Broker;
use crate::cluster::ClusterLink;
use crate::groups::OFFSETS_TOPIC;
use crate::topics::validate_topic_name;

impl Broker {
    /// Metadata from a broker that has not caught up: the brokers it knows (so a client can
    /// ask another), and LEADER_NOT_AVAILABLE (retriable) for each topic asked about rather
    /// than leaders from metadata that may be over.
    pub(crate) fn metadata_not_ready(
        &self,
        link: &ClusterLink,
        request: MetadataRequest,
        listener: &str,
    ) -> MetadataResponse {
        let topics = request
            .topics
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                MetadataResponseTopic::default()
                    .with_name(r.name)
                    .with_topic_id(r.topic_id)
                    .with_error_code(ErrorCode::LeaderNotAvailable.code())
            })
            .collect();
        let brokers = self.brokers_with_self(link, listener);
        MetadataResponse::default()
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(brokers)
            .with_cluster_id(Some(s(self.cluster_id.clone())))
            .with_controller_id(BrokerId(link.node.0))
            .with_topics(topics)
    }

    /// The live brokers of the replayed image, and this broker even when it is not among them
    /// (before its registration is replayed, or while fenced after a late heartbeat): a client
    /// that reached it keeps a broker to ask again and finds the controller it is told of
    /// (librdkafka's admin client otherwise waits for a controller it cannot see until it
    /// times out).
    fn brokers_with_self(&self, link: &ClusterLink, listener: &str) -> Vec<MetadataResponseBroker> {
        let mut brokers = metadata_brokers(&Self::image(link), listener);
        if brokers.iter().all(|b| b.node_id.0 != link.node.0) {
            let own = self.listeners.iter().find(|l| l.name() == listener).unwrap_or(&self.listeners[0]);
            let (host, port) = own.advertised.clone();
            brokers.push(
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(link.node.0))
                    .with_host(s(host))
                    .with_port(i32::from(port))
                    .with_rack(self.config.rack.clone().map(s)),
            );
        }
        brokers
    }

    pub(crate) async fn metadata(
        &self,
        link: &ClusterLink,
        request: MetadataRequest,
        version: i16,
        listener: &str,
    ) -> MetadataResponse {
        let allow_create = self.config.auto_create_topics_enable && (version < 4 || request.allow_auto_topic_creation);
        let include_topic_operations = version >= 8 && request.include_topic_authorized_operations;
        let include_cluster_operations = (8..=10).contains(&version) && request.include_cluster_authorized_operations;
        let mut topics = Vec::new();
        match request.topics {
            None => {
                let image = Self::image(link);
                topics.extend(image.topics().map(|t| topic_metadata(&image, t)));
            }
            Some(requested) => {
                for r in requested {
                    let image = Self::image(link);
                    let topic = match r.name {
                        Some(name) => match image.topic_by_name(&name) {
                            Some(topic) => topic_metadata(&image, topic),
                            None => self.auto_create(link, &name, allow_create).await,
                        },
                        None => match image.topic(TopicId(r.topic_id.as_u128())) {
                            Some(topic) => topic_metadata(&image, topic),
                            None => MetadataResponseTopic::default()
                                .with_topic_id(r.topic_id)
                                .with_error_code(ErrorCode::UnknownTopicId.code()),
                        },
                    };
                    topics.push(topic);
                }
            }
        }
        let topics = topics
            .into_iter()
            .map(|t| {
                if include_topic_operations && t.error_code == 0 {
                    t.with_topic_authorized_operations(TOPIC_OPERATIONS_ALL)
                } else {
                    t
                }
            })
            .collect();
        let brokers = self.brokers_with_self(link, listener);
        MetadataResponse::default()
            .with_cluster_authorized_operations(if include_cluster_operations {
                CLUSTER_OPERATIONS_ALL
            } else {
                i32::MIN
            })
            .with_brokers(brokers)
            .with_cluster_id(Some(s(self.cluster_id.clone())))
            .with_controller_id(BrokerId(link.node.0))
            .with_topics(topics)
    }

    /// Metadata for a topic the image lacks: created through the controller when allowed.
    pub(crate) async fn auto_create(
        &self,
        link: &ClusterLink,
        name: &str,
        allow_create: bool,
    ) -> MetadataResponseTopic {
        let unknown = |error: ErrorCode| {
            MetadataResponseTopic::default().with_name(Some(TopicName(s(name)))).with_error_code(error.code())
        };
        if let Err(e) = validate_topic_name(name) {
            return unknown(e.code);
        }
        if !allow_create {
            return unknown(ErrorCode::UnknownTopicOrPartition);
        }
        match self.create_through_controller(link, name, -1, -1, BTreeMap::new(), Vec::new()).await {
            Ok(()) | Err(Refusal { code: ErrorCode::TopicAlreadyExists, .. }) => {
                let image = Self::image(link);
                match image.topic_by_name(name) {
                    Some(topic) => topic_metadata(&image, topic),
                    None => unknown(ErrorCode::LeaderNotAvailable),
                }
            }
            Err(e) => {
                tracing::warn!(topic = name, error = %e, "auto-creating topic failed");
                // Retriable for the client: the controller may be electing.
                unknown(if e.code == ErrorCode::InvalidReplicationFactor {
                    e.code
                } else {
                    ErrorCode::LeaderNotAvailable
                })
            }
        }
    }
}

/// A topic as Metadata reports it: leaders, epochs, replicas, ISR and offline replicas.
/// The live brokers as a Metadata response lists them.
pub(crate) fn metadata_brokers(image: &MetadataImage, listener: &str) -> Vec<MetadataResponseBroker> {
    live_brokers(image, listener)
        .into_iter()
        .map(|(node, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(node.0))
                .with_host(s(host))
                .with_port(port)
                .with_rack(rack.map(s))
        })
        .collect()
}

pub(crate) fn topic_metadata(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
    let live = |node: &NodeId| image.broker(*node).is_some_and(|b| !b.fenced);
    let ids = |nodes: &[NodeId]| nodes.iter().map(|n| BrokerId(n.0)).collect::<Vec<_>>();
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(index, p)| {
            let offline: Vec<NodeId> = p.replicas.iter().filter(|r| !live(r)).copied().collect();
            let partition = MetadataResponsePartition::default()
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(p.leader.map_or(-1, |l| l.0)))
                .with_leader_epoch(p.leader_epoch.0)
                .with_replica_nodes(ids(&p.replicas))
                .with_isr_nodes(ids(&p.isr))
                .with_offline_replicas(ids(&offline));
            if p.leader.is_none() {
                partition.with_error_code(ErrorCode::LeaderNotAvailable.code())
            } else {
                partition
            }
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(s(topic.name.clone()))))
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_topic_id(Uuid::from_u128(topic.id.0))
        .with_partitions(partitions)
}
