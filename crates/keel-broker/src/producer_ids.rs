//! Producer ids for idempotent producers: never handed out twice.
//!
//! A node hands out ids from blocks the active controller allocates through the metadata log
//! (KIP-730; the rules are [`keel_metadata::producer_ids`]). It asks for the next block when
//! 90% of the current one is used. With no id to hand out, InitProducerId waits up to
//! [`BLOCK_WAIT`] for a block and then answers COORDINATOR_LOAD_IN_PROGRESS, which clients
//! retry (as Kafka's brokers do). Nothing is kept on disk, so a replaced disk cannot make a
//! node hand out an id again. (keel's single node before it became a cluster of one kept the
//! next id in `producer-ids`; [`legacy_next_producer_id`] reads it when such a data directory
//! is migrated.)

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_metadata::{ProducerIdAllocator, ProducerIdBlock};
use keel_types::{ErrorCode, NodeId};
use tokio::sync::{watch, Notify};

use crate::clock::monotonic;
use crate::cluster::client::ControllerClient;
use crate::cluster::lifecycle::Standing;
use crate::cluster::protocol::{Request, Response};
use crate::cluster::ClusterLink;
use crate::error::DiskError;

/// The file keel's single node kept its next producer id in.
const LEGACY_FILE_NAME: &str = "producer-ids";
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
    /// No block, and none from the controller in time.
    #[error("no producer-id block from the controller within {} ms; clients retry", BLOCK_WAIT.as_millis())]
    NoBlock,
}

impl ProducerIdError {
    /// The error code InitProducerId answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            ProducerIdError::NoBlock => ErrorCode::CoordinatorLoadInProgress,
        }
    }
}

/// Where a broker's producer ids come from: blocks from the active controller.
#[derive(Debug)]
pub struct ProducerIds(Arc<ClusterProducerIds>);

impl ProducerIds {
    pub fn new(link: &ClusterLink) -> ProducerIds {
        ProducerIds(Arc::new(ClusterProducerIds::new(link.node, link.client.clone(), link.standing.clone())))
    }

    /// A producer id no producer has had.
    pub async fn next(&self) -> Result<i64, ProducerIdError> {
        self.0.next().await
    }
}

/// The first id keel's single node had not handed out, from a data directory it wrote
/// (`None`: there is no such file).
pub fn legacy_next_producer_id(data_dir: &Path) -> Result<Option<i64>, DiskError> {
    let path = data_dir.join(LEGACY_FILE_NAME);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            text.trim().parse::<i64>().map(Some).map_err(|_| DiskError::damaged(&path, format!("{text:?} is no id")))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DiskError::io("read", &path, e)),
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
    fn a_legacy_reservation_is_read_and_a_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(legacy_next_producer_id(dir.path()).unwrap(), None);
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), "2000").unwrap();
        assert_eq!(legacy_next_producer_id(dir.path()).unwrap(), Some(2000));
        std::fs::write(dir.path().join(LEGACY_FILE_NAME), "x").unwrap();
        assert!(legacy_next_producer_id(dir.path()).unwrap_err().to_string().contains("damaged"));
    }

    #[test]
    fn no_block_is_retriable() {
        assert_eq!(ProducerIdError::NoBlock.code(), ErrorCode::CoordinatorLoadInProgress);
        assert!(ErrorCode::CoordinatorLoadInProgress.is_retriable());
    }
}
