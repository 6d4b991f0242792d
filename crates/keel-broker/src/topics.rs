//! Topics and partitions on one broker: creation, deletion, lookup, topic configs, and the
//! metadata file that lists them (`topics.json` in the data directory).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use keel_storage::backend::{read_all, write_atomically, Backend, FileBackend};
use keel_storage::{FlushPolicy, Log, LogConfig, PRODUCER_ID_EXPIRATION_MS};
use keel_types::{ErrorCode, Refusal};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::cluster::replica::{ReplicaSlot, Role};
use crate::config::TopicDefaults;
use crate::error::{DiskError, NodeError};

const METADATA_FILE: &str = "topics.json";

/// One partition of a topic on this broker.
#[derive(Debug)]
pub struct Partition {
    pub topic: String,
    pub index: i32,
    pub log: Log,
    /// This replica's role (leader, follower, or neither until the metadata says).
    pub(crate) role: ReplicaSlot,
}

impl Partition {
    fn new(topic: String, index: i32, log: Log) -> Partition {
        Partition { topic, index, log, role: ReplicaSlot::new(Role::Unassigned) }
    }

    /// The offset below which consumers may read: the replicated high watermark (with flush
    /// `always`, never above what is synced; see `append_as_leader`).
    pub fn high_watermark(&self) -> i64 {
        self.role.lock().high_watermark()
    }

    /// `topic-index`, for logs.
    pub fn name(&self) -> String {
        format!("{}-{}", self.topic, self.index)
    }
}

#[derive(Debug)]
pub struct Topic {
    pub name: String,
    pub id: Uuid,
    /// Overrides given at creation, by Kafka config name.
    pub configs: BTreeMap<String, String>,
    pub log_config: LogConfig,
    /// The partitions this broker holds, by index: all of them on a single node, the ones it
    /// is a replica of in a cluster.
    pub partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<&Arc<Partition>> {
        self.partitions.binary_search_by_key(&index, |p| p.index).ok().map(|i| &self.partitions[i])
    }

    fn indexes(&self) -> Vec<i32> {
        self.partitions.iter().map(|p| p.index).collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    name: String,
    id: Uuid,
    partitions: i32,
    configs: BTreeMap<String, String>,
    /// In a cluster: the partitions this broker holds (a subset of `0..partitions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hosted: Option<Vec<i32>>,
}

/// The broker's topics.
#[derive(Debug)]
pub struct Topics {
    data_dir: PathBuf,
    defaults: TopicDefaults,
    backend: Arc<dyn Backend>,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes creations and deletions (and so metadata file writes).
    changes: Mutex<()>,
}

/// Kafka's topic name rule (`keel_metadata::validate_topic_name`, the one place it is
/// written) as INVALID_TOPIC_EXCEPTION.
pub fn validate_topic_name(name: &str) -> Result<(), Refusal> {
    keel_metadata::validate_topic_name(name).map_err(|message| Refusal::new(ErrorCode::InvalidTopicException, message))
}

/// The topic configs keel understands, by Kafka name, and how each maps onto the log.
pub const TOPIC_CONFIG_KEYS: &[&str] = &[
    "cleanup.policy",
    "compression.type",
    "flush.messages",
    "flush.ms",
    "flush.policy",
    "index.interval.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "min.insync.replicas",
    "retention.bytes",
    "retention.ms",
    "segment.bytes",
    "segment.ms",
    "unclean.leader.election.enable",
];

/// Combines the broker defaults with a topic's overrides into a log configuration, or says
/// which override is wrong.
pub fn topic_log_config(defaults: &TopicDefaults, overrides: &BTreeMap<String, String>) -> Result<LogConfig, Refusal> {
    let bad = |key: &str, value: &str, why: &str| {
        Refusal::new(ErrorCode::InvalidConfig, format!("invalid value {value:?} for topic config {key}: {why}"))
    };
    let mut config = defaults.log_config().map_err(|e| Refusal::new(ErrorCode::InvalidConfig, e.to_string()))?;
    let mut policy = None;
    let (mut flush_messages, mut flush_ms) = (defaults.flush_messages, defaults.flush_ms);
    let mut interval_keys = false;
    for (key, value) in overrides {
        let int = || value.parse::<i64>().map_err(|_| bad(key, value, "expected an integer"));
        let positive =
            || int().and_then(|v| if v > 0 { Ok(v as u64) } else { Err(bad(key, value, "must be positive")) });
        match key.as_str() {
            "retention.ms" => config.retention_ms = (int()? >= 0).then(|| int().unwrap_or(0) as u64),
            "retention.bytes" => config.retention_bytes = (int()? >= 0).then(|| int().unwrap_or(0) as u64),
            "segment.bytes" => config.segment_bytes = positive()?,
            "segment.ms" => config.segment_ms = positive()?,
            "max.message.bytes" => config.max_message_bytes = positive()?,
            "index.interval.bytes" => config.index_interval_bytes = positive()?,
            "flush.messages" => {
                flush_messages = positive()?;
                interval_keys = true;
            }
            "flush.ms" => {
                flush_ms = positive()?;
                interval_keys = true;
            }
            "flush.policy" => policy = Some(value.clone()),
            "cleanup.policy" if value == "delete" => {}
            "cleanup.policy" => {
                return Err(bad(key, value, "keel supports only \"delete\" so far (compaction is not built yet)"))
            }
            "compression.type" if value == "producer" => {}
            "compression.type" => {
                return Err(bad(
                    key,
                    value,
                    "keel stores batches as the producer compressed them; only \"producer\" is supported",
                ))
            }
            "message.timestamp.type" if value == "CreateTime" => {}
            "message.timestamp.type" => return Err(bad(key, value, "only CreateTime is supported")),
            "min.insync.replicas" => {
                positive()?;
            }
            // Read by the controller's elections in a cluster; nothing to do for the log.
            "unclean.leader.election.enable" if value == "true" || value == "false" => {}
            "unclean.leader.election.enable" => return Err(bad(key, value, "expected true or false")),
            _ => {
                return Err(Refusal::new(
                    ErrorCode::InvalidConfig,
                    format!("unknown topic config {key}; keel understands: {}", TOPIC_CONFIG_KEYS.join(", ")),
                ))
            }
        }
    }
    config.flush = match policy.as_deref() {
        Some(name) => FlushPolicy::parse(name, flush_messages, flush_ms)
            .ok_or_else(|| bad("flush.policy", name, "expected never, interval or always"))?,
        // Kafka's own switches: flush.messages=1 means every message is synced.
        None if interval_keys && flush_messages == 1 => FlushPolicy::Always,
        None if interval_keys => FlushPolicy::Interval { messages: flush_messages, ms: flush_ms },
        None => config.flush,
    };
    config.validate().map_err(|e| Refusal::new(ErrorCode::InvalidConfig, e))?;
    Ok(config)
}

/// Every topic config keel reports for a topic: `(name, value, is_default)`.
pub fn describe_topic_configs(
    configs: &BTreeMap<String, String>,
    log_config: &LogConfig,
) -> Vec<(&'static str, String, bool)> {
    let c = log_config;
    let (flush_messages, flush_ms) = match c.flush {
        FlushPolicy::Interval { messages, ms } => (messages.to_string(), ms.to_string()),
        _ => (i64::MAX.to_string(), i64::MAX.to_string()),
    };
    let opt = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
    let min_isr = configs.get("min.insync.replicas").cloned().unwrap_or_else(|| "1".to_string());
    let values = [
        ("cleanup.policy", "delete".to_string()),
        ("compression.type", "producer".to_string()),
        ("flush.messages", flush_messages),
        ("flush.ms", flush_ms),
        ("flush.policy", c.flush.name().to_string()),
        ("index.interval.bytes", c.index_interval_bytes.to_string()),
        ("max.message.bytes", c.max_message_bytes.to_string()),
        ("message.timestamp.type", "CreateTime".to_string()),
        ("min.insync.replicas", min_isr),
        ("retention.bytes", opt(c.retention_bytes)),
        ("retention.ms", opt(c.retention_ms)),
        ("segment.bytes", c.segment_bytes.to_string()),
        ("segment.ms", c.segment_ms.to_string()),
        (
            "unclean.leader.election.enable",
            configs.get("unclean.leader.election.enable").cloned().unwrap_or_else(|| "false".to_string()),
        ),
    ];
    values.into_iter().map(|(k, v)| (k, v, !configs.contains_key(k))).collect()
}

impl Topics {
    /// Opens the local replicas listed in the data directory's metadata (the metadata log
    /// decides which exist: [`Topics::sync_replicas`]), recovering each partition log, and
    /// removes partition directories no topic owns (a deletion cut short).
    pub fn open(data_dir: &Path, defaults: TopicDefaults, now_ms: i64) -> Result<Topics, NodeError> {
        let backend: Arc<dyn Backend> = Arc::new(FileBackend);
        backend.create_dir_all(data_dir).map_err(|e| DiskError::io("create", data_dir, e))?;
        let metadata_path = data_dir.join(METADATA_FILE);
        let records: Vec<TopicRecord> = match read_all(&*backend, &metadata_path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| DiskError::damaged(&metadata_path, e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(DiskError::io("read", &metadata_path, e).into()),
        };
        let topics = Topics {
            data_dir: data_dir.to_path_buf(),
            defaults,
            backend,
            topics: RwLock::new(BTreeMap::new()),
            changes: Mutex::new(()),
        };
        let mut map = BTreeMap::new();
        for record in records {
            let indexes = record.hosted.unwrap_or_else(|| (0..record.partitions).collect());
            let topic = topics
                .open_topic(record.name.clone(), record.id, &indexes, record.configs, now_ms)
                .map_err(|refusal| NodeError::Topic { topic: record.name.clone(), refusal })?;
            map.insert(record.name, Arc::new(topic));
        }
        topics.remove_orphans(&map)?;
        *topics.topics.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(topics)
    }

    fn partition_dir(&self, topic: &str, index: i32) -> PathBuf {
        self.data_dir.join(format!("{topic}-{index}"))
    }

    fn open_topic(
        &self,
        name: String,
        id: Uuid,
        indexes: &[i32],
        configs: BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Topic, Refusal> {
        let log_config = topic_log_config(&self.defaults, &configs)?;
        let mut opened = Vec::with_capacity(indexes.len());
        for &index in indexes {
            let dir = self.partition_dir(&name, index);
            let (log, report) = Log::open(self.backend.clone(), &dir, log_config.clone(), now_ms)
                .map_err(|e| Refusal::new(ErrorCode::KafkaStorageError, e.to_string()))?;
            if report.truncated_bytes > 0 || !report.clean_shutdown && report.scanned_bytes > 0 {
                tracing::warn!(
                    partition = %format!("{name}-{index}"),
                    clean_shutdown = report.clean_shutdown,
                    scanned_bytes = report.scanned_bytes,
                    truncated_bytes = report.truncated_bytes,
                    log_end_offset = report.log_end_offset,
                    "recovered partition log"
                );
            }
            opened.push(Arc::new(Partition::new(name.clone(), index, log)));
        }
        opened.sort_by_key(|p| p.index);
        Ok(Topic { name, id, configs, log_config, partitions: opened })
    }

    fn remove_orphans(&self, topics: &BTreeMap<String, Arc<Topic>>) -> Result<(), DiskError> {
        let names = self.backend.list(&self.data_dir).map_err(|e| DiskError::io("list", &self.data_dir, e))?;
        for name in names {
            let Some((topic, index)) = name.rsplit_once('-') else { continue };
            let Ok(index) = index.parse::<i32>() else { continue };
            let dir = self.data_dir.join(&name);
            let is_log_dir = self.backend.exists(&dir.join("recovery-checkpoint")).unwrap_or(false);
            let owned = topics.get(topic).is_some_and(|t| t.partition(index).is_some());
            if is_log_dir && !owned {
                tracing::warn!(dir = %dir.display(), "removing partition directory of a deleted topic");
                self.backend.remove_dir_all(&dir).map_err(|e| DiskError::io("remove", &dir, e))?;
            }
        }
        Ok(())
    }

    fn persist(&self, topics: &BTreeMap<String, Arc<Topic>>) -> Result<(), Refusal> {
        let records: Vec<TopicRecord> = topics
            .values()
            .map(|t| TopicRecord {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions.last().map_or(0, |p| p.index + 1),
                configs: t.configs.clone(),
                hosted: Some(t.indexes()),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&records).expect("topic records serialize");
        write_atomically(&*self.backend, &self.data_dir.join(METADATA_FILE), &bytes)
            .map_err(|e| Refusal::new(ErrorCode::KafkaStorageError, format!("cannot write topic metadata: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().find(|t| t.id == id).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    pub fn defaults(&self) -> &TopicDefaults {
        &self.defaults
    }

    /// Swaps in a changed topic and persists the metadata. Needs the `changes` lock.
    fn replace(&self, topic: Arc<Topic>) -> Result<(), Refusal> {
        let mut map = self.topics.read().unwrap_or_else(|p| p.into_inner()).clone();
        map.insert(topic.name.clone(), topic);
        self.persist(&map)?;
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = map;
        Ok(())
    }

    /// In a cluster: makes this broker hold exactly the partitions `hosted` of topic `name`
    /// (id `id`) with `configs`, as the metadata log says. Opens the logs of new replicas,
    /// removes those of partitions no longer hosted, applies changed configs, and replaces a
    /// topic of the same name but another id (deleted and created again) entirely. Returns
    /// the topic and the partitions it just opened.
    pub fn sync_replicas(
        &self,
        name: &str,
        id: Uuid,
        hosted: &[i32],
        configs: &BTreeMap<String, String>,
        now_ms: i64,
    ) -> Result<Arc<Topic>, Refusal> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let existing = self.get(name);
        if let Some(topic) = &existing {
            if topic.id == id && topic.indexes() == hosted && topic.configs == *configs {
                return Ok(topic.clone());
            }
        }
        let log_config = topic_log_config(&self.defaults, configs)?;
        let mut partitions = Vec::with_capacity(hosted.len());
        let mut removed = Vec::new();
        match &existing {
            Some(topic) if topic.id == id => {
                for partition in &topic.partitions {
                    if hosted.contains(&partition.index) {
                        if topic.configs != *configs {
                            partition
                                .log
                                .set_config(log_config.clone())
                                .map_err(|e| Refusal::new(ErrorCode::InvalidConfig, e))?;
                        }
                        partitions.push(partition.clone());
                    } else {
                        removed.push(partition.clone());
                    }
                }
            }
            Some(topic) => removed.extend(topic.partitions.iter().cloned()),
            None => {}
        }
        // Logs of removed partitions go before new ones open: a recreated topic reuses the
        // directory names.
        for partition in &removed {
            self.remove_partition_dir(partition);
        }
        let new: Vec<i32> = hosted.iter().copied().filter(|i| partitions.iter().all(|p| p.index != *i)).collect();
        let opened = self.open_topic(name.to_string(), id, &new, configs.clone(), now_ms)?;
        partitions.extend(opened.partitions);
        partitions.sort_by_key(|p| p.index);
        let topic = Arc::new(Topic { name: name.to_string(), id, configs: configs.clone(), log_config, partitions });
        self.replace(topic.clone())?;
        if !new.is_empty() || !removed.is_empty() {
            tracing::info!(topic = name, hosted = ?hosted, "local replicas changed");
        }
        Ok(topic)
    }

    /// In a cluster: removes every local topic `keep` says no longer exists, with its data.
    pub fn retain(&self, keep: impl Fn(&str, Uuid) -> bool) -> Result<(), Refusal> {
        let _changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let mut map = self.topics.read().unwrap_or_else(|p| p.into_inner()).clone();
        let gone: Vec<Arc<Topic>> = map.values().filter(|t| !keep(&t.name, t.id)).cloned().collect();
        if gone.is_empty() {
            return Ok(());
        }
        for topic in &gone {
            map.remove(&topic.name);
        }
        self.persist(&map)?;
        *self.topics.write().unwrap_or_else(|p| p.into_inner()) = map;
        for topic in gone {
            tracing::info!(topic = %topic.name, "topic deleted in the cluster; removing its local replicas");
            for partition in &topic.partitions {
                self.remove_partition_dir(partition);
            }
        }
        Ok(())
    }

    fn remove_partition_dir(&self, partition: &Partition) {
        partition.role.lock().stop();
        let dir = self.partition_dir(&partition.topic, partition.index);
        if let Err(e) = self.backend.remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove partition directory; it is removed at the next start");
        }
    }

    /// Periodic upkeep: interval flushes, retention, recovery checkpoints.
    pub fn maintain(&self, now_ms: i64, checkpoint: bool) {
        for topic in self.list() {
            for partition in &topic.partitions {
                let log = &partition.log;
                let result = log.flush_if_due(now_ms).and_then(|_| {
                    if !checkpoint {
                        return Ok(());
                    }
                    // Retention deletes only what the role allows (issue 17, F6): for a cluster
                    // replica, the replica engine's bound, as keel-sim's brokers ask it.
                    let retention_bound = partition.role.lock().retention_bound();
                    log.maintain(now_ms, retention_bound, PRODUCER_ID_EXPIRATION_MS).map(drop)
                });
                if let Err(e) = result {
                    tracing::error!(partition = %format!("{}-{}", topic.name, partition.index), error = %e, "log maintenance failed");
                }
            }
        }
    }

    /// Flushes and cleanly closes every log (the next start scans nothing).
    pub fn close(&self, now_ms: i64) -> Result<(), NodeError> {
        let mut failures = Vec::new();
        for topic in self.list() {
            for partition in &topic.partitions {
                if let Err(e) = partition.log.close(now_ms) {
                    failures.push(format!("{}-{}: {e}", topic.name, partition.index));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(NodeError::LogsNotClosed { failures })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        for ok in ["orders", "a.b_c-d", "X9", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "has space", "émoji", &"x".repeat(250), "a/b"] {
            assert_eq!(validate_topic_name(bad).unwrap_err().code, ErrorCode::InvalidTopicException, "{bad:?}");
        }
    }

    #[test]
    fn topic_configs_map_onto_the_log() {
        let defaults = TopicDefaults::default();
        let set = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let c = topic_log_config(&defaults, &set(&[("retention.ms", "-1"), ("segment.bytes", "1048576")])).unwrap();
        assert_eq!((c.retention_ms, c.segment_bytes, c.flush), (None, 1 << 20, FlushPolicy::Always));
        let c = topic_log_config(&defaults, &set(&[("flush.policy", "never")])).unwrap();
        assert_eq!(c.flush, FlushPolicy::Never);
        let c = topic_log_config(&defaults, &set(&[("flush.ms", "100")])).unwrap();
        assert_eq!(c.flush, FlushPolicy::Interval { messages: 10_000, ms: 100 });
        let c = topic_log_config(&defaults, &set(&[("flush.messages", "1")])).unwrap();
        assert_eq!(c.flush, FlushPolicy::Always);
        for (key, value) in
            [("retention.ms", "soon"), ("segment.bytes", "0"), ("cleanup.policy", "compact"), ("nope", "1")]
        {
            let error = topic_log_config(&defaults, &set(&[(key, value)])).unwrap_err();
            assert_eq!(error.code, ErrorCode::InvalidConfig, "{key}={value}");
            assert!(error.message.contains(key), "{}", error.message);
        }
    }

    #[test]
    fn local_replicas_persist_and_removed_ones_leave_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let topics = Topics::open(tmp.path(), TopicDefaults::default(), 0).unwrap();
        let configs = [("retention.ms".to_string(), "1000".to_string())].into_iter().collect();
        let (orders, gone) = (Uuid::new_v4(), Uuid::new_v4());
        topics.sync_replicas("orders", orders, &[0, 2], &configs, 0).unwrap();
        topics.sync_replicas("gone", gone, &[0], &BTreeMap::new(), 0).unwrap();
        let bad = [("retention.ms".to_string(), "soon".to_string())].into_iter().collect();
        assert_eq!(
            topics.sync_replicas("bad", Uuid::new_v4(), &[0], &bad, 0).unwrap_err().code,
            ErrorCode::InvalidConfig
        );
        topics.retain(|name, _| name != "gone").unwrap();
        assert!(!tmp.path().join("gone-0").exists());
        assert!(topics.get("gone").is_none());
        topics.close(0).unwrap();
        drop(topics);

        let topics = Topics::open(tmp.path(), TopicDefaults::default(), 0).unwrap();
        let reopened = topics.get("orders").unwrap();
        let indexes: Vec<i32> = reopened.partitions.iter().map(|p| p.index).collect();
        assert_eq!((reopened.id, indexes), (orders, vec![0, 2]));
        assert_eq!(reopened.log_config.retention_ms, Some(1000));
        assert!(topics.get("gone").is_none());
        assert_eq!(topics.get_by_id(orders).unwrap().name, "orders");
        // The same name under another id is another topic: the old replicas go.
        let recreated = Uuid::new_v4();
        topics.sync_replicas("orders", recreated, &[0], &BTreeMap::new(), 0).unwrap();
        assert!(!tmp.path().join("orders-2").exists());
        assert_eq!(topics.get("orders").unwrap().id, recreated);
    }
}
