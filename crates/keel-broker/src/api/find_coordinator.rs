//! FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets` partition.

use keel_groups::offsets_partition;
use keel_kafka::kafka_protocol::messages::find_coordinator_response::Coordinator;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_metadata::image::TopicImage;
use keel_metadata::MetadataImage;
use keel_types::{ErrorCode, NodeId, Refusal};

use super::*;
use crate::broker::Broker;
use crate::cluster::ClusterLink;
use crate::groups::{offsets_topic_configs, OFFSETS_TOPIC};

impl Broker {
    /// FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
    /// partition. The first request creates that topic through the controller (answering
    /// `COORDINATOR_NOT_AVAILABLE`, retriable, until it has leaders).
    pub(crate) async fn find_coordinator(
        &self,
        link: &ClusterLink,
        request: FindCoordinatorRequest,
        version: i16,
        listener: &str,
    ) -> FindCoordinatorResponse {
        const KEY_TYPE_GROUP: i8 = 0;
        let keys = if version >= 4 { request.coordinator_keys } else { vec![request.key] };
        if request.key_type != KEY_TYPE_GROUP {
            let refused = (ErrorCode::CoordinatorNotAvailable, "keel does not support transactions yet".to_string());
            return coordinator_response(version, keys.into_iter().map(|k| (k, Err(refused.clone()))).collect());
        }
        let mut image = Self::image(link);
        if image.topic_by_name(OFFSETS_TOPIC).is_none() {
            let configs = offsets_topic_configs(&self.config.offsets_topic_flush_policy);
            let partitions = self.groups.offsets_partitions() as i32;
            // Kafka's offsets.topic.replication.factor: the default replication factor, capped
            // at the brokers the cluster has (registered ones, and at least one per controller
            // voter: a cluster that is still starting has them on their way). Until that many
            // are active the controller refuses, and clients are told to retry: a consumer
            // that starts with the cluster must not get an unreplicated offsets topic.
            let voters = self.config.controller_voters().map_or(1, |v| v.len());
            let brokers = image.brokers().len().max(voters);
            let replication_factor = self.config.default_replication_factor.min(brokers as i16);
            let assignment = Vec::new();
            match self
                .create_through_controller(link, OFFSETS_TOPIC, partitions, replication_factor, configs, assignment)
                .await
            {
                Ok(()) | Err(Refusal { code: ErrorCode::TopicAlreadyExists, .. }) => {}
                Err(error) if error.code == ErrorCode::InvalidReplicationFactor => {
                    tracing::debug!(%error, "{OFFSETS_TOPIC} waits for more brokers")
                }
                Err(error) => tracing::warn!(%error, "cannot create {OFFSETS_TOPIC}"),
            }
            image = Self::image(link);
        }
        let answers = keys
            .into_iter()
            .map(|key| {
                let answer = match image.topic_by_name(OFFSETS_TOPIC) {
                    None => Err((ErrorCode::CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} is being created"))),
                    Some(offsets) if offsets.partitions.len() as u32 != self.groups.offsets_partitions() => Err((
                        ErrorCode::CoordinatorNotAvailable,
                        format!(
                            "{OFFSETS_TOPIC} has {} partitions but offsets_topic_num_partitions is {}",
                            offsets.partitions.len(),
                            self.groups.offsets_partitions()
                        ),
                    )),
                    Some(offsets) => group_coordinator(&image, offsets, &key, listener),
                };
                (key, answer)
            })
            .collect();
        coordinator_response(version, answers)
    }
}

/// The leader of `group_id`'s offsets partition, as the image names it.
pub(crate) fn group_coordinator(
    image: &MetadataImage,
    offsets: &TopicImage,
    group_id: &str,
    listener: &str,
) -> CoordinatorAnswer {
    let index = offsets_partition(group_id, offsets.partitions.len() as u32) as usize;
    let leader = offsets.partitions[index].leader.ok_or_else(|| {
        (ErrorCode::CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} partition {index} has no leader right now"))
    })?;
    let live = image.broker(leader).filter(|b| !b.fenced);
    let endpoint = live.and_then(|b| super::endpoint(b, listener)).ok_or_else(|| {
        (
            ErrorCode::CoordinatorNotAvailable,
            format!("the leader of {OFFSETS_TOPIC} partition {index} is not reachable"),
        )
    })?;
    Ok((leader, endpoint.host.clone(), i32::from(endpoint.port)))
}

/// Writes FindCoordinator answers in the request's version (v4 and later answer per key).
pub(crate) fn coordinator_response(
    version: i16,
    answers: Vec<(StrBytes, CoordinatorAnswer)>,
) -> FindCoordinatorResponse {
    let coordinator = |(key, answer): (StrBytes, CoordinatorAnswer)| match answer {
        Ok((node, host, port)) => {
            Coordinator::default().with_key(key).with_node_id(BrokerId(node.0)).with_host(s(host)).with_port(port)
        }
        Err((error, message)) => Coordinator::default()
            .with_key(key)
            .with_node_id(BrokerId(-1))
            .with_error_code(error.code())
            .with_error_message(Some(s(message))),
    };
    if version >= 4 {
        return FindCoordinatorResponse::default().with_coordinators(answers.into_iter().map(coordinator).collect());
    }
    let single = answers.into_iter().next().map(coordinator).unwrap_or_default();
    let response = FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port);
    if version >= 1 {
        response.with_error_message(single.error_message)
    } else {
        response
    }
}

/// One FindCoordinator answer: the coordinator's node and address, or why there is none.
type CoordinatorAnswer = Result<(NodeId, String, i32), (ErrorCode, String)>;
