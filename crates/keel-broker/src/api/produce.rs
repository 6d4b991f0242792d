//! Produce: appends as the partition leader, acks=all answered once the high watermark passes.

use keel_kafka::kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use keel_kafka::kafka_protocol::messages::*;
use keel_storage::{AppendInfo, FlushPolicy};
use keel_types::{ErrorCode, LeaderEpoch, Refusal};

use crate::broker::{code, str_bytes, Broker, Reply};
use crate::clock::{monotonic, now_ms};
use crate::cluster::replica::Completion;
use crate::groups::OFFSETS_TOPIC;
use crate::topics::Partition;

impl Broker {
    pub(crate) async fn produce(&self, request: ProduceRequest, version: i16) -> Reply {
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
}

/// A produce append: finished on the request's own thread, or running on a blocking one.
pub(crate) enum Append<T> {
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
