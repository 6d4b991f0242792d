//! The broker: its topics and the handling of each Kafka request.
//!
//! Handlers turn a decoded request into a response. Protocol outcomes (unknown topic, offset
//! out of range, invalid records) are Kafka error codes in the response; only a request that
//! cannot be answered at all closes the connection (see `server`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_kafka::kafka_protocol::messages::api_versions_response::ApiVersion;
use keel_kafka::kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keel_kafka::kafka_protocol::messages::fetch_response::{EpochEndOffset, FetchableTopicResponse, PartitionData};
use keel_kafka::kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use keel_kafka::kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_kafka::SUPPORTED_APIS;
use keel_replication::FetchDecision;
use keel_storage::{AppendInfo, FlushPolicy, ReadError};
use keel_types::{ErrorCode, LeaderEpoch, NodeId, Refusal};
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::clock::{monotonic, now_ms};
use crate::cluster::replica::{Completion, LogView};
use crate::cluster::ClusterLink;
use crate::config::BrokerConfig;
use crate::groups::{Groups, OFFSETS_TOPIC};
use crate::producer_ids::ProducerIds;
use crate::topics::{describe_topic_configs, Partition, Topic, Topics};

/// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (as bits of
/// Kafka's AclOperation codes): what Kafka reports for a topic when no authorizer is set.
pub(crate) const TOPIC_OPERATIONS_ALL: i32 = 3576;
/// CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS, IDEMPOTENT_WRITE.
pub(crate) const CLUSTER_OPERATIONS_ALL: i32 = 8096;
/// The fetch wait keel honours at most, whatever a client asks.
const FETCH_WAIT_MS_MAX: i32 = 30_000;

/// Who sent a request: the header's client id and the peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// Kafka's form: `/` and the IP address.
    pub host: String,
}

/// What the connection does after a request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per request, moved once
pub enum Reply {
    Response(ResponseKind),
    /// No response is due (Produce with acks=0).
    None,
    /// Close the connection, for the reason given.
    Close(String),
}

/// One keel broker.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: Topics,
    pub cluster_id: String,
    advertised: (String, u16),
    /// Woken after every append (and high watermark advance), so long-polling fetches re-read.
    pub(crate) appended: Arc<Notify>,
    producer_ids: ProducerIds,
    /// The group coordinators this broker runs (in a cluster: for the offsets partitions it
    /// leads).
    pub(crate) groups: Arc<Groups>,
    /// This node's link to the controller and the replayed metadata.
    pub(crate) cluster: ClusterLink,
    shutdown: watch::Receiver<bool>,
}

fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

fn code(error: ErrorCode) -> i16 {
    error.code()
}

impl Broker {
    /// Opens this node's local replicas (recovering every partition log); the metadata log
    /// decides what they hold ([`crate::cluster::replication`] keeps them in step).
    /// `shutdown` turning true wakes long-polling fetches so they answer at once.
    pub fn open(config: BrokerConfig, link: ClusterLink, shutdown: watch::Receiver<bool>) -> Result<Broker, String> {
        config.validate()?;
        let advertised = config.advertised()?;
        let topics = Topics::open(&config.data_dir, config.topic_defaults.clone(), now_ms())?;
        let appended = Arc::new(Notify::new());
        // Producer ids come from the controller (KIP-730): a counter in the data directory
        // would start over on a replaced disk.
        let producer_ids = ProducerIds::new(&link);
        let groups = Groups::empty(config.group_config(), appended.clone())?;
        let cluster_id = cluster_id(&config)?;
        Ok(Broker {
            config,
            topics,
            cluster_id,
            advertised,
            appended,
            producer_ids,
            groups: Arc::new(groups),
            cluster: link,
            shutdown,
        })
    }

    /// The host and port clients are told to use.
    pub fn advertised(&self) -> (String, u16) {
        self.advertised.clone()
    }

    /// Answers one request.
    pub async fn handle(&self, api_key: ApiKey, version: i16, request: RequestKind) -> Reply {
        self.handle_from(&Client::default(), api_key, version, request).await
    }

    /// Answers one request from `client` (its id and address show in group descriptions).
    pub async fn handle_from(&self, client: &Client, api_key: ApiKey, version: i16, request: RequestKind) -> Reply {
        let link = &self.cluster;
        let response = match request {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions(ErrorCode::None)),
            RequestKind::Metadata(r) => ResponseKind::Metadata(match Self::caught_up(link).await {
                true => self.cluster_metadata(link, r, version).await,
                false => self.metadata_not_ready(link, r),
            }),
            RequestKind::Produce(r) => return self.produce(r, version).await,
            RequestKind::Fetch(r) => ResponseKind::Fetch(self.fetch(r, version).await),
            RequestKind::ListOffsets(r) => ResponseKind::ListOffsets(self.list_offsets(r, version)),
            RequestKind::CreateTopics(r) => ResponseKind::CreateTopics(self.cluster_create_topics(link, r).await),
            RequestKind::DeleteTopics(r) => {
                ResponseKind::DeleteTopics(self.cluster_delete_topics(link, r, version).await)
            }
            RequestKind::DescribeConfigs(r) => ResponseKind::DescribeConfigs(self.describe_configs(r)),
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(self.cluster_find_coordinator(link, r, version).await)
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
            RequestKind::CreatePartitions(r) => {
                ResponseKind::CreatePartitions(self.cluster_create_partitions(link, r).await)
            }
            RequestKind::AlterConfigs(r) => ResponseKind::AlterConfigs(self.cluster_alter_configs(link, r).await),
            RequestKind::IncrementalAlterConfigs(r) => {
                ResponseKind::IncrementalAlterConfigs(self.cluster_incremental_alter_configs(link, r).await)
            }
            RequestKind::DeleteRecords(r) => ResponseKind::DeleteRecords(self.delete_records(r)),
            RequestKind::DescribeCluster(r) => ResponseKind::DescribeCluster(self.cluster_describe(link, r, version)),
            RequestKind::DescribeLogDirs(r) => ResponseKind::DescribeLogDirs(self.describe_log_dirs(r)),
            other => {
                // decode_request only lets supported APIs through; reaching here is a bug.
                unreachable!("request for {api_key:?} passed decoding but has no handler: {other:?}")
            }
        };
        Reply::Response(response)
    }

    /// Looks a produce or fetch topic up by id (newer versions) or by name.
    fn find_topic(&self, name: &TopicName, id: Uuid, by_id: bool) -> Result<Arc<Topic>, ErrorCode> {
        if by_id {
            self.topics.get_by_id(id).ok_or(ErrorCode::UnknownTopicId)
        } else {
            self.topics.get(&name.0).ok_or(ErrorCode::UnknownTopicOrPartition)
        }
    }

    async fn produce(&self, request: ProduceRequest, version: i16) -> Reply {
        let acks = request.acks;
        let acks_valid = matches!(acks, -1..=1);
        let mut topic_responses = Vec::with_capacity(request.topic_data.len());
        let mut appends = Vec::new();
        for topic_data in request.topic_data {
            let topic = self.find_topic(&topic_data.name, topic_data.topic_id, version >= 13);
            let mut partitions = Vec::with_capacity(topic_data.partition_data.len());
            for data in topic_data.partition_data {
                let response = PartitionProduceResponse::default().with_index(data.index);
                let partition = match &topic {
                    _ if !acks_valid => Err(ErrorCode::InvalidRequiredAcks),
                    // Only the coordinator writes its internal topic.
                    Ok(topic) if topic.name == OFFSETS_TOPIC => Err(ErrorCode::InvalidTopicException),
                    Ok(topic) => topic.partition(data.index).cloned().ok_or(ErrorCode::UnknownTopicOrPartition),
                    Err(error) => Err(*error),
                };
                match (partition, data.records) {
                    (Ok(partition), Some(records)) if !records.is_empty() => {
                        appends.push((topic_responses.len(), partitions.len(), partition, records));
                        partitions.push(response);
                    }
                    (Ok(_), _) => partitions.push(response.with_error_code(code(ErrorCode::CorruptMessage))),
                    (Err(error), _) => partitions.push(response.with_error_code(code(error))),
                }
            }
            topic_responses.push(
                TopicProduceResponse::default()
                    .with_name(topic_data.name)
                    .with_topic_id(topic_data.topic_id)
                    .with_partition_responses(partitions),
            );
        }
        // Appends run on blocking threads, all partitions at once: with flush `always` each
        // waits for its group commit, and partitions sync in parallel. One append that cannot
        // wait for a disk (flush `never`: a copy into the page cache) runs right here instead:
        // handing it to another thread and back cost more than the copy (producers with a
        // short linger send one partition per request).
        let now = now_ms();
        let timeout_ms = request.timeout_ms;
        let inline = appends.len() == 1 && appends[0].2.log.config().flush == FlushPolicy::Never;
        let tasks: Vec<_> = appends
            .into_iter()
            .map(|(t, p, partition, records)| {
                let append = move || {
                    let result = append_as_leader(&partition, &records, acks, timeout_ms, now, None);
                    (partition, result)
                };
                let task =
                    if inline { Append::Done(append()) } else { Append::Blocking(tokio::task::spawn_blocking(append)) };
                (t, p, task)
            })
            .collect();
        let mut appended = false;
        let mut replicating = Vec::new();
        for (t, p, task) in tasks {
            let response = &mut topic_responses[t].partition_responses[p];
            let outcome = match task {
                Append::Done(done) => Ok(done),
                Append::Blocking(handle) => handle.await,
            };
            match outcome {
                Ok((_, Ok((info, completion)))) => {
                    appended = true;
                    response.base_offset = info.base_offset;
                    response.log_append_time_ms = -1;
                    response.log_start_offset = info.log_start_offset;
                    if let Some(completion) = completion {
                        replicating.push((t, p, completion));
                    }
                }
                Ok((partition, Err(failure))) => {
                    if failure.code == ErrorCode::KafkaStorageError {
                        tracing::error!(partition = %partition.name(), error = %failure.message, "append failed");
                    } else {
                        tracing::debug!(partition = %partition.name(), error = %failure.message, "append refused");
                    }
                    response.error_code = code(failure.code);
                    if version >= 8 {
                        response.error_message = Some(str_bytes(failure.message));
                    }
                }
                Err(join_error) => {
                    tracing::error!(error = %join_error, "append task failed");
                    response.error_code = code(ErrorCode::UnknownServerError);
                }
            }
        }
        if appended {
            self.appended.notify_waiters();
        }
        // acks=all in a cluster: answer once the high watermark passes each batch.
        for (t, p, completion) in replicating {
            let response = &mut topic_responses[t].partition_responses[p];
            let outcome = completion.await.unwrap_or(Err(ErrorCode::NotLeaderOrFollower));
            if let Err(error) = outcome {
                response.error_code = code(error);
                response.base_offset = -1;
            }
        }
        if acks != 0 {
            return Reply::Response(ResponseKind::Produce(ProduceResponse::default().with_responses(topic_responses)));
        }
        // acks=0 has no response to carry an error; Kafka closes the connection so the
        // producer notices and refreshes its metadata.
        let failed = topic_responses.iter().flat_map(|t| &t.partition_responses).find(|p| p.error_code != 0);
        match failed {
            Some(p) => Reply::Close(format!("acks=0 produce failed with error code {}", p.error_code)),
            None => Reply::None,
        }
    }

    async fn fetch(&self, request: FetchRequest, version: i16) -> FetchResponse {
        // keel declines fetch sessions (KIP-227): every fetch is a full fetch, answered with
        // session id 0, so clients never send incremental ones.
        if request.session_id != 0 {
            return FetchResponse::default().with_error_code(code(ErrorCode::FetchSessionIdNotFound));
        }
        if request.session_epoch > 0 {
            return FetchResponse::default().with_error_code(code(ErrorCode::InvalidFetchSessionEpoch));
        }
        let by_id = version >= 13;
        let replica_id = if version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
        // A follower's fetch (Kafka's replica id); only a cluster has followers.
        // Fetch v15 carries the follower's broker epoch (KIP-903); older versions do not.
        let replica_epoch = if version >= 15 { request.replica_state.replica_epoch } else { -1 };
        let replica = (replica_id >= 0).then_some((NodeId(replica_id), replica_epoch));
        let resolved: Vec<(FetchTopic, Result<Arc<Topic>, ErrorCode>)> = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.find_topic(&t.topic, t.topic_id, by_id);
                (t, topic)
            })
            .collect();
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
        let min_bytes = request.min_bytes.max(0) as usize;
        let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
        let mut shutdown = self.shutdown.clone();
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (responses, bytes) = self.read_fetch(&resolved, max_bytes, replica);
            let waited_out = tokio::time::Instant::now() >= deadline;
            if bytes >= min_bytes || bytes > 0 && min_bytes == 0 || waited_out || *shutdown.borrow() {
                return FetchResponse::default().with_session_id(0).with_responses(responses);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Reads every requested partition once. Returns the responses and the bytes in them.
    fn read_fetch(
        &self,
        topics: &[(FetchTopic, Result<Arc<Topic>, ErrorCode>)],
        max_bytes: usize,
        replica: Option<(NodeId, i64)>,
    ) -> (Vec<FetchableTopicResponse>, usize) {
        let mut total = 0usize;
        let mut advanced = false;
        let mut responses = Vec::with_capacity(topics.len());
        for (request, topic) in topics {
            let mut partitions = Vec::with_capacity(request.partitions.len());
            for p in &request.partitions {
                let response = PartitionData::default().with_partition_index(p.partition);
                let partition = match topic {
                    Ok(topic) => topic.partition(p.partition).ok_or(ErrorCode::UnknownTopicOrPartition),
                    Err(error) => Err(*error),
                };
                let partition = match partition {
                    Ok(partition) => partition,
                    Err(error) => {
                        partitions.push(response.with_error_code(code(error)).with_high_watermark(-1));
                        continue;
                    }
                };
                let access = match replica {
                    None => leader_view(partition, p.current_leader_epoch).map(|view| FetchAccess {
                        upto: view.high_watermark,
                        high_watermark: view.high_watermark,
                        diverging: None,
                    }),
                    Some(replica) => replica_fetch(partition, replica, p, &mut advanced),
                };
                let access = match access {
                    Ok(access) => access,
                    Err((error, high_watermark)) => {
                        partitions.push(
                            response
                                .with_error_code(code(error))
                                .with_high_watermark(high_watermark)
                                .with_log_start_offset(partition.log.log_start_offset())
                                .with_records(Some(Bytes::new())),
                        );
                        continue;
                    }
                };
                let high_watermark = access.high_watermark;
                let response = response
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(partition.log.log_start_offset());
                if let Some((epoch, end_offset)) = access.diverging {
                    let diverging = EpochEndOffset::default().with_epoch(epoch.0).with_end_offset(end_offset);
                    partitions.push(response.with_diverging_epoch(diverging).with_records(Some(Bytes::new())));
                    continue;
                }
                let limit = (p.partition_max_bytes.max(0) as usize).min(max_bytes - total);
                if limit == 0 {
                    partitions.push(response);
                    continue;
                }
                match partition.log.read(p.fetch_offset, limit, access.upto) {
                    // KIP-74: an oversized first batch is returned whole only if the response
                    // holds nothing yet; later partitions must fit.
                    Ok(read) if total > 0 && read.records.len() > limit => partitions.push(response),
                    Ok(read) => {
                        total += read.records.len();
                        partitions.push(response.with_records(Some(read.records)));
                    }
                    Err(error) => {
                        if !matches!(error, ReadError::OffsetOutOfRange { .. }) {
                            tracing::error!(partition = %format!("{}-{}", partition.topic, partition.index), %error, "read failed");
                        }
                        partitions
                            .push(response.with_error_code(code(error.error_code())).with_records(Some(Bytes::new())));
                    }
                }
            }
            responses.push(
                FetchableTopicResponse::default()
                    .with_topic(request.topic.clone())
                    .with_topic_id(request.topic_id)
                    .with_partitions(partitions),
            );
        }
        if advanced {
            // Consumers long-polling on these partitions may read further now.
            self.appended.notify_waiters();
        }
        (responses, total)
    }

    fn list_offsets(&self, request: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
        const LATEST: i64 = -1;
        const EARLIEST: i64 = -2;
        const MAX_TIMESTAMP: i64 = -3;
        const EARLIEST_LOCAL: i64 = -4;
        let topics = request
            .topics
            .into_iter()
            .map(|t| {
                let topic = self.topics.get(&t.name.0);
                let partitions = t
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let response = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                        let Some(partition) = topic.as_ref().and_then(|t| t.partition(p.partition_index)) else {
                            return response.with_error_code(code(ErrorCode::UnknownTopicOrPartition));
                        };
                        let view = match leader_view(partition, p.current_leader_epoch) {
                            Ok(view) => view,
                            Err((error, _)) => return response.with_error_code(code(error)),
                        };
                        let high_watermark = view.high_watermark;
                        let found = match p.timestamp {
                            // A new leader's high watermark may still be below its
                            // predecessor's: Kafka answers OFFSET_NOT_AVAILABLE meanwhile.
                            LATEST if !view.caught_up => Err(ErrorCode::OffsetNotAvailable),
                            LATEST => Ok(Some((-1, high_watermark))),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((-1, partition.log.log_start_offset()))),
                            MAX_TIMESTAMP => max_timestamp(partition),
                            timestamp if timestamp < 0 => Err(ErrorCode::InvalidRequest),
                            timestamp => partition
                                .log
                                .offset_for_timestamp(timestamp)
                                .map(|found| found.filter(|&(_, offset)| offset < high_watermark))
                                .map_err(|e| e.error_code()),
                        };
                        match found {
                            Ok(Some((timestamp, offset))) => {
                                // The leader epoch field exists from v4 on.
                                let epoch = if version >= 4 { view.leader_epoch } else { -1 };
                                response.with_timestamp(timestamp).with_offset(offset).with_leader_epoch(epoch)
                            }
                            Ok(None) => response.with_timestamp(-1).with_offset(-1),
                            Err(error) => response.with_error_code(code(error)),
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    fn describe_configs(&self, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
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
                    TOPIC => match self.topics.get(&resource.resource_name) {
                        Some(topic) => describe_topic_configs(&topic)
                            .into_iter()
                            .map(|(k, v, default)| {
                                (k.to_string(), v, if default { SOURCE_DEFAULT } else { SOURCE_TOPIC })
                            })
                            .collect(),
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

    /// Hands out producer ids for idempotent producers. A producer that re-initialises with
    /// its id and epoch (KIP-360) keeps the id with the next epoch. In a cluster a new id may
    /// wait for a block from the controller, and is COORDINATOR_LOAD_IN_PROGRESS (retriable)
    /// if none comes in time.
    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        if request.transactional_id.is_some() {
            return InitProducerIdResponse::default()
                .with_error_code(code(ErrorCode::TransactionalIdAuthorizationFailed))
                .with_producer_id(ProducerId(-1));
        }
        let (id, epoch) = if request.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&request.producer_epoch) {
            (request.producer_id.0, request.producer_epoch + 1)
        } else {
            match self.producer_ids.next().await {
                Ok(id) => (id, 0),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand out a producer id");
                    return InitProducerIdResponse::default()
                        .with_error_code(code(e.code()))
                        .with_producer_id(ProducerId(-1));
                }
            }
        };
        InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
    }

    fn broker_configs(&self) -> Vec<(&'static str, String)> {
        let c = &self.config;
        let d = &c.topic_defaults;
        let (host, port) = &self.advertised;
        vec![
            ("node.id", c.node_id.to_string()),
            ("broker.id", c.node_id.to_string()),
            ("log.dirs", c.data_dir.display().to_string()),
            ("listeners", format!("PLAINTEXT://{}", c.listen)),
            ("advertised.listeners", format!("PLAINTEXT://{host}:{port}")),
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

    /// Flushes due logs; with `full`, also applies retention and writes recovery checkpoints.
    pub fn maintain(&self, full: bool) {
        self.topics.maintain(now_ms(), full);
        if full {
            self.groups.compact();
        }
    }

    /// How the group's last rebalance went, if this broker coordinates it.
    pub fn last_rebalance(&self, group_id: &str) -> Option<keel_groups::Rebalance> {
        self.groups.read(group_id, |c| c.last_rebalance(group_id)).ok().flatten()
    }

    /// Advances group timers (sessions, rebalances, offset expiry).
    pub fn tick_groups(&self) {
        self.groups.tick();
    }

    /// Flushes everything and closes every log cleanly.
    pub fn close(&self) -> Result<(), String> {
        self.topics.close(now_ms())
    }
}

/// What a fetch may read from one partition.
struct FetchAccess {
    /// Read below this offset: the high watermark for consumers, the log end for followers.
    upto: i64,
    high_watermark: i64,
    /// A follower's log diverged: KIP-320's diverging epoch and its end offset here.
    diverging: Option<(LeaderEpoch, i64)>,
}

/// The leader's side of a partition, as a consumer may see it.
pub(crate) struct LeaderView {
    pub high_watermark: i64,
    pub leader_epoch: i32,
    /// The high watermark has reached the start of this leader epoch: until then a new
    /// leader's high watermark may lie below the one its predecessor exposed.
    pub caught_up: bool,
}

/// Whether this replica may serve consumers, and at which high watermark. KIP-320: a client's
/// older leader epoch is `FENCED_LEADER_EPOCH`, a newer one `UNKNOWN_LEADER_EPOCH` (this broker
/// has not learnt it yet); -1 skips the check. Errors carry the high watermark to report.
pub(crate) fn leader_view(partition: &Partition, current_leader_epoch: i32) -> Result<LeaderView, (ErrorCode, i64)> {
    let mut role = partition.role.lock();
    let reported = role.high_watermark();
    let Some(replica) = role.replica() else { return Err((ErrorCode::NotLeaderOrFollower, reported)) };
    let epoch = (current_leader_epoch >= 0).then_some(LeaderEpoch(current_leader_epoch));
    match replica.engine.consumer_view(epoch) {
        Ok(view) => Ok(LeaderView {
            high_watermark: view.high_watermark,
            leader_epoch: view.leader_epoch.0,
            caught_up: view.caught_up,
        }),
        Err(error) => Err((error, reported)),
    }
}

/// A follower's fetch, decided by the replication engine: it may read up to the log end, or
/// is told where its log diverges, or is refused. `replica` is the follower and the broker
/// epoch it fetched with (-1 before Fetch v15).
fn replica_fetch(
    partition: &Partition,
    (replica, replica_epoch): (NodeId, i64),
    request: &FetchPartition,
    advanced: &mut bool,
) -> Result<FetchAccess, (ErrorCode, i64)> {
    let mut role = partition.role.lock();
    let reported = role.high_watermark();
    let Some(local) = role.replica() else { return Err((ErrorCode::NotLeaderOrFollower, reported)) };
    let epoch = |e: i32| (e >= 0).then_some(LeaderEpoch(e));
    let fetch = keel_replication::FetchRequest {
        replica,
        fetch_offset: request.fetch_offset,
        last_fetched_epoch: epoch(request.last_fetched_epoch),
        current_leader_epoch: epoch(request.current_leader_epoch),
        broker_epoch: (replica_epoch >= 0).then_some(replica_epoch),
    };
    let before = local.engine.high_watermark();
    let decision = local.engine.serve_fetch(monotonic(), &fetch, &LogView(&partition.log));
    local.complete();
    let high_watermark = local.engine.high_watermark();
    *advanced |= high_watermark > before;
    match decision {
        FetchDecision::Read { high_watermark, .. } => {
            Ok(FetchAccess { upto: partition.log.log_end_offset(), high_watermark, diverging: None })
        }
        FetchDecision::Diverging { epoch, end_offset, high_watermark, .. } => {
            Ok(FetchAccess { upto: high_watermark, high_watermark, diverging: Some((epoch, end_offset)) })
        }
        FetchDecision::OffsetOutOfRange { .. } => Err((ErrorCode::OffsetOutOfRange, high_watermark)),
        FetchDecision::Error(error) => Err((error, high_watermark)),
    }
}

/// A produce append: finished on the request's own thread, or running on a blocking one.
enum Append<T> {
    Done(T),
    Blocking(tokio::task::JoinHandle<T>),
}

/// Appends a producer's records if this replica leads the partition. The write happens under
/// the replica's role lock, in the leader epoch just checked, and the flush its policy asks
/// for after the lock is released, so concurrent producers of the partition share a group
/// commit; with acks=all the answer is a completion that resolves once the high watermark
/// passes the batch (or the request fails). With `in_epoch`, only a leader in that epoch
/// appends.
///
/// With flush `always` the leader hears of the batch only once it is synced, so the high
/// watermark never passes a record a power loss could take back: on a cluster of one (the
/// single node) a consumer never reads such a record. Followers learn the log end from
/// fetches as in Kafka.
pub(crate) fn append_as_leader(
    partition: &Partition,
    records: &[u8],
    acks: i16,
    timeout_ms: i32,
    now_ms: i64,
    in_epoch: Option<LeaderEpoch>,
) -> Result<(AppendInfo, Option<Completion>), Refusal> {
    let mut role = partition.role.lock();
    let not_leader = || Refusal {
        code: ErrorCode::NotLeaderOrFollower,
        message: format!("this broker does not lead partition {}", partition.name()),
    };
    let replica = role.replica().ok_or_else(not_leader)?;
    let leader = replica.leader().ok_or_else(not_leader)?;
    if let Some(epoch) = in_epoch.filter(|e| *e != leader.leader_epoch()) {
        return Err(Refusal {
            code: ErrorCode::NotLeaderOrFollower,
            message: format!(
                "partition {} is led in epoch {} now, not {}",
                partition.name(),
                leader.leader_epoch().0,
                epoch.0
            ),
        });
    }
    leader.check_produce(acks).map_err(|code| Refusal {
        code,
        message: format!(
            "partition {} cannot take acks={acks} now: its ISR {:?} is below min.insync.replicas",
            partition.name(),
            leader.isr()
        ),
    })?;
    let info = partition.log.append_unflushed(records, leader.leader_epoch(), now_ms)?;
    let now = monotonic();
    let synced_first = partition.log.config().flush == FlushPolicy::Always;
    if !synced_first {
        leader.handle_local_append(now, partition.log.log_end_offset());
        replica.complete();
    }
    let deadline = now + keel_types::Duration::from_millis(timeout_ms.max(0) as u64);
    let completion = if acks == -1 { replica.wait_for(now, info.last_offset + 1, deadline) } else { None };
    drop(role);
    partition.log.complete_append(info.last_offset + 1, now_ms)?;
    if synced_first {
        let mut role = partition.role.lock();
        if let Some(replica) = role.replica() {
            if let Some(leader) = replica.engine.leader_mut() {
                leader.handle_local_append(monotonic(), partition.log.flushed_offset());
            }
            replica.complete();
        }
    }
    Ok((info, completion))
}

/// ListOffsets with timestamp -3: the record with the largest timestamp.
fn max_timestamp(partition: &Partition) -> Result<Option<(i64, i64)>, ErrorCode> {
    let Some(max) = partition.log.max_timestamp() else { return Ok(None) };
    partition.log.offset_for_timestamp(max).map_err(|e| e.error_code())
}

/// The ApiVersions answer: every API and version range keel serves.
pub fn api_versions(error: ErrorCode) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.api_key as i16)
                .with_min_version(s.advertised_min)
                .with_max_version(s.max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(code(error)).with_api_keys(api_keys)
}

/// The cluster id every member reports (clients warn when it changes). A data directory
/// written by keel's single node before it became a cluster of one names its id in
/// `meta.properties` and keeps it. Otherwise it is derived from the controller quorum (ids
/// and addresses), which every member is configured with; changing a controller's address
/// changes it.
fn cluster_id(config: &BrokerConfig) -> Result<String, String> {
    let path = config.data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            return Ok(id.trim().to_string());
        }
    }
    let voters = config.controller_voters()?;
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d; // FNV-1a 128 offset basis
    for (id, address) in &voters {
        for byte in format!("{id}@{address};").bytes() {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
        }
    }
    Ok(Uuid::from_u128(hash).simple().to_string()[..22].to_string())
}
