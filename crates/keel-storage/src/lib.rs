//! keel's partition log: the crate every partition's data lives in.
//!
//! A [`Log`] is a directory of segments holding Kafka RecordBatch v2 bytes exactly as producers
//! sent them (the log assigns only base offset and partition leader epoch, which lie outside
//! the batch CRC), with sparse offset and time indexes, a leader-epoch cache, retention,
//! truncation, a per-log flush policy with group commit, and crash recovery.
//!
//! It owns durability of partition data and nothing else: it knows no Kafka requests, no
//! replication and no clock (callers pass wall-clock milliseconds in). All file access goes
//! through [`backend::Backend`], so the same code runs on real files, in memory, and on a
//! crash-simulating backend in tests.

pub mod backend;
pub mod batch;
mod checkpoint;
mod config;
mod epoch_cache;
mod error;
mod index;
mod log;
mod producer_state;
mod segment;

pub use config::{FlushPolicy, LogConfig};
pub use epoch_cache::EpochEntry;
pub use error::{AppendError, IoError, LogError, OpenError, ReadError};
pub use log::{AppendInfo, DeletedSegment, Log, ReadResult, RecoveryReport, PRODUCER_ID_EXPIRATION_MS};
pub use producer_state::{ProducerError, BATCHES_REMEMBERED};
