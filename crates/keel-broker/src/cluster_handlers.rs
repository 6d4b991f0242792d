//! Kafka requests whose meaning changes in a cluster: Metadata and DescribeCluster come from
//! the replayed metadata image, topic changes go to the active controller, and FindCoordinator
//! names the leader of the group's `__consumer_offsets` partition. Everything else (Produce,
//! Fetch, ListOffsets, the group requests, ...) is answered by the same handlers as on a single
//! node, which consult each replica's role and the coordinators this broker runs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_groups::offsets_partition;
use keel_kafka::kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use keel_kafka::kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use keel_kafka::kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use keel_kafka::kafka_protocol::messages::find_coordinator_response::Coordinator;
use keel_kafka::kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_metadata::image::TopicImage;
use keel_metadata::MetadataImage;
use keel_replication::may_act_on;
use keel_types::{ErrorCode, NodeId, Refusal};
use uuid::Uuid;

use crate::broker::{Broker, CLUSTER_OPERATIONS_ALL, TOPIC_OPERATIONS_ALL};
use crate::cluster::protocol::{Request, Response};
use crate::cluster::ClusterLink;
use crate::groups::{offsets_topic_configs, OFFSETS_TOPIC};
use crate::topics::{topic_log_config, validate_topic_name};

/// How long a topic change waits for the controller, and then for this broker's replay.
const CONTROLLER_DEADLINE: Duration = Duration::from_secs(5);
const REPLAY_DEADLINE: Duration = Duration::from_secs(5);
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

impl Broker {
    /// FindCoordinator: a group's coordinator is the leader of its `__consumer_offsets`
    /// partition. The first request creates that topic through the controller (answering
    /// `COORDINATOR_NOT_AVAILABLE`, retriable, until it has leaders).
    pub(crate) async fn cluster_find_coordinator(
        &self,
        link: &ClusterLink,
        request: FindCoordinatorRequest,
        version: i16,
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
                    Some(offsets) => group_coordinator(&image, offsets, &key),
                };
                (key, answer)
            })
            .collect();
        coordinator_response(version, answers)
    }

    /// Waits (bounded) until this broker has replayed its own registration: until then its
    /// image may be older than what the quorum committed (at restart, the snapshot its own
    /// controller published). Kafka's brokers likewise serve clients only once caught up.
    pub(crate) async fn caught_up(link: &ClusterLink) -> bool {
        let ready = || may_act_on(&link.replayed.borrow().image, link.node, link.standing.borrow().broker_epoch);
        if ready() {
            return true;
        }
        let (mut replayed, mut standing) = (link.replayed.clone(), link.standing.clone());
        let wait = async {
            while !ready() {
                tokio::select! {
                    changed = replayed.changed() => if changed.is_err() { return },
                    changed = standing.changed() => if changed.is_err() { return },
                }
            }
        };
        tokio::time::timeout(REPLAY_DEADLINE, wait).await.is_ok() && ready()
    }

    /// Metadata from a broker that has not caught up: the brokers it knows (so a client can
    /// ask another), and LEADER_NOT_AVAILABLE (retriable) for each topic asked about rather
    /// than leaders from metadata that may be over.
    pub(crate) fn metadata_not_ready(&self, link: &ClusterLink, request: MetadataRequest) -> MetadataResponse {
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
        MetadataResponse::default()
            .with_cluster_authorized_operations(i32::MIN)
            .with_brokers(metadata_brokers(&Self::image(link)))
            .with_cluster_id(Some(s(self.cluster_id.clone())))
            .with_controller_id(BrokerId(link.node.0))
            .with_topics(topics)
    }

    fn image(link: &ClusterLink) -> Arc<MetadataImage> {
        link.replayed.borrow().image.clone()
    }

    /// Waits (bounded) until this broker's replayed image satisfies `done`.
    async fn replayed(link: &ClusterLink, done: impl Fn(&MetadataImage) -> bool) -> bool {
        let mut replayed = link.replayed.clone();
        tokio::time::timeout(REPLAY_DEADLINE, replayed.wait_for(|r| done(&r.image))).await.is_ok_and(|r| r.is_ok())
    }

    pub(crate) async fn cluster_metadata(
        &self,
        link: &ClusterLink,
        request: MetadataRequest,
        version: i16,
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
                            None => self.cluster_auto_create(link, &name, allow_create).await,
                        },
                        None => match image.topic(r.topic_id.as_u128()) {
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
        let brokers = metadata_brokers(&Self::image(link));
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
    async fn cluster_auto_create(&self, link: &ClusterLink, name: &str, allow_create: bool) -> MetadataResponseTopic {
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

    /// Asks the controller to create a topic and waits until this broker has replayed it.
    async fn create_through_controller(
        &self,
        link: &ClusterLink,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignment: Vec<Vec<NodeId>>,
    ) -> Result<(), Refusal> {
        topic_log_config(self.topics.defaults(), &configs)?;
        let request =
            Request::CreateTopic { name: name.to_string(), partitions, replication_factor, configs, assignment };
        let topic_id = match call(link, request).await? {
            Response::TopicCreated { topic_id } => topic_id,
            other => return Err(unexpected(&other)),
        };
        Self::replayed(link, |image| image.topic(topic_id).is_some()).await;
        Ok(())
    }

    pub(crate) fn cluster_describe(
        &self,
        link: &ClusterLink,
        request: DescribeClusterRequest,
        version: i16,
    ) -> DescribeClusterResponse {
        let brokers = live_brokers(&Self::image(link))
            .into_iter()
            .map(|(node, host, port, rack)| (node.0, host, port, rack))
            .collect();
        self.describe_cluster_with(brokers, link.node.0, request, version)
    }

    pub(crate) async fn cluster_create_topics(
        &self,
        link: &ClusterLink,
        request: CreateTopicsRequest,
    ) -> CreateTopicsResponse {
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
                            .with_topic_id(Uuid::from_u128(topic.id))
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

    pub(crate) async fn cluster_delete_topics(
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
                None => image.topic(id.as_u128()).map(|t| (t.name.clone(), t.id)),
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
                    result.with_topic_id(Uuid::from_u128(topic_id))
                }
                Err(e) => result.with_error_code(e.code.code()).with_error_message(Some(s(e.message))),
            };
            responses.push(result);
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    pub(crate) async fn cluster_create_partitions(
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

    /// Sends a topic's whole new config map to the controller (both AlterConfigs forms).
    async fn cluster_change_configs(
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

    pub(crate) async fn cluster_alter_configs(
        &self,
        link: &ClusterLink,
        request: AlterConfigsRequest,
    ) -> AlterConfigsResponse {
        let mut responses = Vec::with_capacity(request.resources.len());
        for r in request.resources {
            let set: BTreeMap<String, String> = r
                .configs
                .iter()
                .filter_map(|c| c.value.as_ref().map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            let outcome = self
                .cluster_change_configs(link, r.resource_type, &r.resource_name, |_| set, request.validate_only)
                .await;
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

    pub(crate) async fn cluster_incremental_alter_configs(
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
                    self.cluster_change_configs(link, r.resource_type, &r.resource_name, change, request.validate_only)
                        .await
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

/// A CreateTopics entry's replica assignment, by partition (`None`: the controller places
/// replicas). As in Kafka, an assignment replaces the partition count and replication factor,
/// and must list partitions 0 to n-1.
fn creation_assignment(topic: &create_topics_request::CreatableTopic) -> Result<Option<Vec<Vec<NodeId>>>, Refusal> {
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

fn split(outcome: Result<(), Refusal>) -> (ErrorCode, Option<String>) {
    match outcome {
        Ok(()) => (ErrorCode::None, None),
        Err(e) => (e.code, Some(e.message)),
    }
}

/// Calls the active controller; its refusals and unreachability become topic errors.
async fn call(link: &ClusterLink, request: Request) -> Result<Response, Refusal> {
    match link.client.call_active(request, CONTROLLER_DEADLINE).await {
        Ok(Response::Error { code, message }) => {
            Err(Refusal { code: ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError), message })
        }
        Ok(response) => Ok(response),
        Err(error) => Err(Refusal {
            code: ErrorCode::RequestTimedOut,
            message: format!("no active controller answered: {error}"),
        }),
    }
}

fn unexpected(response: &Response) -> Refusal {
    Refusal { code: ErrorCode::UnknownServerError, message: format!("unexpected controller answer {response:?}") }
}

/// Unfenced brokers with their first listener: (node, host, port, rack).
fn live_brokers(image: &MetadataImage) -> Vec<(NodeId, String, i32, Option<String>)> {
    image
        .brokers()
        .iter()
        .filter(|(_, b)| !b.fenced)
        .filter_map(|(&node, b)| {
            let listener = b.listeners.first()?;
            Some((node, listener.host.clone(), i32::from(listener.port), b.rack.clone()))
        })
        .collect()
}

/// A topic as Metadata reports it: leaders, epochs, replicas, ISR and offline replicas.
/// The live brokers as a Metadata response lists them.
fn metadata_brokers(image: &MetadataImage) -> Vec<MetadataResponseBroker> {
    live_brokers(image)
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

fn topic_metadata(image: &MetadataImage, topic: &TopicImage) -> MetadataResponseTopic {
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
        .with_topic_id(Uuid::from_u128(topic.id))
        .with_partitions(partitions)
}

/// One FindCoordinator answer: the coordinator's node and address, or why there is none.
type CoordinatorAnswer = Result<(NodeId, String, i32), (ErrorCode, String)>;

/// The leader of `group_id`'s offsets partition, as the image names it.
fn group_coordinator(image: &MetadataImage, offsets: &TopicImage, group_id: &str) -> CoordinatorAnswer {
    let index = offsets_partition(group_id, offsets.partitions.len() as u32) as usize;
    let leader = offsets.partitions[index].leader.ok_or_else(|| {
        (ErrorCode::CoordinatorNotAvailable, format!("{OFFSETS_TOPIC} partition {index} has no leader right now"))
    })?;
    let live = image.broker(leader).filter(|b| !b.fenced);
    let listener = live.and_then(|b| b.listeners.first()).ok_or_else(|| {
        (
            ErrorCode::CoordinatorNotAvailable,
            format!("the leader of {OFFSETS_TOPIC} partition {index} is not reachable"),
        )
    })?;
    Ok((leader, listener.host.clone(), i32::from(listener.port)))
}

/// Writes FindCoordinator answers in the request's version (v4 and later answer per key).
fn coordinator_response(version: i16, answers: Vec<(StrBytes, CoordinatorAnswer)>) -> FindCoordinatorResponse {
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
