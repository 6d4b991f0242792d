//! Fetch: consumers up to the high watermark, followers up to the log end (KIP-320 epoch checks, long polls).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_kafka::fetch_wait::{fetch_answers_now, FetchRead};
use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use keel_kafka::kafka_protocol::messages::fetch_response::{EpochEndOffset, FetchableTopicResponse, PartitionData};
use keel_kafka::kafka_protocol::messages::*;
use keel_replication::FetchDecision;
use keel_storage::ReadError;
use keel_types::{BrokerEpoch, ErrorCode, LeaderEpoch, NodeId};

use crate::broker::{code, Broker};
use crate::clock::monotonic;
use crate::cluster::replica::LogView;
use crate::topics::{Partition, Topic};

impl Broker {
    pub(crate) async fn fetch(&self, request: FetchRequest, version: i16) -> FetchResponse {
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
        let replica_epoch = BrokerEpoch(if version >= 15 { request.replica_state.replica_epoch } else { -1 });
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
        let max_bytes = if request.max_bytes <= 0 { usize::MAX } else { request.max_bytes as usize };
        let mut shutdown = self.shutdown.clone();
        loop {
            let notified = self.appended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (responses, bytes) = self.read_fetch(&resolved, max_bytes, replica);
            let response = FetchResponse::default().with_session_id(0).with_responses(responses);
            let waited_out = tokio::time::Instant::now() >= deadline || *shutdown.borrow();
            if fetch_answers_now(&FetchRead::of(&response, bytes), request.min_bytes, waited_out) {
                return response;
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Reads every requested partition once. Returns the responses and the bytes in them.
    pub(crate) fn read_fetch(
        &self,
        topics: &[(FetchTopic, Result<Arc<Topic>, ErrorCode>)],
        max_bytes: usize,
        replica: Option<(NodeId, BrokerEpoch)>,
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
}

/// The fetch wait keel honours at most, whatever a client asks.
pub(crate) const FETCH_WAIT_MS_MAX: i32 = 30_000;

/// What a fetch may read from one partition.
pub(crate) struct FetchAccess {
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

/// Partition `index` of `topic` as its leader serves it to clients (ListOffsets,
/// DeleteRecords): UNKNOWN_TOPIC_OR_PARTITION if this broker holds no such partition, else what
/// [`leader_view`] says.
pub(crate) fn served_partition(
    topic: Option<&Arc<Topic>>,
    index: i32,
    current_leader_epoch: i32,
) -> Result<(&Partition, LeaderView), ErrorCode> {
    let partition = topic.and_then(|t| t.partition(index)).ok_or(ErrorCode::UnknownTopicOrPartition)?;
    let view = leader_view(partition, current_leader_epoch).map_err(|(error, _)| error)?;
    Ok((partition, view))
}

/// A follower's fetch, decided by the replication engine: it may read up to the log end, or
/// is told where its log diverges, or is refused. `replica` is the follower and the broker
/// epoch it fetched with (-1 before Fetch v15).
pub(crate) fn replica_fetch(
    partition: &Partition,
    (replica, replica_epoch): (NodeId, BrokerEpoch),
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
        broker_epoch: (replica_epoch.0 >= 0).then_some(replica_epoch),
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
