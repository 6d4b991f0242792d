//! Producer ids for idempotent producers: never handed out twice.
//!
//! - A cluster member hands out ids from blocks the active controller allocates through the
//!   metadata log (KIP-730; the rules are [`keel_metadata::producer_ids`]). It asks for the
//!   next block when 90% of the current one is used. With no id to hand out, InitProducerId
//!   waits up to [`BLOCK_WAIT`] for a block and then answers COORDINATOR_LOAD_IN_PROGRESS, which
//!   clients retry (as Kafka's brokers do). Nothing is kept on disk, so a replaced disk cannot
//!   make a node hand out an id again.
//! - A single node (no cluster) keeps the first id of its next block in the file
//!   `producer-ids` of its data directory, rewritten (atomically, synced) before any id of a
//!   new block is handed out, so a crash can skip ids but never repeat one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_metadata::{ProducerIdAllocator, ProducerIdBlock};
use keel_storage::backend::{write_atomically, FileBackend};
use keel_types::{ErrorCode, NodeId};
use tokio::sync::{watch, Notify};

use crate::clock::monotonic;
use crate::cluster::client::ControllerClient;
use crate::cluster::lifecycle::Standing;
use crate::cluster::protocol::{Request, Response};
use crate::cluster::ClusterLink;

const FILE_NAME: &str = "producer-ids";
/// How many ids a single node reserves at a time.
const LOCAL_BLOCK: i64 = 1000;
/// How long InitProducerId waits for a block from the controller before answering
/// COORDINATOR_LOAD_IN_PROGRESS.
pub const BLOCK_WAIT: Duration = Duration::from_secs(2);
/// How long one request for a block may take (it goes on after InitProducerId gave up; the
/// block is kept for the next producer).
const BLOCK_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed request for a block, no new one before this.
const BLOCK_REQUEST_BACKOFF: keel_types::Duration = keel_types::Duration(200_000_000);

/// Why no producer id could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// A single node could not write its reservation.
    #[error("cannot reserve producer ids in {path}: {message}")]
    Storage { path: PathBuf, message: String },
    /// A cluster member has no block and got none from the controller in time.
    #[error("no producer-id block from the controller within {} ms; clients retry", BLOCK_WAIT.as_millis())]
    NoBlock,
}

impl ProducerIdError {
    /// The error code InitProducerId answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProducerIdError::Storage { .. } => ErrorCode::KafkaStorageError,
            ProducerIdError::NoBlock => ErrorCode::CoordinatorLoadInProgress,
        }
    }
}

/// Where a broker's producer ids come from.
#[derive(Debug)]
pub enum ProducerIds {
    /// A single node: a reservation in its data directory.
    Local(LocalProducerIds),
    /// A cluster member: blocks from the active controller.
    Cluster(Arc<ClusterProducerIds>),
}

impl ProducerIds {
    /// A single node's ids, reserved in `data_dir`.
    pub fn open_local(data_dir: &Path) -> Result<ProducerIds, String> {
        LocalProducerIds::open(data_dir).map(ProducerIds::Local)
    }

    /// A cluster member's ids, in blocks from the active controller.
    pub fn for_cluster(link: &ClusterLink) -> ProducerIds {
        ProducerIds::Cluster(Arc::new(ClusterProducerIds::new(link.node, link.client.clone(), link.standing.clone())))
    }

    /// A producer id no producer has had.
    pub async fn next(&self) -> Result<i64, ProducerIdError> {
        match self {
            ProducerIds::Local(local) => local.next(),
            ProducerIds::Cluster(cluster) => cluster.next().await,
        }
    }
}

/// A single node's ids: unique for the life of the data directory.
#[derive(Debug)]
pub struct LocalProducerIds {
    path: PathBuf,
    /// (next id to hand out, end of the reserved block).
    range: Mutex<(i64, i64)>,
}

impl LocalProducerIds {
    pub fn open(data_dir: &Path) -> Result<LocalProducerIds, String> {
        let path = data_dir.join(FILE_NAME);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|_| format!("{} is damaged: {text:?}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Ok(LocalProducerIds { path, range: Mutex::new((next, next)) })
    }

    pub fn next(&self) -> Result<i64, ProducerIdError> {
        let mut range = self.range.lock().unwrap_or_else(|p| p.into_inner());
        if range.0 == range.1 {
            let end = range.1 + LOCAL_BLOCK;
            write_atomically(&FileBackend, &self.path, end.to_string().as_bytes())
                .map_err(|e| ProducerIdError::Storage { path: self.path.clone(), message: e.to_string() })?;
            range.1 = end;
        }
        let id = range.0;
        range.0 += 1;
        Ok(id)
    }
}

/// A cluster member's ids: a [`ProducerIdAllocator`] driven with requests to the active
/// controller.
#[derive(Debug)]
pub struct ClusterProducerIds {
    node: NodeId,
    client: ControllerClient,
    /// The broker epoch a request names: the controller refuses other processes' requests.
    standing: watch::Receiver<Standing>,
    allocator: Mutex<ProducerIdAllocator>,
    /// Woken whenever a request for a block ends, with a block or without.
    request_ended: Notify,
}

impl ClusterProducerIds {
    pub fn new(node: NodeId, client: ControllerClient, standing: watch::Receiver<Standing>) -> ClusterProducerIds {
        ClusterProducerIds {
            node,
            client,
            standing,
            allocator: Mutex::new(ProducerIdAllocator::new()),
            request_ended: Notify::new(),
        }
    }

    /// The next id of this broker's block, asking the controller for a block when the
    /// allocator says so; waits at most [`BLOCK_WAIT`] for one.
    pub async fn next(self: &Arc<Self>) -> Result<i64, ProducerIdError> {
        let give_up = tokio::time::Instant::now() + BLOCK_WAIT;
        loop {
            // Registered before looking, so a request that ends in between still wakes us.
            let request_ended = self.request_ended.notified();
            tokio::pin!(request_ended);
            request_ended.as_mut().enable();
            let id = {
                let mut allocator = self.allocator.lock().expect("producer id allocator lock");
                let id = allocator.next_id();
                if allocator.poll_request(monotonic()) {
                    self.spawn_request();
                }
                id
            };
            if let Some(id) = id {
                return Ok(id);
            }
            if tokio::time::timeout_at(give_up, request_ended).await.is_err() {
                return Err(ProducerIdError::NoBlock);
            }
        }
    }

    /// Asks the active controller for a block and reports the outcome to the allocator.
    fn spawn_request(self: &Arc<Self>) {
        let this = self.clone();
        tokio::spawn(async move {
            let outcome = this.request_block().await;
            {
                let mut allocator = this.allocator.lock().expect("producer id allocator lock");
                match outcome {
                    Ok(block) => {
                        tracing::info!(first = block.first, size = block.size, "producer-id block allocated");
                        allocator.handle_block(block);
                    }
                    Err(error) => {
                        tracing::warn!(%error, "no producer-id block from the controller; asking again shortly");
                        allocator.handle_request_failed(monotonic(), BLOCK_REQUEST_BACKOFF);
                    }
                }
            }
            this.request_ended.notify_waiters();
        });
    }

    async fn request_block(&self) -> Result<ProducerIdBlock, String> {
        let Some(broker_epoch) = self.standing.borrow().broker_epoch else {
            return Err("this broker has not registered with the controller yet".to_string());
        };
        let request = Request::AllocateProducerIds { node: self.node, broker_epoch };
        match self.client.call_active(request, BLOCK_REQUEST_TIMEOUT).await? {
            Response::ProducerIds { block } => Ok(block),
            Response::Error { code, message } => Err(format!("the controller refused (error {code}): {message}")),
            other => Err(format!("unexpected answer from the controller: {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_nodes_ids_are_unique_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let ids = LocalProducerIds::open(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| ids.next().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        drop(ids);
        let ids = LocalProducerIds::open(dir.path()).unwrap();
        assert_eq!(ids.next().unwrap(), LOCAL_BLOCK, "a reopened broker starts past the reserved block");
    }

    #[test]
    fn errors_map_to_retriable_or_storage_codes() {
        assert_eq!(ProducerIdError::NoBlock.code(), ErrorCode::CoordinatorLoadInProgress);
        assert!(ErrorCode::CoordinatorLoadInProgress.is_retriable());
        let storage = ProducerIdError::Storage { path: PathBuf::from("/x"), message: "full".into() };
        assert_eq!(storage.code(), ErrorCode::KafkaStorageError);
    }
}
