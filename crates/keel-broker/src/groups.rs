//! The shell around `keel-groups`: feeds group requests to the coordinator of the group's
//! `__consumer_offsets` partition with the time and a token, carries out its effects (answers,
//! appends to that partition), and rebuilds each coordinator from its partition's log: at
//! startup on a single node, when this broker becomes the partition's leader in a cluster.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use keel_groups::{offsets_partition, Config, Coordinator, Effect, Record, Response, Token};
use keel_kafka::kafka_protocol::indexmap::IndexMap;
use keel_kafka::kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use keel_storage::Log;
use keel_types::{ErrorCode, Instant, LeaderEpoch};
use tokio::sync::{oneshot, Notify};

use crate::api::produce::append_as_leader;
use crate::clock::now_ms;
use crate::cluster::replica::Completion;
use crate::config::ConfigError;
use crate::topics::Partition;

/// Kafka's internal topic for committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// Rewrite a `__consumer_offsets` partition from a snapshot once it holds this many bytes
/// beyond its start (keel's stand-in for log compaction).
const OFFSETS_PARTITION_BYTES_MAX: u64 = 64 << 20;
/// Segment size of `__consumer_offsets` partitions (well below the rewrite threshold).
const OFFSETS_SEGMENT_BYTES: u64 = 16 << 20;
/// How long a group record waits for the ISR (Kafka's `offsets.commit.timeout.ms`).
const PERSIST_TIMEOUT_MS: i32 = 5_000;

/// Group coordination for the broker: one coordinator per `__consumer_offsets` partition this
/// broker leads. A single node leads them all from startup; in a cluster a partition's
/// coordinator is loaded from its log when this broker becomes its leader and dropped when it
/// stops leading (its waiting requests then answer `NOT_COORDINATOR`).
#[derive(Debug)]
pub struct Groups {
    config: Config,
    shards: Mutex<BTreeMap<u32, Arc<Shard>>>,
    next_token: AtomicU64,
    /// The monotonic clock's reading at startup; coordinator time is measured from it.
    started: std::time::Instant,
    /// The wall clock (ms) at `started`: the coordinators' commit timestamps count from it.
    started_ms: i64,
    /// The broker's append signal: replica fetches waiting at this leader read group records
    /// at once.
    appended: Arc<Notify>,
}

/// The coordinator of one `__consumer_offsets` partition.
#[derive(Debug)]
struct Shard {
    partition: Arc<Partition>,
    /// The leader epoch it was loaded in (`None` on a single node). Its records are appended
    /// only in that epoch: a coordinator never writes into a log another leader has changed.
    leader_epoch: Option<LeaderEpoch>,
    coordinator: Mutex<Coordinator>,
    waiting: Mutex<BTreeMap<Token, oneshot::Sender<Response>>>,
    /// Appends under way. Counted while the coordinator lock is held, so a snapshot taken
    /// under that lock knows whether records are still on their way.
    in_flight: Mutex<usize>,
    appended: Arc<Notify>,
}

impl Groups {
    /// Coordinates nothing until this broker leads offsets partitions
    /// ([`Groups::follow_leadership`]).
    pub fn empty(config: Config, appended: Arc<Notify>) -> Result<Groups, ConfigError> {
        config.validate().map_err(ConfigError::Groups)?;
        Ok(Groups {
            config,
            shards: Mutex::new(BTreeMap::new()),
            next_token: AtomicU64::new(1),
            started: monotonic_now(),
            started_ms: now_ms(),
            appended,
        })
    }

    /// Builds the coordinator of one offsets partition from its log.
    fn load(&self, partition: Arc<Partition>, leader_epoch: Option<LeaderEpoch>) -> Result<Arc<Shard>, String> {
        let now = self.now();
        let mut coordinator =
            Coordinator::new(self.config.clone(), seed(), self.started_ms).map_err(|e| format!("group config: {e}"))?;
        for record in read_partition(&partition.log)? {
            coordinator.load(record, now);
        }
        coordinator.check_invariants();
        Ok(Arc::new(Shard {
            partition,
            leader_epoch,
            coordinator: Mutex::new(coordinator),
            waiting: Mutex::new(BTreeMap::new()),
            in_flight: Mutex::new(0),
            appended: self.appended.clone(),
        }))
    }

    /// The number of `__consumer_offsets` partitions groups hash over.
    pub fn offsets_partitions(&self) -> u32 {
        self.config.offsets_partitions
    }

    /// Makes the loaded coordinators match the offsets partitions this broker leads now:
    /// `led` holds each local offsets partition with the leader epoch it is led in here
    /// (`None`: not led here). Loading replays the partition's log: call it off the request
    /// threads.
    pub fn follow_leadership(&self, led: Vec<(Arc<Partition>, Option<LeaderEpoch>)>) {
        let hosted: Vec<u32> = led.iter().map(|(p, _)| p.index as u32).collect();
        let gone: Vec<Arc<Shard>> = {
            let mut shards = self.lock_shards();
            let indexes: Vec<u32> = shards.keys().copied().filter(|i| !hosted.contains(i)).collect();
            indexes.iter().filter_map(|i| shards.remove(i)).collect()
        };
        for shard in gone {
            shard.unload();
        }
        for (partition, epoch) in led {
            let index = partition.index as u32;
            let current = self.lock_shards().get(&index).map(|s| s.leader_epoch);
            if current.is_some() && current == Some(epoch) {
                continue;
            }
            if let Some(shard) = self.lock_shards().remove(&index) {
                shard.unload();
                tracing::info!(partition = index, "stopped coordinating the groups of an offsets partition");
            }
            let Some(epoch) = epoch else { continue };
            match self.load(partition, Some(epoch)) {
                Ok(shard) => {
                    let groups = shard.coordinator().list_groups(&[]).len();
                    tracing::info!(partition = index, leader_epoch = epoch.0, groups, "coordinating groups");
                    self.lock_shards().insert(index, shard);
                }
                Err(error) => tracing::error!(partition = index, %error, "cannot load consumer groups"),
            }
        }
    }

    fn lock_shards(&self) -> MutexGuard<'_, BTreeMap<u32, Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn shards(&self) -> Vec<Arc<Shard>> {
        self.lock_shards().values().cloned().collect()
    }

    /// The coordinator of `group_id`, if this broker is it.
    fn shard(&self, group_id: &str) -> Result<Arc<Shard>, ErrorCode> {
        let index = offsets_partition(group_id, self.config.offsets_partitions);
        self.lock_shards().get(&index).cloned().ok_or(ErrorCode::NotCoordinator)
    }

    fn now(&self) -> Instant {
        Instant(self.started.elapsed().as_nanos() as u64)
    }

    /// Runs `call` on the coordinator of `group_id` with a fresh token and waits for that
    /// token's answer. `NOT_COORDINATOR` if this broker is not (or stops being) the group's
    /// coordinator.
    pub async fn call(
        self: &Arc<Self>,
        group_id: &str,
        call: impl FnOnce(&mut Coordinator, Instant, Token),
    ) -> Result<Response, ErrorCode> {
        let shard = self.shard(group_id)?;
        let (tx, rx) = oneshot::channel();
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let effects = {
            let mut coordinator = shard.coordinator();
            shard.lock_waiting().insert(token, tx);
            call(&mut coordinator, self.now(), token);
            shard.drain(&mut coordinator)
        };
        self.apply(&shard, effects);
        rx.await.map_err(|_| ErrorCode::NotCoordinator)
    }

    /// Reads the coordinator of `group_id` without changing it.
    pub fn read<T>(&self, group_id: &str, read: impl FnOnce(&Coordinator) -> T) -> Result<T, ErrorCode> {
        Ok(read(&self.shard(group_id)?.coordinator()))
    }

    /// Reads every coordinator this broker runs.
    pub fn read_all<T>(&self, mut read: impl FnMut(&Coordinator) -> Vec<T>) -> Vec<T> {
        self.shards().iter().flat_map(|shard| read(&shard.coordinator())).collect()
    }

    /// Which of `group_ids` this broker coordinates, by offsets partition.
    pub fn split<'a>(&self, group_ids: &'a [String]) -> (Vec<Vec<String>>, Vec<&'a String>) {
        let shards = self.lock_shards();
        let mut by_partition: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        let mut elsewhere = Vec::new();
        for group_id in group_ids {
            let index = offsets_partition(group_id, self.config.offsets_partitions);
            if shards.contains_key(&index) {
                by_partition.entry(index).or_default().push(group_id.clone());
            } else {
                elsewhere.push(group_id);
            }
        }
        (by_partition.into_values().collect(), elsewhere)
    }

    /// Carries out a shard's effects: answers go to their waiting requests, records are
    /// appended (on a blocking thread; with flush `always` that includes the fsync; in a
    /// cluster the append is acknowledged by the ISR) and then reported.
    fn apply(self: &Arc<Self>, shard: &Arc<Shard>, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Respond { token, response } => {
                    if let Some(tx) = shard.lock_waiting().remove(&token) {
                        let _ = tx.send(response);
                    }
                }
                Effect::Persist { id, partition, records } => {
                    debug_assert_eq!(partition, shard.partition.index as u32);
                    let (groups, shard) = (self.clone(), shard.clone());
                    tokio::spawn(async move {
                        let ok = shard.persist(records).await;
                        let effects = {
                            let mut coordinator = shard.coordinator();
                            *shard.lock_in_flight() -= 1;
                            coordinator.handle_persisted(id, ok, groups.now());
                            shard.drain(&mut coordinator)
                        };
                        groups.apply(&shard, effects);
                    });
                }
            }
        }
    }

    /// Periodic work: session and rebalance timeouts, offset expiry.
    pub fn tick(self: &Arc<Self>) {
        let now = self.now();
        for shard in self.shards() {
            let effects = {
                let mut coordinator = shard.coordinator();
                coordinator.handle_tick(now);
                shard.drain(&mut coordinator)
            };
            self.apply(&shard, effects);
        }
    }

    /// Rewrites every `__consumer_offsets` partition grown past its limit: the current state is
    /// appended as a snapshot, then everything before it is deleted (in a cluster once the
    /// snapshot is committed; followers then drop the same prefix). Blocking; run it off the
    /// request threads.
    pub fn compact(&self) {
        for shard in self.shards() {
            let log = &shard.partition.log;
            if log.size_bytes() < OFFSETS_PARTITION_BYTES_MAX {
                continue;
            }
            let index = shard.partition.index;
            // Hold the coordinator while snapshotting and appending so no commit for this
            // partition lands between the snapshot and its append (it would be lost when the
            // prefix is deleted).
            let coordinator = shard.coordinator();
            if *shard.lock_in_flight() > 0 {
                continue; // records on their way would be cut off; try at the next round
            }
            let records = coordinator.snapshot(index as u32, self.now());
            let start = log.log_end_offset();
            let appended = shard.append(&records);
            drop(coordinator);
            let result = appended.and_then(|completion| match completion {
                None => Ok(()),
                Some(completion) => match completion.blocking_recv() {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(code)) => Err(format!("the snapshot was not replicated: {code:?}")),
                    Err(_) => Err("the snapshot was not replicated: leadership moved".to_string()),
                },
            });
            // Deletes every segment wholly before the snapshot.
            let result = result.and_then(|()| log.delete_records_before(start).map(drop).map_err(|e| e.to_string()));
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

impl Shard {
    fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_waiting(&self) -> MutexGuard<'_, BTreeMap<Token, oneshot::Sender<Response>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_in_flight(&self) -> MutexGuard<'_, usize> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the coordinator's effects, counting persists as in flight (lock held).
    fn drain(&self, coordinator: &mut Coordinator) -> Vec<Effect> {
        let effects = coordinator.drain_effects();
        let persists = effects.iter().filter(|e| matches!(e, Effect::Persist { .. })).count();
        *self.lock_in_flight() += persists;
        effects
    }

    /// Stops serving: requests still waiting answer `NOT_COORDINATOR`.
    fn unload(&self) {
        let _coordinator = self.coordinator();
        self.lock_waiting().clear();
    }

    /// Appends coordinator records as this partition's leader (in the epoch the shard was
    /// loaded in). In a cluster the answer is the completion that resolves once the ISR has
    /// the records.
    fn append(&self, records: &[Record]) -> Result<Option<Completion>, String> {
        if records.is_empty() {
            return Ok(None);
        }
        let batch = encode_records(records);
        let appended = append_as_leader(&self.partition, &batch, -1, PERSIST_TIMEOUT_MS, now_ms(), self.leader_epoch);
        self.appended.notify_waiters();
        appended.map(|(_, completion)| completion).map_err(|failure| failure.message)
    }

    /// Persists records: appended on a blocking thread, then (in a cluster) replicated.
    async fn persist(self: &Arc<Self>, records: Vec<Record>) -> bool {
        let shard = self.clone();
        let appended = tokio::task::spawn_blocking(move || shard.append(&records)).await;
        let index = self.partition.index;
        let completion = match appended {
            Ok(Ok(completion)) => completion,
            Ok(Err(error)) => {
                tracing::warn!(partition = index, %error, "cannot persist group records");
                return false;
            }
            Err(error) => {
                tracing::error!(partition = index, %error, "group persist task failed");
                return false;
            }
        };
        match completion {
            None => true,
            Some(completion) => match completion.await {
                Ok(Ok(())) => true,
                Ok(Err(code)) => {
                    tracing::info!(partition = index, ?code, "group records were not replicated");
                    false
                }
                Err(_) => false,
            },
        }
    }
}

/// The configs `__consumer_offsets` is created with.
pub fn offsets_topic_configs(flush_policy: &str) -> BTreeMap<String, String> {
    let mut configs: BTreeMap<String, String> = [
        ("retention.ms".to_string(), "-1".to_string()),
        // Smaller than the rewrite threshold, so a snapshot rewrite can delete the segments
        // before it; with larger segments the rewrite would repeat every round without
        // shrinking anything.
        ("segment.bytes".to_string(), OFFSETS_SEGMENT_BYTES.to_string()),
    ]
    .into_iter()
    .collect();
    if !flush_policy.is_empty() {
        configs.insert("flush.policy".to_string(), flush_policy.to_string());
    }
    configs
}

fn monotonic_now() -> std::time::Instant {
    #[allow(clippy::disallowed_methods)] // the shell reads the clock; the coordinator gets values
    std::time::Instant::now()
}

/// Member ids only need to be unique; seed the coordinator's PRNG from the clock.
fn seed() -> u64 {
    now_ms() as u64 ^ u64::from(std::process::id()).rotate_left(32)
}

/// Coordinator records as one batch.
fn encode_records(records: &[Record]) -> BytesMut {
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
    buf
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
