//! The Kafka API: one dispatch ([`Broker::handle_from`]) and one module per request, each an
//! `impl Broker` block turning a decoded request into its response. Requests that change
//! topics go to the active controller; Metadata and DescribeCluster answer from the replayed
//! metadata image. Protocol outcomes are Kafka error codes in the response; only a request
//! that cannot be answered at all closes the connection (see `server`).

pub(crate) mod alter_configs;
pub(crate) mod alter_user_scram_credentials;
pub(crate) mod api_versions;
pub(crate) mod create_partitions;
pub(crate) mod create_topics;
pub(crate) mod delete_groups;
pub(crate) mod delete_records;
pub(crate) mod delete_topics;
pub(crate) mod describe_cluster;
pub(crate) mod describe_configs;
pub(crate) mod describe_groups;
pub(crate) mod describe_log_dirs;
pub(crate) mod describe_user_scram_credentials;
pub(crate) mod fetch;
pub(crate) mod find_coordinator;
pub(crate) mod heartbeat;
pub(crate) mod incremental_alter_configs;
pub(crate) mod init_producer_id;
pub(crate) mod join_group;
pub(crate) mod leave_group;
pub(crate) mod list_groups;
pub(crate) mod list_offsets;
pub(crate) mod metadata;
pub(crate) mod offset_commit;
pub(crate) mod offset_delete;
pub(crate) mod offset_fetch;
pub(crate) mod produce;
pub(crate) mod sync_group;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_metadata::{BrokerRegistration, Endpoint, MetadataImage};
use keel_replication::may_act_on;
use keel_types::{ErrorCode, NodeId, Refusal};
use uuid::Uuid;

use crate::broker::{Broker, Client, Reply};
use crate::cluster::protocol::{Request, Response};
use crate::cluster::ClusterLink;
use crate::topics::{topic_log_config, Topic};

pub(crate) fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

impl Broker {
    /// Answers one request from `client` (its id and address show in group descriptions).
    pub async fn handle_from(&self, client: &Client, api_key: ApiKey, version: i16, request: RequestKind) -> Reply {
        let link = &self.cluster;
        let response = match request {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::api_versions(ErrorCode::None)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(match Self::caught_up(link).await {
                true => self.metadata(link, r, version, client.listener).await,
                false => self.metadata_not_ready(link, r, client.listener),
            }),
            RequestKind::Produce(r) => return self.produce(r, version).await,
            RequestKind::Fetch(r) => ResponseKind::Fetch(self.fetch(r, version).await),
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(self.list_offsets(r, version)),
            RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(self.create_topics(link, r).await),
            RequestKind::DeleteTopics(r) => ResponseKind::DeleteTopics(self.delete_topics(link, r, version).await),
            RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(self.describe_configs(r)),
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(self.find_coordinator(link, r, version, client.listener).await)
            }
            RequestKind::InitProducerId(r) => ResponseKind::InitProducerId(self.init_producer_id(r).await),
            RequestKind::JoinGroup(r) => ResponseKind::JoinGroup(self.join_group(client, r, version).await),
            RequestKind::SyncGroup(r) => ResponseKind::SyncGroup(self.sync_group(r, version).await),
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.heartbeat(r).await),
            RequestKind::LeaveGroup(r) => ResponseKind::LeaveGroup(self.leave_group(r, version).await),
            RequestKind::OffsetCommit(r) => ResponseKind::OffsetCommit(self.offset_commit(r).await),
            RequestKind::OffsetFetch(r) => ResponseKind::OffsetFetch(self.offset_fetch(r, version)),
            RequestKind::ListGroups(r) => ResponseKind::ListGroups(self.list_groups(r, version)),
            RequestKind::DescribeGroups(r) => ResponseKind::DescribeGroups(self.describe_groups(r, version)),
            RequestKind::DeleteGroups(r) => ResponseKind::DeleteGroups(self.delete_groups(r).await),
            RequestKind::OffsetDelete(r) => ResponseKind::OffsetDelete(self.offset_delete(r).await),
            RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(self.create_partitions(link, r).await),
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(self.alter_configs(link, r).await),
            RequestKind::IncrementalAlterConfigs(r) => {
                ResponseKind::IncrementalAlterConfigs(self.incremental_alter_configs(link, r).await)
            }
            RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(self.delete_records(r)),
            RequestKind::DescribeCluster(r) => {
                ResponseKind::DescribeCluster(self.describe_cluster(link, r, version, client.listener))
            }
            RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(self.describe_log_dirs(r)),
            // The exchange itself is the connection's (`server`): these arrive here only on a
            // PLAINTEXT listener or after authentication, and Kafka answers them so.
            RequestKind::SaslHandshake(_) => ResponseKind::SaslHandshake(
                SaslHandshakeResponse::default().with_error_code(ErrorCode::IllegalSaslState.code()),
            ),
            RequestKind::SaslAuthenticate(_) => ResponseKind::SaslAuthenticate(
                SaslAuthenticateResponse::default()
                    .with_error_code(ErrorCode::IllegalSaslState.code())
                    .with_error_message(Some(s("SaslAuthenticate request received after successful authentication \
                                                or on a listener without SASL"))),
            ),
            RequestKind::AlterUserScramCredentials(r) => {
                ResponseKind::AlterUserScramCredentials(self.alter_user_scram_credentials(link, r).await)
            }
            RequestKind::DescribeUserScramCredentials(r) => {
                ResponseKind::DescribeUserScramCredentials(self.describe_user_scram_credentials(link, r))
            }
            other => {
                // decode_request only lets supported APIs through; reaching here is a bug.
                unreachable!("request for {api_key:?} passed decoding but has no handler: {other:?}")
            }
        };
        Reply::Response(response)
    }

    /// Looks a produce or fetch topic up by id (newer versions) or by name.
    pub(crate) fn find_topic(&self, name: &TopicName, id: Uuid, by_id: bool) -> Result<Arc<Topic>, ErrorCode> {
        if by_id {
            self.topics.get_by_id(id).ok_or(ErrorCode::UnknownTopicId)
        } else {
            self.topics.get(&name.0).ok_or(ErrorCode::UnknownTopicOrPartition)
        }
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

    pub(crate) fn image(link: &ClusterLink) -> Arc<MetadataImage> {
        link.replayed.borrow().image.clone()
    }

    /// Waits (bounded) until this broker's replayed image satisfies `done`.
    pub(crate) async fn replayed(link: &ClusterLink, done: impl Fn(&MetadataImage) -> bool) -> bool {
        let mut replayed = link.replayed.clone();
        tokio::time::timeout(REPLAY_DEADLINE, replayed.wait_for(|r| done(&r.image))).await.is_ok_and(|r| r.is_ok())
    }

    /// Asks the controller to create a topic and waits until this broker has replayed it.
    pub(crate) async fn create_through_controller(
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
}

/// How long a topic change waits for the controller, and then for this broker's replay.
pub(crate) const CONTROLLER_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) const REPLAY_DEADLINE: Duration = Duration::from_secs(5);

pub(crate) const RESOURCE_TOPIC: i8 = 2;

pub(crate) const RESOURCE_BROKER: i8 = 4;

pub(crate) fn split(outcome: Result<(), Refusal>) -> (ErrorCode, Option<String>) {
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

pub(crate) fn unexpected(response: &Response) -> Refusal {
    Refusal { code: ErrorCode::UnknownServerError, message: format!("unexpected controller answer {response:?}") }
}

/// Unfenced brokers with their address on `listener`: (node, host, port, rack).
pub(crate) fn live_brokers(image: &MetadataImage, listener: &str) -> Vec<(NodeId, String, i32, Option<String>)> {
    image
        .brokers()
        .iter()
        .filter(|(_, b)| !b.fenced)
        .filter_map(|(&node, b)| {
            let endpoint = endpoint(b, listener)?;
            Some((node, endpoint.host.clone(), i32::from(endpoint.port), b.rack.clone()))
        })
        .collect()
}

/// `broker`'s address on the listener named `listener` (the one a client connected to), or
/// its first listener's when it has no listener of that name (a cluster whose nodes list
/// different listeners).
pub(crate) fn endpoint<'a>(broker: &'a BrokerRegistration, listener: &str) -> Option<&'a Endpoint> {
    broker.listeners.iter().find(|e| e.name == listener).or_else(|| broker.listeners.first())
}

pub(crate) fn opt(value: Option<String>) -> Option<StrBytes> {
    value.map(s)
}

/// The error for a coordinator call that gave no fitting answer: the call's own error
/// (`NOT_COORDINATOR`), or a coordinator answer of the wrong kind (a bug, reported as such).
pub(crate) fn failure(answer: Result<keel_groups::Response, ErrorCode>) -> ErrorCode {
    match answer {
        Err(error) => error,
        Ok(other) => {
            tracing::error!(?other, "the group coordinator answered with the wrong kind of response");
            ErrorCode::UnknownServerError
        }
    }
}

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (as bits of
/// Kafka's AclOperation codes): what Kafka reports for a topic when no authorizer is set.
pub(crate) const TOPIC_OPERATIONS_ALL: i32 = 3576;

/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub(crate) const CLUSTER_OPERATIONS_ALL: i32 = 8096;

/// READ, DELETE, DESCRIBE (bits of Kafka's AclOperation codes) for groups without an
/// authorizer.
pub(crate) const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);
