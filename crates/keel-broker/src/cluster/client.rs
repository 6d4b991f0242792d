//! Calls to the active controller from anywhere in the cluster: in-process when this node is
//! a controller itself, over the cluster port otherwise, following "not controller" hints.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use keel_types::NodeId;

use super::controller::ControllerHandle;
use super::protocol::{Frame, Request, Response};
use super::transport::Caller;

/// How long one call to one controller may take (metadata fetches add their wait).
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
pub struct ControllerClient {
    me: NodeId,
    local: Option<ControllerHandle>,
    remotes: BTreeMap<NodeId, Caller>,
    /// The controller believed active.
    leader: Arc<Mutex<Option<NodeId>>>,
    /// Where the search for the active controller goes on when there is no hint: kept across
    /// calls, so a controller that does not answer is not asked first every time.
    cursor: Arc<std::sync::atomic::AtomicUsize>,
}

impl ControllerClient {
    pub fn new(me: NodeId, local: Option<ControllerHandle>, controllers: &BTreeMap<NodeId, SocketAddr>) -> Self {
        let remotes =
            controllers.iter().filter(|(&id, _)| id != me).map(|(&id, &address)| (id, Caller::new(address))).collect();
        ControllerClient {
            me,
            local,
            remotes,
            leader: Arc::new(Mutex::new(None)),
            cursor: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        }
    }

    fn voters(&self) -> Vec<NodeId> {
        let mut voters: Vec<NodeId> = self.remotes.keys().copied().collect();
        if self.local.is_some() {
            voters.push(self.me);
        }
        voters.sort();
        voters
    }

    /// Calls one controller.
    pub async fn call_node(&self, node: NodeId, request: Request, wait: Duration) -> Result<Response, String> {
        self.call_node_within(node, request, CALL_TIMEOUT + wait).await
    }

    /// Calls one controller, giving up after `timeout`.
    async fn call_node_within(&self, node: NodeId, request: Request, timeout: Duration) -> Result<Response, String> {
        if node == self.me {
            if let Some(local) = &self.local {
                return Ok(match request {
                    Request::FetchMetadata { after, max_wait_ms } => {
                        local.fetch(after, Duration::from_millis(u64::from(max_wait_ms))).await
                    }
                    request => local.call(request).await,
                });
            }
        }
        let caller = self.remotes.get(&node).ok_or_else(|| format!("node {node} is not a controller"))?;
        caller.call(&Frame::Request(request), timeout).await
    }

    /// Calls the active controller, trying each controller in turn and following hints, for
    /// at most `deadline`. Each attempt gets at most half of what is left (and at least a
    /// little), so a controller that hangs (a stopped process still accepts connections)
    /// leaves time to ask the next one. Errors say which controllers could not be reached.
    pub async fn call_active(&self, request: Request, deadline: Duration) -> Result<Response, String> {
        const ATTEMPT_MIN: Duration = Duration::from_millis(100);
        let give_up = tokio::time::Instant::now() + deadline;
        let voters = self.voters();
        let mut last_error = String::from("no controller answered");
        loop {
            let hinted = *self.leader.lock().expect("leader hint lock");
            let target = hinted.unwrap_or_else(|| {
                let next = self.cursor.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                voters[next % voters.len()]
            });
            let left = give_up.saturating_duration_since(tokio::time::Instant::now());
            let attempt = (left / 2).clamp(ATTEMPT_MIN, CALL_TIMEOUT);
            match self.call_node_within(target, request.clone(), attempt).await {
                Ok(Response::NotController { leader }) => {
                    let hint = leader.filter(|&l| l != target);
                    *self.leader.lock().expect("leader hint lock") = hint;
                    if hint.is_none() {
                        last_error = format!("controller {target} knows no active controller (election under way?)");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                Ok(response) => {
                    *self.leader.lock().expect("leader hint lock") = Some(target);
                    return Ok(response);
                }
                Err(error) => {
                    *self.leader.lock().expect("leader hint lock") = None;
                    last_error = error;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(last_error);
            }
        }
    }

    /// Any controller that answers a metadata fetch (committed metadata is the same
    /// everywhere, only more or less recent). Prefers this node's own controller.
    pub async fn fetch_metadata(&self, after: u64, max_wait: Duration) -> Result<Response, String> {
        let request = Request::FetchMetadata { after, max_wait_ms: max_wait.as_millis() as u32 };
        if self.local.is_some() {
            return self.call_node(self.me, request, max_wait).await;
        }
        let mut last_error = String::from("no controllers configured");
        for node in self.voters() {
            match self.call_node(node, request.clone(), max_wait).await {
                Ok(response) => return Ok(response),
                Err(error) => last_error = error,
            }
        }
        Err(last_error)
    }
}
