//! keel's broker shell: the tokio program around the pure parts. It owns sockets, the wall
//! clock, topics and their partition logs, and the meaning of each Kafka request. A single
//! node is a cluster of one: one request path.
//!
//! It must stay thin: protocol bytes are `keel-kafka`'s, durability is `keel-storage`'s. What
//! is here is wiring, request semantics, and lifecycle (start, serve, drain, clean close).

mod api;
pub mod broker;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod error;
pub mod groups;
pub mod producer_ids;
pub mod server;
pub mod topics;

pub use broker::Broker;
pub use config::{BrokerConfig, ConfigError, TopicDefaults};
pub use error::{DiskError, NodeError};

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

/// How long a single node waits to be registered with its own controller before it takes
/// Kafka connections anyway (it answers LEADER_NOT_AVAILABLE, retriable, until then).
const SINGLE_NODE_READY_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A running keel node: the controller role when this node has it, registration, heartbeats,
/// metadata replay, the local replicas and their replication, and the Kafka listener. `keel
/// serve` with no `controllers` is a cluster of one (this node the only voter, as Kafka's
/// combined mode and Redpanda's one-member group); with `--node-id N --controllers ...` a
/// member of a larger cluster. What `keel serve` and the tests start.
#[derive(Debug)]
pub struct RunningNode {
    pub node: cluster::ClusterNode,
    pub broker: Arc<Broker>,
    /// Where the first Kafka listener is bound.
    pub local_addr: std::net::SocketAddr,
    /// Where each Kafka listener is bound, by name (`PLAINTEXT`, `SASL_PLAINTEXT`).
    pub listener_addrs: Vec<(&'static str, std::net::SocketAddr)>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    pub async fn start(config: BrokerConfig) -> Result<RunningNode, NodeError> {
        config.validate()?;
        let mut config = config;
        let voters = config.controller_voters()?.len();
        let single = config.is_single_node();
        config.topic_defaults = config.topic_defaults.clone().for_voters(voters);
        let mut bound = Vec::new();
        for listener in config.kafka_listeners()? {
            let listen_error = |source| NodeError::Listen { port: "Kafka listener", address: listener.bind, source };
            let socket = TcpListener::bind(listener.bind).await.map_err(listen_error)?;
            let address = socket.local_addr().map_err(listen_error)?;
            bound.push((listener, socket, address));
        }
        // Port 0 (in tests) is the port the OS chose: the config names it from now on.
        let local_addr = bound[0].2;
        config.listen = local_addr;
        if !config.listeners.is_empty() {
            config.listeners = bound.iter().map(|(l, _, address)| format!("{}://{address}", l.name())).collect();
            config.advertised_listeners = bound
                .iter()
                .map(|(l, _, address)| {
                    let (host, port) = &l.advertised;
                    format!("{}://{host}:{}", l.name(), if *port == 0 { address.port() } else { *port })
                })
                .collect();
        }
        let listener_addrs = bound.iter().map(|(l, _, address)| (l.name(), *address)).collect();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let node = cluster::ClusterNode::start(&config, shutdown_rx.clone()).await?;
        let link = node.link(keel_types::Duration::from_millis(config.replica_lag_time_max_ms));
        let broker_link = link.clone();
        let broker = tokio::task::spawn_blocking(move || Broker::open(config, broker_link, shutdown_rx)).await??;
        let broker = Arc::new(broker);
        let mut tasks = vec![
            tokio::spawn(cluster::replication::run(broker.clone(), link, shutdown.subscribe())),
            tokio::spawn(server::maintenance(broker.clone(), shutdown.subscribe())),
        ];
        let mut running = RunningNode { node, broker, local_addr, listener_addrs, shutdown, tasks: Vec::new() };
        if let Some(spec) = running.broker.config.bootstrap_user.clone() {
            let broker = running.broker.clone();
            let create = async move {
                // Once this node has replayed its registration, it sees any user that exists.
                Broker::caught_up(&broker.cluster).await;
                match broker.create_bootstrap_user(&spec).await {
                    Ok(true) => tracing::info!("created the bootstrap user's SCRAM credentials"),
                    Ok(false) => tracing::info!("users exist already: KEEL_BOOTSTRAP_USER is not used"),
                    Err(refusal) => tracing::error!(%refusal, "cannot create the bootstrap user"),
                }
            };
            // A cluster of one creates it before clients connect; a cluster member meanwhile.
            if single {
                create.await;
            } else {
                tokio::spawn(create);
            }
        }
        // A cluster of one has no other broker a client could ask meanwhile: it takes Kafka
        // connections (held in the listen backlog until then) once it serves every request.
        if single && !running.wait_ready(SINGLE_NODE_READY_WAIT).await {
            tracing::warn!(
                wait = ?SINGLE_NODE_READY_WAIT,
                "not registered with its own controller yet; serving Kafka clients anyway"
            );
        }
        for (listener, socket, _) in bound {
            let shutdown = running.shutdown.subscribe();
            tasks.push(tokio::spawn(server::serve(running.broker.clone(), socket, listener.protocol, shutdown)));
        }
        running.tasks = tasks;
        Ok(running)
    }

    /// Waits until this node is registered, unfenced and has replayed the metadata log up to
    /// its registration: on a cluster of one, the moment it serves every request. `false`
    /// after `timeout`.
    pub async fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let (replayed, standing) = (&self.node.replayed, &self.node.standing);
        let ready = || {
            let standing = standing.borrow();
            !standing.fenced
                && keel_replication::may_act_on(&replayed.borrow().image, self.node.node, standing.broker_epoch)
        };
        let (mut replayed_changes, mut standing_changes) = (replayed.clone(), standing.clone());
        let wait = async {
            while !ready() {
                tokio::select! {
                    changed = replayed_changes.changed() => if changed.is_err() { return },
                    changed = standing_changes.changed() => if changed.is_err() { return },
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && ready()
    }

    /// Stops every task at once, without a controlled shutdown, a final flush or the
    /// clean-shutdown marker: what a crash looks like to the rest of the cluster (tests use it).
    pub fn crash(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            task.abort();
        }
    }

    /// Controlled shutdown: the controller moves leadership away first; then the listener
    /// drains, every log is flushed and closed, and the clean-shutdown marker is written.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        self.node.controlled_shutdown(std::time::Duration::from_secs(5)).await;
        self.node.leave_membership();
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        let broker = self.broker;
        tokio::task::spawn_blocking(move || broker.close()).await??;
        Ok(self.node.mark_clean_shutdown()?)
    }
}
