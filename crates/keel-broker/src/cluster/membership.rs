//! Membership: the SWIM core (`keel-gossip`) over UDP on the node's cluster port.
//!
//! Why UDP on the cluster port: SWIM is a datagram protocol. A probe must fail fast and
//! independently when its target does not answer; over the existing TCP connections a
//! SIGSTOPped peer keeps accepting bytes into its socket buffer and every later message on
//! that connection waits behind them. Datagrams carry no per-peer state, a lost one is simply
//! a missed ack, and the cluster port is already the address every voter knows for every
//! other (the `--controllers` list), so it doubles as the seed list. A broker-only node has no
//! cluster port and gossips from its Kafka listener's address instead (UDP and TCP ports are
//! separate name spaces).
//!
//! The shell owns the socket, the clock, the PRNG and the incarnation file. The incarnation is
//! written and synced (`membership.incarnation` in the data directory) before any message
//! carrying it leaves, as the core demands. The view goes out on a watch channel: the
//! controller task fences what it shows Dead, and `keel cluster status` prints it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keel_gossip::{Address, Config, Durable, Gossip, Incarnation, Member, Message};
use keel_types::{Duration, NodeId, Rng};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::clock::monotonic;
use crate::config::ConfigError;
use crate::error::{DiskError, NodeError};

const INCARNATION_FILE: &str = "membership.incarnation";

/// What a node's membership needs to start.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub node: NodeId,
    /// Where to receive datagrams.
    pub bind: SocketAddr,
    /// The address the others send to (gossiped).
    pub advertised: String,
    /// Addresses to join through: every voter's cluster port.
    pub seeds: Vec<String>,
    pub probe_interval: Duration,
    pub suspicion_timeout: Duration,
    pub data_dir: PathBuf,
}

/// The running membership of this node.
#[derive(Debug)]
pub struct Membership {
    /// This node's view: every member with its incarnation and status.
    pub view: watch::Receiver<Vec<Member>>,
    /// The incarnation this run announces.
    pub incarnation: Incarnation,
    /// Set to leave the cluster gracefully (the others see this node Left, not Dead).
    pub leave: watch::Sender<bool>,
}

/// Binds the socket, bumps and persists the incarnation, and runs membership until this node
/// leaves or shuts down. A shutdown without leaving (a crash, in tests) just goes silent: the
/// others find out the way they find out about any crash.
pub async fn start(config: MembershipConfig, mut shutdown: watch::Receiver<bool>) -> Result<Membership, NodeError> {
    let socket = UdpSocket::bind(config.bind).await.map_err(|source| NodeError::Listen {
        port: "membership socket (UDP)",
        address: config.bind,
        source,
    })?;
    let path = config.data_dir.join(INCARNATION_FILE);
    let durable = read_incarnation(&path)?;
    let mut core_config = Config::new(
        config.node,
        Address(config.advertised.clone()),
        config.seeds.iter().map(|s| Address(s.clone())).collect(),
    );
    core_config.probe_interval = config.probe_interval;
    core_config.probe_timeout = Duration(config.probe_interval.0 / 2);
    core_config.suspicion_timeout = config.suspicion_timeout;
    core_config.validate().map_err(|e| ConfigError::Membership(e.to_string()))?;
    let mut gossip = Gossip::start(core_config, durable, monotonic());
    let incarnation = gossip.incarnation();
    // The first persist happens here, so the incarnation is durable before this run says
    // anything (and before registration reports it).
    persist(&mut gossip, &path)?;
    let (view_tx, view) = watch::channel(gossip.members().cloned().collect());
    let (leave, mut leaving) = watch::channel(false);
    let mut rng = Rng::new(seed());
    let mut addresses: BTreeMap<String, SocketAddr> = BTreeMap::new();
    tracing::info!(node = %config.node, address = %config.advertised, %incarnation, "membership started");
    tokio::spawn(async move {
        let mut buf = vec![0u8; keel_gossip::MESSAGE_BYTES_MAX];
        loop {
            if let Err(error) = persist(&mut gossip, &path) {
                // Without a durable incarnation this node must not speak: stop.
                tracing::error!(%error, "membership stopped");
                return;
            }
            send_all(&socket, &mut gossip, &mut addresses).await;
            publish(&mut gossip, &view_tx);
            let wait = gossip.poll_timeout().map(|at| at.saturating_since(monotonic()));
            tokio::select! {
                // Leaving first: a graceful stop signals it just before shutdown.
                biased;
                _ = leaving.changed() => {
                    gossip.leave(monotonic());
                    send_all(&socket, &mut gossip, &mut addresses).await;
                    publish(&mut gossip, &view_tx);
                    tracing::info!("left the cluster's membership");
                    return;
                }
                _ = shutdown.changed() => return,
                received = socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => match Message::decode(&buf[..len], keel_gossip::MESSAGE_BYTES_MAX) {
                        Ok(message) => gossip.handle_message(monotonic(), message),
                        Err(error) => tracing::debug!(%from, %error, "unreadable membership datagram"),
                    },
                    Err(error) => tracing::debug!(%error, "membership socket receive failed"),
                },
                _ = sleep(wait) => gossip.handle_tick(monotonic(), &mut rng),
            }
        }
    });
    Ok(Membership { view, incarnation, leave })
}

async fn sleep(wait: Option<Duration>) {
    match wait {
        Some(wait) => tokio::time::sleep(std::time::Duration::from_nanos(wait.0)).await,
        None => std::future::pending().await,
    }
}

/// Sends every datagram the core lets out; an address that does not resolve, or a send that
/// fails, is a lost datagram (the protocol copes).
async fn send_all(socket: &UdpSocket, gossip: &mut Gossip, addresses: &mut BTreeMap<String, SocketAddr>) {
    for outgoing in gossip.drain_messages() {
        let address = match addresses.get(&outgoing.to.0) {
            Some(address) => *address,
            None => match resolve(&outgoing.to.0).await {
                Some(address) => {
                    addresses.insert(outgoing.to.0.clone(), address);
                    address
                }
                None => {
                    tracing::debug!(to = %outgoing.to, "membership address does not resolve");
                    continue;
                }
            },
        };
        if let Err(error) = socket.send_to(&outgoing.message.encode(), address).await {
            tracing::debug!(to = %address, %error, "membership datagram not sent");
        }
    }
}

async fn resolve(address: &str) -> Option<SocketAddr> {
    if let Ok(parsed) = address.parse() {
        return Some(parsed);
    }
    tokio::net::lookup_host(address).await.ok()?.next()
}

/// Logs status changes and publishes the whole view.
fn publish(gossip: &mut Gossip, view: &watch::Sender<Vec<Member>>) {
    let changes = gossip.drain_changes();
    if changes.is_empty() {
        return;
    }
    for member in &changes {
        if member.id != gossip.id() {
            tracing::info!(node = %member.id, status = %member.status, incarnation = %member.incarnation, "membership changed");
        }
    }
    let _ = view.send(gossip.members().cloned().collect());
}

/// Makes the incarnation the core asks for durable, then tells the core.
fn persist(gossip: &mut Gossip, path: &Path) -> Result<(), DiskError> {
    while let Some(durable) = gossip.poll_persist() {
        write_incarnation(path, durable)?;
        gossip.handle_persisted(monotonic(), durable);
    }
    Ok(())
}

fn read_incarnation(path: &Path) -> Result<Durable, DiskError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(|n| Durable { incarnation: Incarnation(n) })
            .map_err(|_| DiskError::damaged(path, format!("{text:?} is no incarnation number"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Durable::default()),
        Err(e) => Err(DiskError::io("read", path, e)),
    }
}

/// Writes the incarnation through a synced temporary file and a rename, so a crash leaves the
/// old number or the new one, never a torn one.
fn write_incarnation(path: &Path, durable: Durable) -> Result<(), DiskError> {
    let temporary = path.with_extension("tmp");
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::write(&temporary, format!("{}\n", durable.incarnation.0))
        .and_then(|()| std::fs::File::open(&temporary)?.sync_all())
        .and_then(|()| std::fs::rename(&temporary, path))
        .and_then(|()| std::fs::File::open(dir)?.sync_all())
        .map_err(|e| DiskError::io("write", path, e))
}

/// Probe order only needs to differ between nodes.
fn seed() -> u64 {
    crate::clock::now_ms() as u64 ^ (u64::from(std::process::id()) << 32)
}
