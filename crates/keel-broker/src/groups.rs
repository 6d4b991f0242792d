//! The shell around `keel-groups`: feeds group requests to the coordinator with the time and
//! a token, carries out its effects (answers, appends to `__consumer_offsets`), and rebuilds
//! it from `__consumer_offsets` at startup.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use keel_groups::{Config, Coordinator, Effect, Record, Response, Token};
use keel_kafka::kafka_protocol::indexmap::IndexMap;
use keel_kafka::kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use keel_storage::Log;
use keel_types::{Instant, LeaderEpoch};
use tokio::sync::oneshot;

use crate::clock::now_ms;
use crate::topics::{Partition, Topics};

/// Kafka's internal topic for committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Rewrite a `__consumer_offsets` partition from a snapshot once it holds this many bytes
/// beyond its start (keel's stand-in for log compaction).
const OFFSETS_PARTITION_BYTES_MAX: u64 = 64 << 20;
/// Segment size of `__consumer_offsets` partitions (well below the rewrite threshold).
const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;

/// Group coordination for the broker.
#[derive(Debug)]
pub struct Groups {
    coordinator: Mutex<Coordinator>,
    waiting: Mutex<BTreeMap<Token, oneshot::Sender<Response>>>,
    next_token: Mutex<Token>,
    partitions: Vec<Arc<Partition>>,
    /// Appends under way per offsets partition. Counted while the coordinator lock is held,
    /// so a snapshot taken under that lock knows whether records are still on their way.
    in_flight: Mutex<Vec<usize>>,
    /// The monotonic clock's reading at startup; coordinator time is measured from it.
    started: std::time::Instant,
}

impl Groups {
    /// Opens (creating if needed) `__consumer_offsets` and replays it into a coordinator.
    pub fn open(topics: &Topics, config: Config, flush_policy: &str) -> Result<Groups, String> {
        let topic = match topics.get(OFFSETS_TOPIC) {
            Some(topic) => topic,
            None => {
                let configs = [
                    ("retention.ms".to_string(), "-1".to_string()),
                    // Smaller than the rewrite threshold, so a snapshot rewrite can delete the
                    // segments before it; with larger segments the rewrite would repeat every
                    // round without shrinking anything.
                    ("segment.bytes".to_string(), OFFSETS_SEGMENT_BYTES.to_string()),
                    ("flush.policy".to_string(), flush_policy.to_string()),
                ]
                .into_iter()
                .collect();
                topics
                    .create(OFFSETS_TOPIC, Some(config.offsets_partitions as i32), configs, false, now_ms())
                    .map_err(|e| format!("cannot create {OFFSETS_TOPIC}: {e}"))?
            }
        };
        if topic.partitions.len() as u32 != config.offsets_partitions {
            return Err(format!(
                "{OFFSETS_TOPIC} has {} partitions but offsets_topic_num_partitions is {}; it cannot change once groups exist",
                topic.partitions.len(),
                config.offsets_partitions
            ));
        }
        let started = monotonic_now();
        let mut coordinator = Coordinator::new(config, seed(), now_ms()).map_err(|e| format!("group config: {e}"))?;
        let mut loaded = 0usize;
        for partition in &topic.partitions {
            for record in read_partition(&partition.log)? {
                coordinator.load(record, Instant::ZERO);
                loaded += 1;
            }
        }
        coordinator.check_invariants();
        tracing::info!(records = loaded, groups = coordinator.list_groups(&[]).len(), "loaded consumer groups");
        Ok(Groups {
            coordinator: Mutex::new(coordinator),
            waiting: Mutex::new(BTreeMap::new()),
            next_token: Mutex::new(0),
            partitions: topic.partitions.clone(),
            in_flight: Mutex::new(vec![0; topic.partitions.len()]),
            started,
        })
    }

    fn now(&self) -> Instant {
        Instant(self.started.elapsed().as_nanos() as u64)
    }

    fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `call` on the coordinator with a fresh token and waits for that token's answer.
    pub async fn call(self: &Arc<Self>, call: impl FnOnce(&mut Coordinator, Instant, Token)) -> Option<Response> {
        let (tx, rx) = oneshot::channel();
        let token = {
            let mut next = self.next_token.lock().unwrap_or_else(|p| p.into_inner());
            *next += 1;
            *next
        };
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).insert(token, tx);
        let effects = {
            let mut coordinator = self.coordinator();
            call(&mut coordinator, self.now(), token);
            self.drain(&mut coordinator)
        };
        self.apply(effects);
        rx.await.ok()
    }

    /// Takes the coordinator's effects, counting persists as in flight (lock held).
    fn drain(&self, coordinator: &mut Coordinator) -> Vec<Effect> {
        let effects = coordinator.drain_effects();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        for effect in &effects {
            if let Effect::Persist { partition, .. } = effect {
                in_flight[*partition as usize] += 1;
            }
        }
        effects
    }

    /// Reads the coordinator without changing it.
    pub fn read<T>(&self, read: impl FnOnce(&Coordinator) -> T) -> T {
        read(&self.coordinator())
    }

    /// Carries out effects: answers go to their waiting requests, records are appended (on a
    /// blocking thread; with flush `always` that includes the fsync) and then reported.
    fn apply(self: &Arc<Self>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Respond { token, response } => {
                    if let Some(tx) = self.waiting.lock().unwrap_or_else(|p| p.into_inner()).remove(&token) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Persist { id, partition, records } => {
                    let groups = self.clone();
                    tokio::spawn(async move {
                        let target = groups.partitions[partition as usize].clone();
                        let appended = tokio::task::spawn_blocking(move || append_records(&target.log, &records)).await;
                        let ok = match appended {
                            Ok(Ok(())) => true,
                            Ok(Err(error)) => {
                                tracing::error!(partition, %error, "cannot persist group records");
                                false
                            }
                            Err(error) => {
                                tracing::error!(partition, %error, "group persist task failed");
                                false
                            }
                        };
                        let effects = {
                            let mut coordinator = groups.coordinator();
                            groups.in_flight.lock().unwrap_or_else(|p| p.into_inner())[partition as usize] -= 1;
                            coordinator.handle_persisted(id, ok, groups.now());
                            groups.drain(&mut coordinator)
                        };
                        groups.apply(effects);
                    });
                }
            }
        }
    }

    /// Periodic work: session and rebalance timeouts, offset expiry, and rewriting
    /// `__consumer_offsets` partitions that grew large from a snapshot.
    pub fn tick(self: &Arc<Self>) {
        let now = self.now();
        let effects = {
            let mut coordinator = self.coordinator();
            coordinator.handle_tick(now);
            self.drain(&mut coordinator)
        };
        self.apply(effects);
    }

    /// Rewrites every `__consumer_offsets` partition grown past its limit: the current state is
    /// appended as a snapshot, then everything before it is deleted. Blocking; run it off the
    /// request threads.
    pub fn compact(&self) {
        for (index, partition) in self.partitions.iter().enumerate() {
            let log = &partition.log;
            if log.size_bytes() < OFFSETS_PARTITION_BYTES_MAX {
                continue;
            }
            // Hold the coordinator while snapshotting and appending so no commit for this
            // partition lands between the snapshot and its append (it would be lost when the
            // prefix is deleted).
            let coordinator = self.coordinator();
            if self.in_flight.lock().unwrap_or_else(|p| p.into_inner())[index] > 0 {
                continue; // records on their way would be cut off; try at the next round
            }
            let records = coordinator.snapshot(index as u32, self.now());
            let start = log.log_end_offset();
            let result = append_records(log, &records).map_err(|e| e.to_string()).and_then(|()| {
                // Deletes every segment wholly before the snapshot.
                log.delete_records_before(start).map(drop).map_err(|e| e.to_string())
            });
            drop(coordinator);
            match result {
                Ok(()) => tracing::info!(
                    partition = index,
                    records = records.len(),
                    "rewrote offsets partition from a snapshot"
                ),
                Err(error) => tracing::error!(partition = index, %error, "cannot rewrite offsets partition"),
            }
        }
    }
}

fn monotonic_now() -> std::time::Instant {
    #[allow(clippy::disallowed_methods)] // the shell reads the clock; the coordinator gets values
    std::time::Instant::now()
}

/// Member ids only need to be unique; seed the coordinator's PRNG from the clock.
fn seed() -> u64 {
    now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// Appends coordinator records to an offsets partition as one batch.
fn append_records(log: &Log, records: &[Record]) -> Result<(), keel_storage::AppendError> {
    if records.is_empty() {
        return Ok(());
    }
    let timestamp = now_ms();
    let kafka_records: Vec<KafkaRecord> = records
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let (key, value) = record.encode();
            KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: -1,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: i as i32 - 1,
                timestamp,
                key: Some(key),
                value,
                headers: IndexMap::new(),
            }
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &kafka_records,
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .expect("coordinator records encode");
    log.append(&buf, LeaderEpoch(0), timestamp).map(drop)
}

/// Every coordinator record of one offsets partition, in log order.
fn read_partition(log: &Log) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, 4 << 20, end).map_err(|e| format!("cannot read {OFFSETS_TOPIC}: {e}"))?;
        if read.next_offset <= offset {
            break;
        }
        let mut bytes: Bytes = read.records;
        while !bytes.is_empty() {
            let set =
                RecordBatchDecoder::decode(&mut bytes).map_err(|e| format!("damaged {OFFSETS_TOPIC} batch: {e}"))?;
            for r in set.records {
                if r.offset < log.log_start_offset() {
                    continue;
                }
                let Some(key) = r.key else { continue };
                match Record::decode(key, r.value) {
                    Ok(record) => records.push(record),
                    Err(reason) => {
                        tracing::warn!(offset = r.offset, %reason, "skipping unreadable {OFFSETS_TOPIC} record")
                    }
                }
            }
        }
        offset = read.next_offset;
    }
    Ok(records)
}
