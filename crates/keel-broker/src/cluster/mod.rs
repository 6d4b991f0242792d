//! keel as a cluster member: the controller role (Raft + the active controller), the cluster
//! port, and the broker's registration, heartbeats and metadata replay.

pub mod client;
pub mod controller;
mod decide;
pub mod kafka_client;
pub mod lifecycle;
mod listener;
pub mod membership;
pub mod migrate;
pub mod protocol;
pub mod raft_store;
pub mod replica;
pub mod replication;
pub mod transport;

use std::path::{Path, PathBuf};
use std::time::Duration;

use keel_metadata::controller::ControllerConfig;
use keel_types::{BrokerEpoch, NodeId};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::error::{DiskError, NodeError};
use client::ControllerClient;
use lifecycle::{Registration, Replayed, Standing};
use protocol::Listener;

/// The file a clean shutdown leaves after the final flush, naming the broker epoch the broker
/// was registered with. At the next start the controller counts the start as clean only if
/// that is still the node's registered epoch (KIP-966).
const CLEAN_SHUTDOWN_MARKER: &str = "clean-shutdown";

/// A running cluster member.
#[derive(Debug)]
pub struct ClusterNode {
    pub node: NodeId,
    pub client: ControllerClient,
    pub replayed: watch::Receiver<Replayed>,
    pub standing: watch::Receiver<Standing>,
    want_shutdown: watch::Sender<bool>,
    data_dir: PathBuf,
    leave_membership: watch::Sender<bool>,
}

/// Reads and removes the clean-shutdown marker: the broker epoch it names, or `None` if there
/// is none (a crash, or an empty or replaced data directory) or it names none (the broker had
/// not registered, or the file is damaged). The removal is synced so that a crash in this run
/// is never mistaken for a clean stop.
pub fn take_clean_shutdown_marker(data_dir: &Path) -> Result<Option<BrokerEpoch>, DiskError> {
    let path = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DiskError::io("read", &path, e)),
    };
    std::fs::remove_file(&path).map_err(|e| DiskError::io("remove", &path, e))?;
    std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(|e| DiskError::io("sync", data_dir, e))?;
    let broker_epoch = text.trim().parse::<i64>().ok().filter(|&epoch| epoch >= 1).map(BrokerEpoch);
    if broker_epoch.is_none() && text.trim() != "-1" {
        tracing::warn!(path = %path.display(), ?text, "the clean-shutdown marker is damaged; starting as after a crash");
    }
    Ok(broker_epoch)
}

/// Writes the clean-shutdown marker, after everything was flushed and closed.
pub fn write_clean_shutdown_marker(data_dir: &Path, broker_epoch: Option<BrokerEpoch>) -> Result<(), DiskError> {
    let path = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    let text = format!("{}\n", broker_epoch.unwrap_or(BrokerEpoch::UNKNOWN));
    std::fs::write(&path, text)
        .and_then(|_| std::fs::File::open(&path)?.sync_all())
        .and_then(|_| std::fs::File::open(data_dir)?.sync_all())
        .map_err(|e| DiskError::io("write", &path, e))
}

/// What the broker's request handlers and replication need of the cluster.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub node: NodeId,
    pub client: ControllerClient,
    pub replayed: watch::Receiver<Replayed>,
    pub standing: watch::Receiver<Standing>,
    /// `replica.lag.time.max.ms`.
    pub replica_lag_time_max: keel_types::Duration,
}

impl ClusterNode {
    /// The link the broker side uses.
    pub fn link(&self, replica_lag_time_max: keel_types::Duration) -> ClusterLink {
        ClusterLink {
            node: self.node,
            client: self.client.clone(),
            replayed: self.replayed.clone(),
            standing: self.standing.clone(),
            replica_lag_time_max,
        }
    }

    /// Starts the controller role (if this node has it), the cluster port, metadata replay and
    /// the broker lifecycle, registering every Kafka listener in `config` (with its bound
    /// ports).
    pub async fn start(config: &BrokerConfig, shutdown: watch::Receiver<bool>) -> Result<ClusterNode, NodeError> {
        let node = NodeId(config.node_id);
        let listeners = config.kafka_listeners()?;
        let advertised = &listeners[0].advertised;
        let mut voters = config.controller_voters()?;
        let roles = config.roles()?;
        // The cluster port. Port 0 (a cluster of one in tests) is the port the OS chose.
        let cluster_listener = if roles.controller {
            let address = voters[&node];
            let listen_error = |source| NodeError::Listen { port: "cluster port", address, source };
            let listener = tokio::net::TcpListener::bind(address).await.map_err(listen_error)?;
            let bound = listener.local_addr().map_err(listen_error)?;
            voters.insert(node, bound);
            Some(listener)
        } else {
            None
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| DiskError::io("create", &config.data_dir, e))?;
        migrate::migrate_single_node_directory(config)?;
        // An empty data directory has no marker, so it counts as unclean: it may be a replaced
        // disk, and the replicas it held before are gone.
        let previous_broker_epoch = take_clean_shutdown_marker(&config.data_dir)?;
        // Membership gossips on the cluster port (UDP), or on the Kafka listener's address on
        // a broker-only node; every voter's cluster port is a seed.
        let (bind, gossip_address) = match voters.get(&node) {
            Some(address) if roles.controller => (*address, address.to_string()),
            _ => (config.listen, format!("{}:{}", advertised.0, advertised.1)),
        };
        let membership = membership::start(
            membership::MembershipConfig {
                node,
                bind,
                advertised: gossip_address,
                seeds: voters.values().map(|a| a.to_string()).collect(),
                probe_interval: keel_types::Duration::from_millis(config.membership_probe_interval_ms),
                suspicion_timeout: keel_types::Duration::from_millis(config.membership_suspicion_timeout_ms),
                data_dir: config.data_dir.clone(),
            },
            shutdown.clone(),
        )
        .await?;
        let local = if let Some(listener) = cluster_listener {
            let address = voters[&node];
            let store = raft_store::RaftStore::open(&config.data_dir.join(migrate::METADATA_DIR))?;
            let mut raft_config = keel_raft::Config::new(node, voters.keys().copied().collect());
            if let Some(r) = config.controller_replication_quorum {
                raft_config.replication_quorum = r;
            }
            if let Some(e) = config.controller_election_quorum {
                raft_config.election_quorum = e;
            }
            raft_config.election_timeout_min = keel_types::Duration::from_millis(config.controller_election_timeout_ms);
            raft_config.election_timeout_max =
                keel_types::Duration::from_millis(config.controller_election_timeout_ms.saturating_mul(2));
            let controller_config = ControllerConfig {
                session_timeout: keel_types::Duration::from_millis(config.broker_session_timeout_ms),
                default_partitions: config.topic_defaults.num_partitions,
                default_replication_factor: config.default_replication_factor,
                default_min_isr: config.min_insync_replicas.max(1) as usize,
                ..ControllerConfig::default()
            };
            let peers = voters.iter().filter(|(&id, _)| id != node).map(|(&id, &a)| (id, a)).collect();
            let view = Some(membership.view.clone());
            let handle = controller::start(
                raft_config,
                store,
                controller_config,
                config.controller_snapshot_entries,
                peers,
                view,
                shutdown.clone(),
            )?;
            tokio::spawn(listener::serve(listener, handle.clone(), shutdown.clone()));
            tracing::info!(%node, cluster_port = %address, voters = voters.len(), "controller role started");
            Some(handle)
        } else {
            None
        };
        let client = ControllerClient::new(node, local, &voters);
        let replayed = lifecycle::replay(client.clone(), shutdown.clone());
        let (want_shutdown, want_shutdown_rx) = watch::channel(false);
        let registration = Registration {
            node,
            listeners: listeners
                .into_iter()
                .map(|l| Listener { name: l.name().to_string(), host: l.advertised.0, port: l.advertised.1 })
                .collect(),
            rack: config.rack.clone(),
            previous_broker_epoch,
            process_id: uuid::Uuid::new_v4().as_u128(),
            incarnation: membership.incarnation.0,
            heartbeat_interval: Duration::from_millis(config.broker_heartbeat_interval_ms),
            // A controller node answers `keel cluster status` with its own view.
            membership: (!roles.controller).then_some(membership.view),
        };
        let standing = lifecycle::run(client.clone(), registration, replayed.clone(), want_shutdown_rx, shutdown);
        Ok(ClusterNode {
            node,
            client,
            replayed,
            standing,
            want_shutdown,
            data_dir: config.data_dir.clone(),
            leave_membership: membership.leave,
        })
    }

    /// Controlled shutdown: asks the controller to move leadership away and waits (at most
    /// `timeout`) until it agrees.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        let _ = self.want_shutdown.send(true);
        let mut standing = self.standing.clone();
        let agreed = tokio::time::timeout(timeout, standing.wait_for(|s| s.may_shut_down)).await;
        if agreed.is_err() {
            tracing::warn!("the controller did not confirm the controlled shutdown in time; stopping anyway");
        }
    }

    /// Leaves the membership gracefully: the others see this node Left rather than suspect it.
    /// Call once leadership has moved away (the controller fences a member that left).
    pub fn leave_membership(&self) {
        let _ = self.leave_membership.send(true);
    }

    /// After the final flush: leaves the clean-shutdown marker for the next start.
    pub fn mark_clean_shutdown(&self) -> Result<(), DiskError> {
        write_clean_shutdown_marker(&self.data_dir, self.standing.borrow().broker_epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_names_the_broker_epoch_and_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_clean_shutdown_marker(dir.path()).unwrap(), None, "an empty data directory is unclean");
        write_clean_shutdown_marker(dir.path(), Some(BrokerEpoch(7))).unwrap();
        assert_eq!(take_clean_shutdown_marker(dir.path()).unwrap(), Some(BrokerEpoch(7)));
        assert_eq!(take_clean_shutdown_marker(dir.path()).unwrap(), None, "taking the marker removes it");
        write_clean_shutdown_marker(dir.path(), None).unwrap();
        assert_eq!(take_clean_shutdown_marker(dir.path()).unwrap(), None, "a broker that never registered");
        for damaged in ["", "seven\n", "0\n", "-5\n"] {
            std::fs::write(dir.path().join(CLEAN_SHUTDOWN_MARKER), damaged).unwrap();
            assert_eq!(take_clean_shutdown_marker(dir.path()).unwrap(), None, "{damaged:?}");
            assert!(!dir.path().join(CLEAN_SHUTDOWN_MARKER).exists());
        }
    }
}
