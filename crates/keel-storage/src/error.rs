//! Errors, one enum per kind of operation. Each maps to the Kafka error a client should see.

use std::io;
use std::path::{Path, PathBuf};

use keel_types::ErrorCode;
use thiserror::Error;

use crate::batch::BatchError;

/// An IO failure, with what was being done and to which file.
#[derive(Debug, Error)]
#[error("{op} {}: {source}", path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

pub(crate) trait IoContext<T> {
    fn io_context(self, op: &'static str, path: &Path) -> Result<T, IoError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn io_context(self, op: &'static str, path: &Path) -> Result<T, IoError> {
        self.map_err(|source| IoError { op, path: path.to_path_buf(), source })
    }
}

/// Opening (and recovering) a log failed.
#[derive(Debug, Error)]
pub enum OpenError {
    #[error(transparent)]
    Io(#[from] IoError),
    /// Data that was flushed before the stop is damaged. The log refuses to open rather than
    /// silently drop acknowledged records.
    #[error("corrupt data in {} at byte {position}: {reason}", file.display())]
    Corrupt { file: PathBuf, position: u64, reason: String },
    #[error("invalid log config: {0}")]
    Config(String),
}

/// An append was refused. Nothing of the record set was written.
#[derive(Debug, Error)]
pub enum AppendError {
    #[error("invalid batch at byte {position} of the record set: {error}")]
    InvalidBatch { position: usize, error: BatchError },
    #[error("record set of {size} bytes is larger than max.message.bytes ({max})")]
    TooLarge { size: usize, max: u64 },
    /// A replicated append must continue exactly at the log end.
    #[error("replicated batches start at offset {first}, but the log ends at {log_end_offset}")]
    OffsetMismatch { first: i64, log_end_offset: i64 },
    #[error("leader epoch {epoch} is older than the log's latest epoch {latest}")]
    StaleLeaderEpoch { epoch: i32, latest: i32 },
    /// An idempotent producer's batch does not fit its sequence or epoch.
    #[error("idempotent producer {producer_id}: {error}")]
    Producer { producer_id: i64, error: crate::ProducerError },
    /// An earlier IO failure took the log offline; see the log's error for the cause.
    #[error("log is offline after an IO error: {0}")]
    Offline(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

impl AppendError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            AppendError::InvalidBatch { error, .. } => error.error_code(),
            AppendError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            AppendError::OffsetMismatch { .. } => ErrorCode::OffsetOutOfRange,
            AppendError::StaleLeaderEpoch { .. } => ErrorCode::FencedLeaderEpoch,
            AppendError::Producer { error, .. } => error.error_code(),
            AppendError::Offline(_) | AppendError::Io(_) => ErrorCode::KafkaStorageError,
        }
    }
}

/// A read was refused or failed.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error("offset {requested} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { requested: i64, log_start_offset: i64, log_end_offset: i64 },
    #[error("corrupt data in {} at byte {position}: {reason}", file.display())]
    Corrupt { file: PathBuf, position: u64, reason: String },
    #[error("log is offline after an IO error: {0}")]
    Offline(String),
    #[error(transparent)]
    Io(#[from] IoError),
}

impl ReadError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ReadError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            ReadError::Corrupt { .. } => ErrorCode::CorruptMessage,
            ReadError::Offline(_) | ReadError::Io(_) => ErrorCode::KafkaStorageError,
        }
    }
}

/// Flushing, truncating, deleting, checkpointing or closing failed.
#[derive(Debug, Error)]
pub enum LogError {
    #[error("log is offline after an IO error: {0}")]
    Offline(String),
    #[error("offset {requested} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange { requested: i64, log_start_offset: i64, log_end_offset: i64 },
    #[error(transparent)]
    Io(#[from] IoError),
}

impl LogError {
    pub fn error_code(&self) -> ErrorCode {
        match self {
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::Offline(_) | LogError::Io(_) => ErrorCode::KafkaStorageError,
        }
    }
}

impl From<LogError> for AppendError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Offline(m) => AppendError::Offline(m),
            LogError::Io(io) => AppendError::Io(io),
            LogError::OffsetOutOfRange { requested, log_end_offset, .. } => {
                AppendError::OffsetMismatch { first: requested, log_end_offset }
            }
        }
    }
}

impl From<AppendError> for keel_types::Refusal {
    fn from(error: AppendError) -> keel_types::Refusal {
        keel_types::Refusal::new(error.error_code(), error.to_string())
    }
}
