//! keel-bench: an OpenMessaging-Benchmark-style load generator for any Kafka-compatible
//! cluster, behind `keel bench`.
//!
//! It owns workloads (topics, partitions, producers, subscriptions, rates, keys, client
//! settings, backlog mode), drives real Kafka clients (librdkafka through the rdkafka crate, one
//! client per producer and per consumer), and measures publish and consume throughput over time,
//! publish and end-to-end latency as HDR histograms, and what consumers read: every record
//! carries its producer, sequence, send time and a checksum, so the run ends by checking that
//! every subscription read every acknowledged record intact.
//!
//! It must never depend on keel's broker internals: it speaks only the Kafka protocol, so the
//! same run measures keel or any other Kafka-compatible broker.
//!
//! Pure pieces (pacer, histogram, payload, sequence sets, reports, plots) are unit tested; the
//! driver is the shell around them.

// A benchmark's job is to read clocks: the monotonic clock for pacing and publish latency, the
// wall clock for end-to-end latency across machines. The workspace ban on clock reads is for
// the pure crates.
#![allow(clippy::disallowed_methods)]
// A command-line tool prints its tables.
#![allow(clippy::print_stdout)]

pub mod cli;
mod driver;
pub mod histogram;
pub mod pacer;
pub mod payload;
pub mod plot;
mod progress;
mod raster;
pub mod report;
pub mod results;
pub mod seqset;
pub mod workload;

pub use driver::{run, Progress, RunOptions};
pub use results::BenchResults;
pub use workload::Workload;
