//! The broker's side of the cluster: replay the metadata log, register, heartbeat, and shut
//! down under the controller's control.
//!
//! A broker registers with the broker epoch named by the marker its last clean shutdown wrote
//! after the final flush (the controller counts the start as clean only if that is the epoch
//! it is registered with), gets a new broker epoch, and stays fenced until it has replayed the
//! metadata log up to where it stood at registration. Heartbeats carry how far
//! it has replayed; a missed session gets it fenced, after which it simply heartbeats again.

use std::sync::Arc;
use std::time::Duration;

use keel_metadata::{MetadataDelta, MetadataImage, MetadataReplay};
use keel_types::{BrokerEpoch, ErrorCode, NodeId};
use tokio::sync::watch;

use super::client::ControllerClient;
use super::protocol::{view_entries, Listener, Request, Response};

/// How long a metadata fetch waits for new records.
const FETCH_WAIT: Duration = Duration::from_millis(1000);

/// The replayed metadata.
#[derive(Debug, Clone, Default)]
pub struct Replayed {
    pub index: u64,
    pub image: Arc<MetadataImage>,
}

/// Where this broker stands with the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    pub broker_epoch: Option<BrokerEpoch>,
    pub fenced: bool,
    /// The controller has moved everything away; the broker may stop.
    pub may_shut_down: bool,
}

#[derive(Debug, Clone)]
pub struct Registration {
    pub node: NodeId,
    pub listeners: Vec<Listener>,
    pub rack: Option<String>,
    /// The broker epoch the clean-shutdown marker named, if there was one.
    pub previous_broker_epoch: Option<BrokerEpoch>,
    /// Random, drawn once for this process (Kafka's incarnation id).
    pub process_id: u128,
    pub incarnation: u64,
    pub heartbeat_interval: Duration,
    /// A broker-only node's membership view, sent with every heartbeat for `keel cluster
    /// status` (such a node has no cluster port to ask).
    pub membership: Option<watch::Receiver<Vec<keel_gossip::Member>>>,
}

/// Starts metadata replay; returns its watch.
pub fn replay(client: ControllerClient, mut shutdown: watch::Receiver<bool>) -> watch::Receiver<Replayed> {
    let (sender, receiver) = watch::channel(Replayed::default());
    tokio::spawn(async move {
        // keel-metadata's replay, the one keel-sim's brokers run.
        let mut replay = MetadataReplay::default();
        loop {
            let fetched = tokio::select! {
                fetched = client.fetch_metadata(replay.index, FETCH_WAIT) => fetched,
                _ = shutdown.changed() => return,
            };
            match fetched {
                Ok(Response::Metadata { snapshot, records }) => {
                    match replay.apply(&MetadataDelta { snapshot, entries: records }) {
                        Ok(true) => {
                            let replayed = Replayed { index: replay.index, image: Arc::new(replay.image.clone()) };
                            sender.send_replace(replayed);
                        }
                        Ok(false) => {}
                        Err(error) => {
                            // Acting on an image other nodes do not have is worse than waiting.
                            tracing::error!(%error, "committed metadata cannot be decoded; fetching it again");
                            tokio::time::sleep(FETCH_WAIT).await;
                        }
                    }
                }
                Ok(other) => tracing::debug!(?other, "unexpected answer to a metadata fetch"),
                Err(error) => {
                    tracing::debug!(%error, "metadata fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    });
    receiver
}

/// Registers and heartbeats until shutdown. `want_shutdown` turning true starts a controlled
/// shutdown; the returned standing shows `may_shut_down` once the controller agrees.
pub fn run(
    client: ControllerClient,
    mut registration: Registration,
    replayed: watch::Receiver<Replayed>,
    want_shutdown: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> watch::Receiver<Standing> {
    let (sender, receiver) = watch::channel(Standing { broker_epoch: None, fenced: true, may_shut_down: false });
    tokio::spawn(async move {
        let mut broker_epoch: Option<BrokerEpoch> = None;
        // The metadata index of this broker's registration: once replayed, it is caught up.
        let mut registered_at = u64::MAX;
        let mut ticker = tokio::time::interval(registration.heartbeat_interval);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.changed() => return,
            }
            let Some(epoch) = broker_epoch else {
                let request = Request::RegisterBroker {
                    node: registration.node,
                    listeners: registration.listeners.clone(),
                    rack: registration.rack.clone(),
                    previous_broker_epoch: registration.previous_broker_epoch,
                    process_id: registration.process_id,
                    incarnation: registration.incarnation,
                };
                match client.call_active(request, registration.heartbeat_interval * 4).await {
                    Ok(Response::Registered { broker_epoch: epoch, metadata_index }) => {
                        registered_at = metadata_index;
                        tracing::info!(
                            node = %registration.node,
                            broker_epoch = %epoch,
                            previous_broker_epoch = ?registration.previous_broker_epoch,
                            "registered with the controller"
                        );
                        broker_epoch = Some(epoch);
                        // This process lost nothing since: a later registration (after this
                        // epoch went stale) names it, as a clean shutdown's marker would.
                        registration.previous_broker_epoch = Some(epoch);
                        sender.send_modify(|s| s.broker_epoch = Some(epoch));
                    }
                    Ok(other) => tracing::warn!(?other, "registration refused; retrying"),
                    Err(error) => tracing::debug!(%error, "cannot reach the controller to register; retrying"),
                }
                continue;
            };
            let metadata_index = replayed.borrow().index;
            let request = Request::Heartbeat {
                node: registration.node,
                broker_epoch: epoch,
                metadata_index,
                caught_up: metadata_index >= registered_at,
                want_shutdown: *want_shutdown.borrow(),
                membership: registration.membership.as_ref().map(|v| view_entries(&v.borrow())).unwrap_or_default(),
            };
            match client.call_active(request, registration.heartbeat_interval * 2).await {
                Ok(Response::Heartbeat { fenced, should_shut_down }) => {
                    let before = *sender.borrow();
                    if before.fenced != fenced {
                        tracing::info!(node = %registration.node, fenced, "broker fencing changed");
                    }
                    sender.send_replace(Standing { broker_epoch, fenced, may_shut_down: should_shut_down });
                }
                Ok(Response::Error { code, message }) if code == ErrorCode::StaleBrokerEpoch.code() => {
                    tracing::warn!(%message, "broker epoch is stale; registering again");
                    broker_epoch = None;
                    sender.send_replace(Standing { broker_epoch: None, fenced: true, may_shut_down: false });
                }
                Ok(other) => tracing::debug!(?other, "unexpected heartbeat answer"),
                Err(error) => tracing::debug!(%error, "heartbeat failed"),
            }
        }
    });
    receiver
}
