//! The broker: its topics, groups, producer ids and link to the cluster. Each Kafka request is
//! answered by one module of `crate::api`, behind one dispatch.

use std::sync::Arc;

use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_types::ErrorCode;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::clock::now_ms;
use crate::cluster::ClusterLink;
use crate::config::{BrokerConfig, ConfigError, KafkaListener};
use crate::error::NodeError;
use crate::groups::Groups;
use crate::producer_ids::ProducerIds;
use crate::topics::Topics;

/// Who sent a request: the header's client id and the peer address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Client {
    pub client_id: String,
    /// Kafka's form: `/` and the IP address.
    pub host: String,
    /// The listener the connection came in on (its name, `PLAINTEXT` or `SASL_PLAINTEXT`):
    /// Metadata and FindCoordinator answer with addresses on the same listener.
    pub listener: &'static str,
    /// Who authenticated on this connection (SASL listeners), `None` on a PLAINTEXT one.
    pub principal: Option<keel_auth::KafkaPrincipal>,
}

/// What the connection does after a request.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one per request, moved once
pub enum Reply {
    Response(ResponseKind),
    /// No response is due (Produce with acks=0).
    None,
    /// Close the connection, for the reason given.
    Close(String),
}

/// One keel broker.
#[derive(Debug)]
pub struct Broker {
    pub config: BrokerConfig,
    pub topics: Topics,
    pub cluster_id: String,
    /// The Kafka listeners, in config order (the first is the inter-broker one).
    pub(crate) listeners: Vec<KafkaListener>,
    /// The mechanisms SASL listeners offer.
    pub(crate) sasl_mechanisms: Vec<keel_auth::SaslMechanism>,
    /// Behind the fake SCRAM credentials of unknown users ([`keel_auth::ScramCredential::fake_for`]):
    /// drawn per process, so an unknown user's fake salt changes at a restart where a real
    /// one does not.
    pub(crate) sasl_secret: SaslSecret,
    /// Woken after every append (and high watermark advance), so long-polling fetches re-read.
    pub(crate) appended: Arc<Notify>,
    pub(crate) producer_ids: ProducerIds,
    /// The group coordinators this broker runs (in a cluster: for the offsets partitions it
    /// leads).
    pub(crate) groups: Arc<Groups>,
    /// This node's link to the controller and the replayed metadata.
    pub(crate) cluster: ClusterLink,
    pub(crate) shutdown: watch::Receiver<bool>,
}

/// A secret that `Debug` does not print.
pub(crate) struct SaslSecret(pub(crate) [u8; 32]);

impl std::fmt::Debug for SaslSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaslSecret([hidden])")
    }
}

pub(crate) fn str_bytes(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

pub(crate) fn code(error: ErrorCode) -> i16 {
    error.code()
}

impl Broker {
    /// Opens this node's local replicas (recovering every partition log); the metadata log
    /// decides what they hold ([`crate::cluster::replication`] keeps them in step).
    /// `shutdown` turning true wakes long-polling fetches so they answer at once.
    pub fn open(config: BrokerConfig, link: ClusterLink, shutdown: watch::Receiver<bool>) -> Result<Broker, NodeError> {
        config.validate()?;
        let listeners = config.kafka_listeners()?;
        let sasl_mechanisms = config.sasl_mechanisms()?;
        let mut secret = [0u8; 32];
        secret[..16].copy_from_slice(Uuid::new_v4().as_bytes());
        secret[16..].copy_from_slice(Uuid::new_v4().as_bytes());
        let sasl_secret = SaslSecret(secret);
        let topics = Topics::open(&config.data_dir, config.topic_defaults.clone(), now_ms())?;
        let appended = Arc::new(Notify::new());
        // Producer ids come from the controller (KIP-730): a counter in the data directory
        // would start over on a replaced disk.
        let producer_ids = ProducerIds::new(&link);
        let groups = Groups::empty(config.group_config(), appended.clone())?;
        let cluster_id = cluster_id(&config)?;
        Ok(Broker {
            config,
            topics,
            cluster_id,
            listeners,
            sasl_mechanisms,
            sasl_secret,
            appended,
            producer_ids,
            groups: Arc::new(groups),
            cluster: link,
            shutdown,
        })
    }

    /// The host and port clients of the first listener are told to use.
    pub fn advertised(&self) -> (String, u16) {
        self.listeners[0].advertised.clone()
    }

    /// Answers one request.
    pub async fn handle(&self, api_key: ApiKey, version: i16, request: RequestKind) -> Reply {
        self.handle_from(&Client::default(), api_key, version, request).await
    }

    /// Flushes due logs; with `full`, also applies retention and writes recovery checkpoints.
    pub fn maintain(&self, full: bool) {
        self.topics.maintain(now_ms(), full);
        if full {
            self.groups.compact();
        }
    }

    /// How the group's last rebalance went, if this broker coordinates it.
    pub fn last_rebalance(&self, group_id: &str) -> Option<keel_groups::Rebalance> {
        self.groups.read(group_id, |c| c.last_rebalance(group_id)).ok().flatten()
    }

    /// Advances group timers (sessions, rebalances, offset expiry).
    pub fn tick_groups(&self) {
        self.groups.tick();
    }

    /// Flushes everything and closes every log cleanly.
    pub fn close(&self) -> Result<(), NodeError> {
        self.topics.close(now_ms())
    }
}

/// The cluster id every member reports (clients warn when it changes). A data directory
/// written by keel's single node before it became a cluster of one names its id in
/// `meta.properties` and keeps it. Otherwise it is derived from the controller quorum (ids
/// and addresses), which every member is configured with; changing a controller's address
/// changes it.
fn cluster_id(config: &BrokerConfig) -> Result<String, ConfigError> {
    let path = config.data_dir.join("meta.properties");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("cluster.id=")) {
            return Ok(id.trim().to_string());
        }
    }
    let voters = config.controller_voters()?;
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d; // FNV-1a 128 offset basis
    for (id, address) in &voters {
        for byte in format!("{id}@{address};").bytes() {
            hash ^= u128::from(byte);
            hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013B);
        }
    }
    Ok(Uuid::from_u128(hash).simple().to_string()[..22].to_string())
}
