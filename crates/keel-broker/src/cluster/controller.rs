//! The controller role: keel-raft carrying the metadata log, and, on the Raft leader, the
//! active controller (keel-metadata) deciding by appending records.
//!
//! One task owns the Raft core, its disk store and the controller. Everything reaches it as an
//! event (a Raft message, a call, a tick) and every pass ends the same way: make the core's
//! persists durable, report them, send the messages that may now leave, apply what committed,
//! and answer the calls whose records committed. A call's answer waits for its records to
//! commit, so a client never hears of a decision the quorum could still lose.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use keel_metadata::{Controller, ControllerConfig, MetadataImage, MetadataRecord};
use keel_raft::{Apply, Config as RaftConfig, LogIndex, Message, Payload, ProposeError, Raft, RoleKind, Term};
use keel_types::{ErrorCode, NodeId, Rng};
use tokio::sync::{mpsc, oneshot, watch};

use super::protocol::{view_entries, ControllerStatus, Frame, Request, Response, ViewEntry};
use super::raft_store::RaftStore;
use super::transport::PeerSender;
use crate::clock::monotonic;

/// How often the active controller checks broker sessions and preferred leaders.
const CONTROLLER_TICK: StdDuration = StdDuration::from_millis(100);

/// What the controller task receives.
#[derive(Debug)]
pub enum Event {
    Raft { from: NodeId, message: Message },
    Call { request: Request, reply: oneshot::Sender<Response> },
}

/// The committed metadata, shared with the callers that fetch it.
#[derive(Debug, Default)]
pub struct CommittedLog {
    /// The image at `snapshot_index` (encoded), the base of `entries`.
    pub snapshot_index: u64,
    pub snapshot: Vec<u8>,
    /// Applied entries after the snapshot: (index, encoded records).
    pub entries: Vec<(u64, Vec<u8>)>,
}

impl CommittedLog {
    /// What a metadata fetch after `after` gets.
    pub fn after(&self, after: u64) -> Response {
        let snapshot = (after < self.snapshot_index && self.snapshot_index > 0)
            .then(|| (self.snapshot_index, self.snapshot.clone()));
        let from = if snapshot.is_some() { self.snapshot_index } else { after };
        let records = self.entries.iter().filter(|(index, _)| *index > from).cloned().collect();
        Response::Metadata { snapshot, records }
    }
}

/// Handles to a running controller.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    pub events: mpsc::Sender<Event>,
    pub committed: Arc<Mutex<CommittedLog>>,
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
        self.committed.lock().expect("committed log lock").after(after)
    }
}

/// A call waiting for its records to commit.
#[derive(Debug)]
struct Waiter {
    term: Term,
    reply: oneshot::Sender<Response>,
    answer: Response,
}

#[derive(Debug)]
struct ControllerNode {
    raft: Raft,
    store: RaftStore,
    rng: Rng,
    peers: BTreeMap<NodeId, PeerSender<Frame>>,
    /// The image of every applied entry.
    image: MetadataImage,
    config: ControllerConfig,
    /// Compact the Raft log into a snapshot after this many applied entries.
    snapshot_entries: u64,
    /// Present while this node is the active controller (leader, caught up with its term).
    active: Option<Controller>,
    /// When each other voter last sent this node a Raft message.
    heard: BTreeMap<NodeId, keel_types::Instant>,
    /// This node's membership view (SWIM), if it runs membership.
    membership: Option<watch::Receiver<Vec<keel_gossip::Member>>>,
    /// The latest view each broker-only node sent with a heartbeat, and when.
    reported: BTreeMap<NodeId, (keel_types::Instant, Vec<ViewEntry>)>,
    waiters: BTreeMap<LogIndex, Waiter>,
    committed: Arc<Mutex<CommittedLog>>,
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
) -> Result<ControllerHandle, String> {
    raft_config.validate().map_err(|e| e.to_string())?;
    assert!(snapshot_entries >= 1, "the broker config validates controller_snapshot_entries");
    let now = monotonic();
    let mut rng = Rng::new(seed());
    let raft = Raft::restart(raft_config, store.durable().clone(), now, &mut rng);
    let (events, mut inbox) = mpsc::channel(1024);
    let (applied, applied_rx) = watch::channel(0);
    let committed = Arc::new(Mutex::new(CommittedLog::default()));
    let peers = peers.into_iter().map(|(id, address)| (id, PeerSender::start(address))).collect();
    let mut node = ControllerNode {
        raft,
        store,
        rng,
        peers,
        image: MetadataImage::default(),
        config,
        snapshot_entries,
        active: None,
        heard: BTreeMap::new(),
        membership,
        reported: BTreeMap::new(),
        waiters: BTreeMap::new(),
        committed: committed.clone(),
        applied,
    };
    tokio::spawn(async move {
        let mut controller_tick = tokio::time::interval(CONTROLLER_TICK);
        loop {
            if let Err(error) = node.settle() {
                // The Raft state cannot be made durable: going on could break Raft's promises.
                tracing::error!(%error, "controller stopped: cannot persist Raft state");
                return;
            }
            let timeout = node.raft.poll_timeout();
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
                _ = sleep => node.raft.handle_tick(monotonic(), &mut node.rng),
                _ = controller_tick.tick() => node.tick(),
                _ = shutdown.changed() => return,
            }
        }
    });
    Ok(ControllerHandle { events, committed, applied: applied_rx })
}

/// Election timeouts are randomized; different nodes must draw different ones.
fn seed() -> u64 {
    let nanos = crate::clock::now_ms() as u64;
    nanos ^ (u64::from(std::process::id()) << 32)
}

impl ControllerNode {
    fn handle(&mut self, event: Event) {
        match event {
            Event::Raft { from, message } => {
                let now = monotonic();
                self.heard.insert(from, now);
                self.raft.handle_message(now, &mut self.rng, from, message)
            }
            Event::Call { request, reply } => self.call(request, reply),
        }
    }

    fn tick(&mut self) {
        let now = monotonic();
        if let Some(controller) = self.active.as_mut() {
            let mut records = Vec::new();
            // The membership layer's verdicts: a member it holds Dead (or Left) is fenced and
            // stays fenced until it is seen alive at a higher incarnation.
            if let Some(view) = &self.membership {
                for member in view.borrow().iter() {
                    let alive = member.status.is_up();
                    records.extend(controller.handle_membership(member.id, member.incarnation.0, alive).records);
                }
            }
            records.extend(controller.tick(now));
            for record in &records {
                tracing::info!(?record, "controller decided");
            }
            if !records.is_empty() {
                let _ = self.propose(records);
            }
        }
    }

    fn call(&mut self, request: Request, reply: oneshot::Sender<Response>) {
        match request {
            Request::Status => {
                let _ = reply.send(Response::Status(self.status()));
                return;
            }
            Request::FetchMetadata { after, .. } => {
                let _ = reply.send(self.committed.lock().expect("committed log lock").after(after));
                return;
            }
            _ => {}
        }
        let Some(controller) = self.active.as_mut() else {
            let _ = reply.send(Response::NotController { leader: self.raft.leader() });
            return;
        };
        let now = monotonic();
        if let Request::Heartbeat { node, membership, .. } = &request {
            if !membership.is_empty() {
                self.reported.insert(*node, (now, membership.clone()));
            }
        }
        let decided = super::decide::decide(controller, now, &mut self.rng, request);
        match decided {
            Ok((answer, records)) if records.is_empty() => {
                let _ = reply.send(answer);
            }
            Ok((answer, records)) => match self.propose(records) {
                Ok(index) => {
                    self.waiters.insert(index, Waiter { term: self.raft.term(), reply, answer });
                }
                Err(response) => {
                    let _ = reply.send(*response);
                }
            },
            Err(error) => {
                let _ = reply.send(Response::Error { code: error.code.code(), message: error.message });
            }
        }
    }

    /// Appends records the active controller decided (already applied to its working image).
    fn propose(&mut self, records: Vec<MetadataRecord>) -> Result<LogIndex, Box<Response>> {
        let command = MetadataRecord::encode_batch(&records);
        match self.raft.propose(monotonic(), command) {
            Ok(index) => Ok(index),
            Err(error) => {
                // The working image already holds the records: start over from the committed one.
                self.deactivate();
                Err(Box::new(match error {
                    ProposeError::NotLeader { leader } => Response::NotController { leader },
                    ProposeError::Busy => Response::Error {
                        code: ErrorCode::RequestTimedOut.code(),
                        message: "the controller is busy; retry".to_string(),
                    },
                }))
            }
        }
    }

    fn deactivate(&mut self) {
        self.active = None;
        for (_, waiter) in std::mem::take(&mut self.waiters) {
            let _ = waiter.reply.send(Response::NotController { leader: self.raft.leader() });
        }
    }

    /// Carries out the core's effects until there are none left.
    fn settle(&mut self) -> Result<(), String> {
        loop {
            let persists = self.raft.drain_persists();
            let progressed = !persists.is_empty();
            for persist in persists {
                tokio::task::block_in_place(|| self.store.persist(&persist))?;
                self.raft.handle_persisted(monotonic(), persist.id);
            }
            for (to, message) in self.raft.drain_messages() {
                if let Some(peer) = self.peers.get(&to) {
                    peer.send(Frame::Raft { from: self.raft.id(), to, message });
                }
            }
            let applied = self.apply()?;
            if !progressed && !applied {
                break;
            }
        }
        self.update_role();
        Ok(())
    }

    fn apply(&mut self) -> Result<bool, String> {
        let mut any = false;
        while let Some(apply) = self.raft.poll_apply() {
            any = true;
            match apply {
                Apply::Snapshot(snapshot) => {
                    self.image = MetadataImage::decode(&snapshot.data)?;
                    {
                        let mut committed = self.committed.lock().expect("committed log lock");
                        committed.snapshot_index = snapshot.index;
                        committed.snapshot = snapshot.data;
                        committed.entries.clear();
                    }
                    self.fail_waiters_up_to(snapshot.index);
                    if let Some(controller) = self.active.as_mut() {
                        controller.reset(self.image.clone(), monotonic());
                    }
                }
                Apply::Entry(entry) => {
                    if let Payload::Command(command) = &entry.payload {
                        let records = MetadataRecord::decode_batch(command)
                            .map_err(|e| format!("metadata entry {} cannot be decoded: {e}", entry.index))?;
                        for record in &records {
                            self.image.apply(record);
                            if let Some(controller) = self.active.as_mut() {
                                controller.handle_committed(record);
                            }
                        }
                        self.committed.lock().expect("committed log lock").entries.push((entry.index, command.clone()));
                    }
                    if let Some(waiter) = self.waiters.remove(&entry.index) {
                        let answer = if waiter.term == entry.term {
                            match waiter.answer {
                                Response::Registered { broker_epoch, .. } => {
                                    Response::Registered { broker_epoch, metadata_index: entry.index }
                                }
                                answer => answer,
                            }
                        } else {
                            Response::NotController { leader: self.raft.leader() }
                        };
                        let _ = waiter.reply.send(answer);
                    }
                }
            }
        }
        if any {
            let applied = self.raft.applied_index();
            self.applied.send_replace(applied);
            self.maybe_compact(applied);
        }
        Ok(any)
    }

    fn fail_waiters_up_to(&mut self, index: LogIndex) {
        let later = self.waiters.split_off(&(index + 1));
        for (_, waiter) in std::mem::replace(&mut self.waiters, later) {
            let _ = waiter.reply.send(Response::NotController { leader: self.raft.leader() });
        }
    }

    fn maybe_compact(&mut self, applied: u64) {
        let base = self.raft.snapshot().map_or(0, |s| s.index);
        if applied.saturating_sub(base) < self.snapshot_entries {
            return;
        }
        let data = self.image.encode();
        self.raft.compact(applied, data.clone());
        let mut committed = self.committed.lock().expect("committed log lock");
        committed.snapshot_index = applied;
        committed.snapshot = data;
        committed.entries.retain(|(index, _)| *index > applied);
    }

    /// Becomes the active controller once leader and caught up with everything before its
    /// term (its no-op committed and applied); stops being it on losing leadership.
    fn update_role(&mut self) {
        let leading = self.raft.role() == RoleKind::Leader;
        if !leading {
            if self.active.is_some() || !self.waiters.is_empty() {
                self.deactivate();
            }
            return;
        }
        let caught_up = self.raft.applied_index() == self.raft.last_index()
            && self.raft.term_at(self.raft.last_index()) == Some(self.raft.term());
        if self.active.is_none() && caught_up {
            tracing::info!(node = %self.raft.id(), term = %self.raft.term(), "this node is the active controller");
            let mut controller = Controller::new(self.config.clone(), self.image.clone(), monotonic());
            // In combined mode a voter's Raft messages show its process alive; one that went
            // silent (typically with the previous active controller) is fenced a session after
            // it did, not a whole session after this election.
            for (&node, &at) in &self.heard {
                controller.handle_last_contact(node, at);
            }
            self.active = Some(controller);
        }
    }

    fn status(&self) -> ControllerStatus {
        let now = monotonic();
        let config = self.raft.config();
        ControllerStatus {
            node: self.raft.id(),
            role: format!("{:?}", self.raft.role()).to_lowercase(),
            term: self.raft.term().0,
            leader: self.raft.leader(),
            commit_index: self.raft.commit_index(),
            applied_index: self.raft.applied_index(),
            voters: config.voters.clone(),
            replication_quorum: config.replication_quorum,
            election_quorum: config.election_quorum,
            image: self.image.encode(),
            membership: self.membership.as_ref().map(|view| view_entries(&view.borrow())).unwrap_or_default(),
            reported: self
                .reported
                .iter()
                .map(|(node, (at, view))| (*node, now.saturating_since(*at).as_millis(), view.clone()))
                .collect(),
        }
    }
}
