//! Why a node cannot start, stop, or keep a file: errors for people (the operator reads them
//! on stderr), each saying what failed, where, and what to do when there is something to do.
//! Requests a client sent are refused with a [`keel_types::Refusal`] instead.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keel_types::Refusal;

use crate::config::ConfigError;

/// A file or directory keel could not use.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is there but does not hold what keel wrote (a CRC, a format, a number).
    #[error("{} is damaged: {reason}", path.display())]
    Damaged { path: PathBuf, reason: String },
    /// The file is intact but this keel will not use it; `advice` says what to do.
    #[error("{}: {advice}", path.display())]
    Refused { path: PathBuf, advice: String },
}

impl DiskError {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> DiskError {
        DiskError::Io { action, path: path.to_path_buf(), source }
    }

    pub fn damaged(path: &Path, reason: impl Into<String>) -> DiskError {
        DiskError::Damaged { path: path.to_path_buf(), reason: reason.into() }
    }

    pub fn refused(path: &Path, advice: impl Into<String>) -> DiskError {
        DiskError::Refused { path: path.to_path_buf(), advice: advice.into() }
    }
}

/// Why a node could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot listen on the {port} {address}: {source} (is another broker or keel node using it?)")]
    Listen {
        port: &'static str,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error("cannot open topic {topic}: {refusal}")]
    Topic { topic: String, refusal: Refusal },
    #[error("some partition logs did not close cleanly: {}", failures.join("; "))]
    LogsNotClosed { failures: Vec<String> },
    /// The controller role cannot go on without breaking Raft's promises.
    #[error("the controller role stopped: {0}")]
    ControllerStopped(String),
    #[error("a start-up or shutdown task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
