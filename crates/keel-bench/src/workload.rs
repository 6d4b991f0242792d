//! A workload: what to create, how many clients, how fast, for how long. The fields follow the
//! OpenMessaging Benchmark's workload files (`topics`, `partitionsPerTopic`, `producerRate`,
//! ...) in snake case, plus the producer settings OMB keeps in its driver files. The file format
//! is TOML; `bench/README.md` documents it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::payload::HEADER_LEN;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Workload {
    pub name: String,
    pub topics: u32,
    pub partitions_per_topic: u32,
    pub replication_factor: i32,
    /// Bytes per record value (the payload header takes the first 32).
    pub message_size: usize,
    pub producers_per_topic: u32,
    /// Independent readers of every topic (OMB's subscriptions, Kafka's consumer groups); 0
    /// runs producers only.
    pub subscriptions_per_topic: u32,
    pub consumers_per_subscription: u32,
    /// Messages per second over all producers together; 0 means as fast as they can.
    pub producer_rate: u64,
    pub key_distributor: KeyDistributor,
    pub warmup_seconds: f64,
    pub test_duration_seconds: f64,
    /// Backlog mode when above 0: at the start of the measured phase consumers pause until
    /// this many MiB were published, then drain while producers keep writing.
    pub consumer_backlog_size_mib: u64,
    /// In backlog mode, stop the producers once the backlog is built, so the drain measures
    /// consumption alone (reading from the log, not the tail). The run ends when drained.
    pub stop_producers_for_drain: bool,
    pub consumer_mode: ConsumerMode,
    pub producer: ProducerSettings,
    /// Topic configs for CreateTopics, with Kafka's names (`flush.policy`, `retention.ms`).
    pub topic_config: BTreeMap<String, String>,
    /// Extra librdkafka properties for every producer; they override the settings above.
    pub producer_config: BTreeMap<String, String>,
    /// Extra librdkafka properties for every consumer.
    pub consumer_config: BTreeMap<String, String>,
}

/// How producers choose record keys (OMB's `keyDistributor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum KeyDistributor {
    /// No key: the client's sticky partitioner fills one partition's batch at a time.
    None,
    /// Cycle through 10,000 keys: records spread over partitions by key hash.
    RoundRobin,
    /// A random key of the 10,000 for every record.
    Random,
}

/// How a subscription's consumers share the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ConsumerMode {
    /// Each consumer is given its share of the partitions with `assign()`; no group
    /// coordinator, nothing committed.
    Assign,
    /// Consumers `subscribe()` as one consumer group per subscription; the broker's group
    /// coordinator assigns partitions.
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProducerSettings {
    /// `0`, `1` or `all`.
    pub acks: String,
    pub linger_ms: u64,
    /// Bytes per partition batch (librdkafka's `batch.size`).
    pub batch_size: u64,
    pub compression: Compression,
    pub idempotence: bool,
    /// librdkafka's `partitioner`; `murmur2_random` hashes keys like the Java client.
    pub partitioner: String,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            acks: "all".to_string(),
            linger_ms: 1,
            batch_size: 131_072,
            compression: Compression::None,
            idempotence: false,
            partitioner: "murmur2_random".to_string(),
        }
    }
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "default".to_string(),
            topics: 1,
            partitions_per_topic: 16,
            replication_factor: 1,
            message_size: 1024,
            producers_per_topic: 1,
            subscriptions_per_topic: 1,
            consumers_per_subscription: 1,
            producer_rate: 10_000,
            key_distributor: KeyDistributor::None,
            warmup_seconds: 5.0,
            test_duration_seconds: 30.0,
            consumer_backlog_size_mib: 0,
            stop_producers_for_drain: false,
            consumer_mode: ConsumerMode::Assign,
            producer: ProducerSettings::default(),
            topic_config: BTreeMap::new(),
            producer_config: BTreeMap::new(),
            consumer_config: BTreeMap::new(),
        }
    }
}

impl Workload {
    pub fn from_file(path: &Path) -> Result<Workload, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read workload file {}: {e}", path.display()))?;
        Workload::from_toml(&text).map_err(|e| format!("workload file {}: {e}", path.display()))
    }

    pub fn from_toml(text: &str) -> Result<Workload, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn producers(&self) -> u32 {
        self.topics * self.producers_per_topic
    }

    pub fn consumers(&self) -> u32 {
        self.topics * self.subscriptions_per_topic * self.consumers_per_subscription
    }

    /// Checks the workload makes sense before anything is created on the cluster.
    pub fn validate(&self) -> Result<(), String> {
        let positive = |name: &str, value: u64| {
            if value == 0 {
                Err(format!("{name} must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("topics", self.topics.into())?;
        positive("partitions_per_topic", self.partitions_per_topic.into())?;
        positive("producers_per_topic", self.producers_per_topic.into())?;
        if self.replication_factor < 1 {
            return Err("replication_factor must be at least 1".to_string());
        }
        if self.message_size < HEADER_LEN {
            return Err(format!(
                "message_size {} is too small: every record carries a {HEADER_LEN}-byte header (send time, producer, sequence, checksum)",
                self.message_size
            ));
        }
        if self.subscriptions_per_topic > 0 {
            positive("consumers_per_subscription", self.consumers_per_subscription.into())?;
            if self.consumer_mode == ConsumerMode::Assign && self.consumers_per_subscription > self.partitions_per_topic
            {
                return Err(format!(
                    "consumers_per_subscription ({}) exceeds partitions_per_topic ({}); the extra consumers would have no partition",
                    self.consumers_per_subscription, self.partitions_per_topic
                ));
            }
        }
        if !(self.warmup_seconds.is_finite() && self.warmup_seconds >= 0.0) {
            return Err("warmup_seconds must be zero or more".to_string());
        }
        if !(self.test_duration_seconds.is_finite() && self.test_duration_seconds > 0.0) {
            return Err("test_duration_seconds must be more than zero".to_string());
        }
        if self.consumer_backlog_size_mib > 0 && self.subscriptions_per_topic == 0 {
            return Err("backlog mode (consumer_backlog_size_mib > 0) needs at least one subscription".to_string());
        }
        if self.stop_producers_for_drain && self.consumer_backlog_size_mib == 0 {
            return Err(
                "stop_producers_for_drain applies to backlog mode only; set consumer_backlog_size_mib".to_string()
            );
        }
        if !matches!(self.producer.acks.as_str(), "0" | "1" | "all" | "-1") {
            return Err(format!("producer.acks {:?} must be 0, 1 or all", self.producer.acks));
        }
        if self.producer.batch_size == 0 {
            return Err("producer.batch_size must be at least 1 byte".to_string());
        }
        Ok(())
    }

    /// The librdkafka properties every producer gets, before `producer_config` overrides.
    pub fn producer_properties(&self) -> BTreeMap<String, String> {
        let p = &self.producer;
        let acks = if p.acks == "-1" { "all" } else { p.acks.as_str() };
        let mut properties: BTreeMap<String, String> = [
            ("acks", acks.to_string()),
            ("linger.ms", p.linger_ms.to_string()),
            ("batch.size", p.batch_size.to_string()),
            ("compression.type", p.compression.name().to_string()),
            ("enable.idempotence", p.idempotence.to_string()),
            ("partitioner", p.partitioner.clone()),
            ("message.timeout.ms", "30000".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        properties.extend(self.producer_config.clone());
        properties
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_a_file_overrides_them() {
        Workload::default().validate().unwrap();
        let w = Workload::from_toml(
            r#"
            name = "keys"
            topics = 2
            partitions_per_topic = 288
            producers_per_topic = 4
            consumers_per_subscription = 4
            producer_rate = 51200
            key_distributor = "round-robin"
            consumer_backlog_size_mib = 64
            [producer]
            acks = "1"
            compression = "lz4"
            [topic_config]
            "flush.policy" = "never"
            "#,
        )
        .unwrap();
        w.validate().unwrap();
        assert_eq!((w.topics, w.partitions_per_topic, w.producers(), w.consumers()), (2, 288, 8, 8));
        assert_eq!(w.key_distributor, KeyDistributor::RoundRobin);
        assert_eq!(w.producer.linger_ms, 1, "unset keys keep their defaults");
        assert_eq!(w.topic_config["flush.policy"], "never");
        let properties = w.producer_properties();
        assert_eq!(properties["acks"], "1");
        assert_eq!(properties["compression.type"], "lz4");
        assert_eq!(properties["enable.idempotence"], "false");
    }

    #[test]
    fn unknown_keys_and_nonsense_are_rejected_with_the_field_named() {
        assert!(Workload::from_toml("partitions = 3").unwrap_err().contains("partitions"));
        type Breaker = fn(&mut Workload);
        let cases: [(Breaker, &str); 8] = [
            (|w| w.topics = 0, "topics"),
            (|w| w.message_size = 8, "message_size"),
            (|w| w.consumers_per_subscription = 17, "consumers_per_subscription"),
            (|w| w.test_duration_seconds = 0.0, "test_duration_seconds"),
            (|w| w.warmup_seconds = -1.0, "warmup_seconds"),
            (|w| w.producer.acks = "2".into(), "acks"),
            (
                |w| {
                    w.subscriptions_per_topic = 0;
                    w.consumer_backlog_size_mib = 1;
                },
                "subscription",
            ),
            (|w| w.stop_producers_for_drain = true, "backlog"),
        ];
        for (break_it, field) in cases {
            let mut w = Workload::default();
            break_it(&mut w);
            let error = w.validate().unwrap_err();
            assert!(error.contains(field), "{error:?} should name {field}");
        }
    }

    #[test]
    fn extra_client_properties_override_the_settings() {
        let mut w = Workload::default();
        w.producer_config.insert("linger.ms".into(), "20".into());
        w.producer_config.insert("queue.buffering.max.kbytes".into(), "65536".into());
        let properties = w.producer_properties();
        assert_eq!(properties["linger.ms"], "20");
        assert_eq!(properties["queue.buffering.max.kbytes"], "65536");
    }
}
