//! What a run measured: the shape of `--json FILE`, read back by `keel bench compare` and the
//! plotter. Rates use MiB (2^20 bytes) of record values.

use serde::{Deserialize, Serialize};

use crate::histogram::LatencySummary;
use crate::workload::Workload;

pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchResults {
    pub format_version: u32,
    pub name: String,
    pub brokers: String,
    /// Wall-clock start of the run, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    pub client: ClientFacts,
    pub workload: Workload,
    pub topics: Vec<String>,
    /// The measured phase's length (warm-up and the end-of-run drain excluded).
    pub measured_seconds: f64,
    pub publish: Throughput,
    pub consume: Throughput,
    /// Send to acknowledgement, measured by each producer.
    pub publish_latency: LatencySummary,
    /// How late sends were against the pacer's schedule (the client queue was full or the
    /// sending thread could not keep up).
    pub publish_delay: LatencySummary,
    /// Send time (in the payload) to the moment a consumer read the record.
    pub end_to_end_latency: LatencySummary,
    pub backlog: Option<BacklogResult>,
    pub verification: Verification,
    pub series: Vec<SeriesPoint>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientFacts {
    pub keel_bench_version: String,
    pub cores: usize,
    pub librdkafka_version: String,
}

/// Counts and rates over the measured phase.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    pub messages: u64,
    pub bytes: u64,
    pub messages_per_s: f64,
    pub mib_per_s: f64,
    pub errors: u64,
}

impl Throughput {
    pub fn over(messages: u64, bytes: u64, errors: u64, seconds: f64) -> Throughput {
        let per_s = |n: u64| if seconds > 0.0 { n as f64 / seconds } else { 0.0 };
        Throughput {
            messages,
            bytes,
            messages_per_s: round1(per_s(messages)),
            mib_per_s: round3(per_s(bytes) / MIB),
            errors,
        }
    }
}

pub const MIB: f64 = 1024.0 * 1024.0;

pub fn round1(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BacklogResult {
    pub target_bytes: u64,
    /// Published while consumers were paused (at least the target).
    pub built_bytes: u64,
    pub build_seconds: f64,
    /// From resuming the consumers until every subscription was within the drain threshold;
    /// `None` if that did not happen before the measured phase ended.
    pub drain_seconds: Option<f64>,
    /// Bytes read by all subscriptions together during the drain, per second.
    pub drain_mib_per_s: Option<f64>,
    /// A subscription counts as drained when it is at most this many messages behind.
    pub drained_threshold_messages: u64,
    pub producers_stopped_for_drain: bool,
}

/// What the consumers read, checked against what the producers had acknowledged. Counts are
/// over the whole run (warm-up and end-of-run drain included), per subscription summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Records the cluster acknowledged.
    pub acknowledged: u64,
    /// Records whose delivery failed (timeouts, errors).
    pub publish_failed: u64,
    /// Per subscription: distinct acknowledged records it read.
    pub consumed_per_subscription: Vec<u64>,
    /// Acknowledged records some subscription never read (summed over subscriptions).
    pub missing: u64,
    /// Records a subscription read more than once.
    pub duplicates: u64,
    /// Records read whose delivery had been reported failed (a timeout that still landed).
    pub consumed_unacknowledged: u64,
    /// Payloads that failed the checksum, size, magic or run check.
    pub corrupt: u64,
    /// A producer's records seen out of sequence order within one partition (possible without
    /// idempotence when retries reorder batches).
    pub out_of_order: u64,
    pub consume_errors: u64,
    /// The first problems found, for people.
    pub problems: Vec<String>,
}

impl Verification {
    /// Every acknowledged record was read by every subscription, and nothing read was corrupt.
    pub fn passed(&self) -> bool {
        self.missing == 0 && self.corrupt == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Warmup,
    Measure,
    /// Producers stopped; consumers read what is left.
    Finish,
}

/// One interval of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// End of the interval, seconds since the run started.
    pub t_s: f64,
    pub phase: Phase,
    pub publish_messages_per_s: f64,
    pub publish_mib_per_s: f64,
    pub consume_messages_per_s: f64,
    pub consume_mib_per_s: f64,
    pub publish_errors: u64,
    /// Acknowledged minus read, worst subscription, at the end of the interval.
    pub backlog_messages: u64,
    pub consumers_paused: bool,
    pub publish_latency: LatencySummary,
    pub end_to_end_latency: LatencySummary,
}
