//! The controller role: a thin tokio driver over keel-metadata's [`QuorumController`], which
//! owns every decision (Raft, the applied image, the active controller, requests waiting for
//! their records to commit, compaction, the committed log brokers fetch). keel-sim drives the
//! same code.
//!
//! One task owns the quorum member and its disk store. Everything reaches it as an event (a
//! Raft message, a call, a tick) and every pass ends the same way: make the member's persists
//! durable, report them, send the messages that may now leave, and deliver its answers. A
//! call's answer waits for its records to commit, so a client never hears of a decision the
//! quorum could still lose.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use keel_metadata::{Answer, ControllerConfig, QuorumConfig, QuorumController};
use keel_raft::{Config as RaftConfig, Message};
use keel_types::{ErrorCode, NodeId, Rng};
use tokio::sync::{mpsc, oneshot, watch};

use super::protocol::{view_entries, ControllerStatus, Frame, Request, Response, ViewEntry};
use super::raft_store::RaftStore;
use super::transport::PeerSender;
use crate::clock::monotonic;
use crate::config::ConfigError;
use crate::error::NodeError;

/// How often the active controller checks broker sessions and preferred leaders.
const CONTROLLER_TICK: StdDuration = StdDuration::from_millis(100);

/// What the controller task receives.
#[derive(Debug)]
pub enum Event {
    Raft { from: NodeId, message: Message },
    Call { request: Request, reply: oneshot::Sender<Response> },
}

/// Handles to a running controller.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    pub events: mpsc::Sender<Event>,
    /// The last applied index, for long-polling metadata fetches.
    pub applied: watch::Receiver<u64>,
}

impl ControllerHandle {
    pub async fn call(&self, request: Request) -> Response {
        let (reply, answer) = oneshot::channel();
        if self.events.send(Event::Call { request, reply }).await.is_err() {
            return Response::NotController { leader: None };
        }
        answer.await.unwrap_or(Response::NotController { leader: None })
    }

    /// Committed metadata after `after`, waiting up to `max_wait` for something new.
    pub async fn fetch(&self, after: u64, max_wait: StdDuration) -> Response {
        let mut applied = self.applied.clone();
        let _ = tokio::time::timeout(max_wait, applied.wait_for(|&index| index > after)).await;
        self.call(Request::FetchMetadata { after, max_wait_ms: 0 }).await
    }
}

/// A call's reply channel: the token the quorum member answers with.
type Reply = oneshot::Sender<Response>;

#[derive(Debug)]
struct ControllerNode {
    quorum: QuorumController<Reply, Response>,
    store: RaftStore,
    rng: Rng,
    peers: BTreeMap<NodeId, PeerSender<Frame>>,
    /// This node's membership view (SWIM), if it runs membership.
    membership: Option<watch::Receiver<Vec<keel_gossip::Member>>>,
    /// The latest view each broker-only node sent with a heartbeat, and when.
    reported: BTreeMap<NodeId, (keel_types::Instant, Vec<ViewEntry>)>,
    applied: watch::Sender<u64>,
}

/// Starts the controller task. `peers` maps every other voter to its cluster address.
pub fn start(
    raft_config: RaftConfig,
    store: RaftStore,
    config: ControllerConfig,
    snapshot_entries: u64,
    peers: BTreeMap<NodeId, std::net::SocketAddr>,
    membership: Option<watch::Receiver<Vec<keel_gossip::Member>>>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ControllerHandle, NodeError> {
    let config = QuorumConfig { raft: raft_config, controller: config, snapshot_entries };
    config.validate().map_err(ConfigError::Quorum)?;
    let mut rng = Rng::new(seed());
    let quorum = QuorumController::restart(config, store.durable().clone(), monotonic(), &mut rng);
    let (events, mut inbox) = mpsc::channel(1024);
    let (applied, applied_rx) = watch::channel(quorum.raft().applied_index());
    let peers = peers.into_iter().map(|(id, address)| (id, PeerSender::start(address))).collect();
    let mut node = ControllerNode { quorum, store, rng, peers, membership, reported: BTreeMap::new(), applied };
    tokio::spawn(async move {
        let mut controller_tick = tokio::time::interval(CONTROLLER_TICK);
        loop {
            if let Err(error) = node.carry_out() {
                // Going on could break Raft's promises (a write that is not durable) or build
                // an image other members do not have (an entry that does not decode).
                tracing::error!(%error, "controller stopped");
                return;
            }
            let timeout = node.quorum.poll_timeout();
            let sleep = async {
                match timeout {
                    Some(at) => {
                        let wait = at.saturating_since(monotonic());
                        tokio::time::sleep(StdDuration::from_nanos(wait.0)).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                event = inbox.recv() => match event {
                    Some(event) => node.handle(event),
                    None => return,
                },
                _ = sleep => node.quorum.handle_timeout(monotonic(), &mut node.rng),
                _ = controller_tick.tick() => node.tick(),
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(ControllerHandle { events, applied: applied_rx })
}

/// Election timeouts are randomized; different nodes must draw different ones.
fn seed() -> u64 {
    let nanos = crate::clock::now_ms() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl ControllerNode {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Raft { from, message } => self.quorum.handle_message(monotonic(), &mut self.rng, from, message),
            Event::Call { request, reply } => self.call(request, reply),
        }
    }

    fn tick(&mut self) {
        // The membership layer's verdicts: a member it holds Dead (or Left) is fenced and stays
        // fenced until it is seen alive at a higher incarnation.
        let verdicts: Vec<(NodeId, u64, bool)> = match &self.membership {
            Some(view) => view.borrow().iter().map(|m| (m.id, m.incarnation.0, m.status.is_up())).collect(),
            None => Vec::new(),
        };
        for record in self.quorum.handle_controller_tick(monotonic(), verdicts) {
            tracing::info!(?record, "controller decided");
        }
    }

    fn call(&mut self, request: Request, reply: Reply) {
        match request {
            Request::Status => {
                let _ = reply.send(Response::Status(self.status()));
                return;
            }
            Request::FetchMetadata { after, .. } => {
                let delta = self.quorum.committed().after(after, usize::MAX);
                let _ = reply.send(Response::Metadata { snapshot: delta.snapshot, records: delta.entries });
                return;
            }
            _ => {}
        }
        let now = monotonic();
        if let Request::Heartbeat { node, membership, .. } = &request {
            if !membership.is_empty() && self.quorum.active().is_some() {
                self.reported.insert(*node, (now, membership.clone()));
            }
        }
        let rng = &mut self.rng;
        self.quorum.handle_request(now, reply, |controller| {
            match super::decide::decide(controller, now, rng, request) {
                Ok(decided) => decided,
                Err(error) => (Response::Error { code: error.code.code(), message: error.message }, Vec::new()),
            }
        });
    }

    /// Carries out the quorum member's effects until there are none left.
    fn carry_out(&mut self) -> Result<(), NodeError> {
        loop {
            let persists = self.quorum.drain_persists();
            if persists.is_empty() {
                break;
            }
            for persist in persists {
                tokio::task::block_in_place(|| self.store.persist(&persist))?;
                self.quorum.handle_persisted(monotonic(), persist.id);
            }
        }
        for (to, message) in self.quorum.drain_messages() {
            if let Some(peer) = self.peers.get(&to) {
                peer.send(Frame::Raft { from: self.quorum.raft().id(), to, message });
            }
        }
        for (reply, answer) in self.quorum.drain_answers() {
            let _ = reply.send(response(answer));
        }
        self.applied.send_if_modified(|applied| {
            let now = self.quorum.raft().applied_index();
            std::mem::replace(applied, now) != now
        });
        match self.quorum.failure() {
            Some(failure) => Err(NodeError::ControllerStopped(failure.to_string())),
            None => Ok(()),
        }
    }

    fn status(&self) -> ControllerStatus {
        let now = monotonic();
        let raft = self.quorum.raft();
        let config = raft.config();
        ControllerStatus {
            node: raft.id(),
            role: match raft.recovery() {
                keel_raft::Recovery::Trusted => format!("{:?}", raft.role()).to_lowercase(),
                keel_raft::Recovery::Probing => {
                    "recovering its lost Raft state: waiting for every other voter to answer".to_string()
                }
                keel_raft::Recovery::CatchingUp { last_log_index, .. } => {
                    format!("recovering its lost Raft state: catching up to index {last_log_index}")
                }
            },
            term: raft.term().0,
            leader: raft.leader(),
            commit_index: raft.commit_index(),
            applied_index: raft.applied_index(),
            voters: config.voters.clone(),
            replication_quorum: config.replication_quorum,
            election_quorum: config.election_quorum,
            image: self.quorum.image().encode(),
            membership: self.membership.as_ref().map(|view| view_entries(&view.borrow())).unwrap_or_default(),
            reported: self
                .reported
                .iter()
                .map(|(node, (at, view))| (*node, now.saturating_since(*at).as_millis(), view.clone()))
                .collect(),
        }
    }
}

/// What a caller hears: the decision (a registration learns the index its record committed
/// at, so the broker knows when it has replayed it), or where to go instead.
fn response(answer: Answer<Response>) -> Response {
    match answer {
        Answer::Decided { answer: Response::Registered { broker_epoch, .. }, committed_at } => {
            Response::Registered { broker_epoch, metadata_index: committed_at.unwrap_or(0) }
        }
        Answer::Decided { answer, .. } => answer,
        Answer::NotController { leader } => Response::NotController { leader },
        Answer::Busy => Response::Error {
            code: ErrorCode::RequestTimedOut.code(),
            message: "the controller is busy; retry".to_string(),
        },
    }
}
