//! Broker configuration: a TOML file, overridden by command-line flags.
//!
//! Keys are Kafka's where Kafka has one, written in snake case in the file
//! (`auto_create_topics_enable` is Kafka's `auto.create.topics.enable`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use keel_auth::SaslMechanism;
use keel_storage::{FlushPolicy, LogConfig};
use serde::Deserialize;

/// Why a configuration cannot be used; each says which setting and what it must be.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is not valid: {source}", path.display())]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("{setting} = {value}: must be {requirement}")]
    OutOfRange { setting: &'static str, value: String, requirement: &'static str },
    #[error("{setting} {value:?} is not one of never, interval, always")]
    FlushPolicy { setting: &'static str, value: String },
    #[error("advertise address {value:?} must be HOST:PORT with a port from 0 to 65535")]
    AdvertiseAddress { value: String },
    #[error("{setting} entry {value:?}: {reason}")]
    Listener { setting: &'static str, value: String, reason: String },
    #[error("sasl_mechanisms entry {value:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")]
    SaslMechanism { value: String },
    #[error("controllers entry {entry:?} must look like 1@127.0.0.1:9093{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    ControllersEntry { entry: String, detail: Option<String> },
    #[error("controllers lists node {node} twice")]
    DuplicateVoter { node: i32 },
    #[error("process_roles {value:?} must be \"broker\" or \"broker,controller\"")]
    ProcessRoles { value: String },
    #[error(
        "node {node} runs the controller role but is not in controllers {controllers:?}; add it or set \
         process_roles = \"broker\""
    )]
    ControllerNotVoter { node: i32, controllers: String },
    #[error("broker_session_timeout_ms must exceed broker_heartbeat_interval_ms (> 0)")]
    SessionTimeout,
    #[error("group coordinator settings: {0}")]
    Groups(String),
    #[error("topic_defaults: {0}")]
    TopicDefaults(String),
    #[error("membership settings: {0}")]
    Membership(String),
    #[error("controller quorum settings: {0}")]
    Quorum(String),
}

/// Everything `keel serve` needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// Kafka's `node.id`; 1 by default, as in Kafka's quick start.
    pub node_id: i32,
    /// Where partition logs and topic metadata live (Kafka's `log.dirs`, one directory).
    pub data_dir: PathBuf,
    /// The Kafka listener address.
    pub listen: SocketAddr,
    /// The address clients are told to connect to (Kafka's `advertised.listeners`); defaults
    /// to `listen`.
    pub advertise: Option<String>,
    /// Kafka's `listeners`: `PROTOCOL://IP:PORT` entries, each protocol at most once
    /// (`PLAINTEXT`, `SASL_PLAINTEXT`). Empty: one PLAINTEXT listener on `listen`. The first
    /// one also carries replication between brokers.
    pub listeners: Vec<String>,
    /// Kafka's `advertised.listeners`: `PROTOCOL://HOST:PORT` for listeners whose clients
    /// must use another address than the one bound.
    pub advertised_listeners: Vec<String>,
    /// Kafka's `sasl.enabled.mechanisms` for SASL listeners.
    pub sasl_mechanisms: Vec<String>,
    /// `NAME:PASSWORD` of a first user to create at start when no user has SCRAM credentials
    /// (from the environment, `KEEL_BOOTSTRAP_USER`; never read from the config file).
    #[serde(skip)]
    pub bootstrap_user: Option<String>,
    /// `socket.request.max.bytes`: larger request frames close the connection.
    pub socket_request_max_bytes: usize,
    /// `auto.create.topics.enable`: Metadata and Produce for an unknown topic create it.
    pub auto_create_topics_enable: bool,
    /// Logs as JSON lines instead of human-readable text.
    pub log_json: bool,
    /// `group.initial.rebalance.delay.ms`: a new group waits this long for more members.
    pub group_initial_rebalance_delay_ms: i32,
    /// `group.min.session.timeout.ms` / `group.max.session.timeout.ms`.
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// `offsets.topic.num.partitions` (fixed once `__consumer_offsets` exists).
    pub offsets_topic_num_partitions: u32,
    /// `offsets.retention.minutes`.
    pub offsets_retention_minutes: i64,
    /// Flush policy of `__consumer_offsets` (`never`, `interval`, `always`); empty (the
    /// default) means the topics' default: `always` on a single node, where a commit is
    /// acknowledged only once it is on disk, `never` in a cluster, where the ISR holds it.
    /// `never` on a single node trades the last commits before a power loss (consumers then
    /// re-read a little) for throughput.
    pub offsets_topic_flush_policy: String,
    /// Defaults for every topic; CreateTopics may override them per topic.
    pub topic_defaults: TopicDefaults,
    /// The cluster: Kafka's `controller.quorum.voters`, `1@host:port,2@host:port,...` (each
    /// controller's cluster port). Empty: a cluster of one, this node the only voter, on
    /// `controller_listen`.
    pub controllers: String,
    /// The cluster port of a node that is the only voter (`controllers` empty): what
    /// `keel cluster status --controllers ID@ADDRESS` asks. Kafka's combined-mode
    /// `CONTROLLER` listener, on 9093 as in Kafka's quick start.
    pub controller_listen: SocketAddr,
    /// Kafka's `process.roles`: `broker,controller` (the default for a node listed in
    /// `controllers`) or `broker` (a broker-only node).
    pub process_roles: Option<String>,
    /// Kafka's `broker.rack`: replicas of a partition are spread over racks.
    pub rack: Option<String>,
    /// Raft quorums of the controller quorum (see docs/raft.md); default: majorities.
    pub controller_replication_quorum: Option<usize>,
    pub controller_election_quorum: Option<usize>,
    /// Kafka's `controller.quorum.election.timeout.ms`: a controller that hears nothing from
    /// the active one for a random time between this and twice this starts an election.
    /// Lower than Kafka's 1000 so that, when the active controller dies with a broker, the
    /// election is over before the broker's session expires.
    pub controller_election_timeout_ms: u64,
    /// How many applied metadata log entries the controller keeps before compacting them into
    /// a snapshot of the image. Kafka bounds the same thing by bytes and time
    /// (`metadata.log.max.record.bytes.between.snapshots`, `metadata.log.max.snapshot.interval.ms`);
    /// keel counts entries. Tests lower it so that restarts replay from a snapshot.
    pub controller_snapshot_entries: u64,
    /// Membership (SWIM over UDP on the cluster port): one member is probed per interval
    /// (memberlist's `ProbeInterval`); an unanswered probe makes it Suspect, and a Suspect
    /// member that does not refute within the suspicion timeout is declared Dead, which fences
    /// its broker until it comes back with a higher incarnation.
    pub membership_probe_interval_ms: u64,
    pub membership_suspicion_timeout_ms: u64,
    /// `broker.heartbeat.interval.ms`.
    pub broker_heartbeat_interval_ms: u64,
    /// `broker.session.timeout.ms`: a broker silent this long is fenced and its partitions
    /// fail over. Lower than Kafka's 9 s so failover completes within about 2 s.
    pub broker_session_timeout_ms: u64,
    /// `default.replication.factor` for topics created in a cluster (capped at the number of
    /// brokers). keel defaults to 3, not Kafka's 1: replication is what keeps acknowledged
    /// writes when a cluster does not fsync.
    pub default_replication_factor: i16,
    /// `min.insync.replicas` default for topics created in a cluster (capped at their
    /// replication factor).
    pub min_insync_replicas: i32,
    /// `replica.lag.time.max.ms`: a follower that has not caught up for this long leaves the
    /// ISR (a broker that stops heartbeating is fenced sooner, after the session timeout).
    pub replica_lag_time_max_ms: u64,
}

/// Per-topic defaults (Kafka's `num.partitions`, `log.retention.ms`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicDefaults {
    pub num_partitions: i32,
    /// -1 keeps data forever.
    pub retention_ms: i64,
    /// -1: no size limit.
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: u64,
    pub max_message_bytes: u64,
    /// `never`, `interval` or `always` (group commit). Unset (empty): `always` on a single
    /// node, `never` in a cluster, where replication and the recovery rules keep acknowledged
    /// writes instead of fsync.
    pub flush_policy: String,
    /// For `interval`: Kafka's `flush.messages` and `flush.ms`.
    pub flush_messages: u64,
    pub flush_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("./keel-data"),
            listen: "127.0.0.1:9092".parse().expect("valid address"),
            advertise: None,
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            sasl_mechanisms: vec!["SCRAM-SHA-256".to_string(), "SCRAM-SHA-512".to_string()],
            bootstrap_user: None,
            socket_request_max_bytes: 100 * 1024 * 1024,
            auto_create_topics_enable: true,
            log_json: false,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            offsets_topic_num_partitions: 50,
            offsets_retention_minutes: 7 * 24 * 60,
            offsets_topic_flush_policy: String::new(),
            topic_defaults: TopicDefaults::default(),
            controllers: String::new(),
            controller_listen: "127.0.0.1:9093".parse().expect("valid address"),
            process_roles: None,
            rack: None,
            controller_replication_quorum: None,
            controller_election_quorum: None,
            broker_heartbeat_interval_ms: 250,
            broker_session_timeout_ms: 1_500,
            controller_election_timeout_ms: 750,
            controller_snapshot_entries: 4096,
            membership_probe_interval_ms: 500,
            membership_suspicion_timeout_ms: 3_000,
            default_replication_factor: 3,
            min_insync_replicas: 2,
            replica_lag_time_max_ms: 30_000,
        }
    }
}

impl Default for TopicDefaults {
    fn default() -> Self {
        let log = LogConfig::default();
        TopicDefaults {
            num_partitions: 1,
            retention_ms: log.retention_ms.map_or(-1, |ms| ms as i64),
            retention_bytes: -1,
            segment_bytes: log.segment_bytes,
            segment_ms: log.segment_ms,
            max_message_bytes: log.max_message_bytes,
            // Decided by the mode: see `TopicDefaults::flush_policy_name`.
            flush_policy: String::new(),
            flush_messages: 10_000,
            flush_ms: 1_000,
        }
    }
}

impl BrokerConfig {
    /// Reads a TOML file; unknown keys are errors, missing keys take their defaults.
    pub fn from_file(path: &Path) -> Result<BrokerConfig, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), source: Box::new(e) })
    }

    /// The host and port clients should use.
    pub fn advertised(&self) -> Result<(String, u16), ConfigError> {
        let Some(advertise) = &self.advertise else {
            return Ok((self.listen.ip().to_string(), self.listen.port()));
        };
        host_port(advertise).ok_or_else(|| ConfigError::AdvertiseAddress { value: advertise.clone() })
    }

    /// The Kafka listeners, in order: `listeners` with `advertised_listeners`, or one
    /// PLAINTEXT listener on `listen` advertised as `advertise`.
    pub fn kafka_listeners(&self) -> Result<Vec<KafkaListener>, ConfigError> {
        if self.listeners.is_empty() {
            let protocol = SecurityProtocol::Plaintext;
            return Ok(vec![KafkaListener { protocol, bind: self.listen, advertised: self.advertised()? }]);
        }
        let mut advertised = BTreeMap::new();
        for entry in &self.advertised_listeners {
            let (protocol, address) = parse_listener("advertised_listeners", entry)?;
            let invalid = |reason: &str| listener_error("advertised_listeners", entry, reason);
            let host_port =
                host_port(&address).ok_or_else(|| invalid("must be PROTOCOL://HOST:PORT, a port 0 to 65535"))?;
            if advertised.insert(protocol, host_port).is_some() {
                return Err(invalid("names its protocol twice"));
            }
        }
        let mut listeners: Vec<KafkaListener> = Vec::new();
        for entry in &self.listeners {
            let (protocol, address) = parse_listener("listeners", entry)?;
            let invalid = |reason: &str| listener_error("listeners", entry, reason);
            let bind: SocketAddr = address.parse().map_err(|_| invalid("the address must be IP:PORT"))?;
            if listeners.iter().any(|l| l.protocol == protocol) {
                return Err(invalid("names its protocol twice"));
            }
            let advertised = advertised.remove(&protocol).unwrap_or((bind.ip().to_string(), bind.port()));
            listeners.push(KafkaListener { protocol, bind, advertised });
        }
        if let Some(protocol) = advertised.keys().next() {
            let reason = "names a protocol that no entry of listeners has";
            return Err(listener_error("advertised_listeners", protocol.name(), reason));
        }
        Ok(listeners)
    }

    /// `sasl_mechanisms`, parsed.
    pub fn sasl_mechanisms(&self) -> Result<Vec<SaslMechanism>, ConfigError> {
        self.sasl_mechanisms
            .iter()
            .map(|m| SaslMechanism::from_name(m).ok_or_else(|| ConfigError::SaslMechanism { value: m.clone() }))
            .collect()
    }

    /// The group coordinator's settings.
    pub fn group_config(&self) -> keel_groups::Config {
        keel_groups::Config {
            session_timeout_ms_min: self.group_min_session_timeout_ms,
            session_timeout_ms_max: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            offsets_retention_ms: self.offsets_retention_minutes.saturating_mul(60_000),
            offsets_partitions: self.offsets_topic_num_partitions,
            ..keel_groups::Config::default()
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.group_config().validate().map_err(ConfigError::Groups)?;
        if !self.offsets_topic_flush_policy.is_empty()
            && FlushPolicy::parse(&self.offsets_topic_flush_policy, 1, 1).is_none()
        {
            let value = self.offsets_topic_flush_policy.clone();
            return Err(ConfigError::FlushPolicy { setting: "offsets_topic_flush_policy", value });
        }
        let out_of_range = |setting, value: &dyn std::fmt::Display, requirement| {
            Err(ConfigError::OutOfRange { setting, value: value.to_string(), requirement })
        };
        if self.node_id < 0 {
            return out_of_range("node_id", &self.node_id, "0 or more");
        }
        if self.socket_request_max_bytes < 1024 {
            return out_of_range("socket_request_max_bytes", &self.socket_request_max_bytes, "at least 1024");
        }
        self.advertised()?;
        let listeners = self.kafka_listeners()?;
        self.sasl_mechanisms()?;
        if !self.is_single_node() && listeners[0].protocol != SecurityProtocol::Plaintext {
            let reason = "the first listener carries replication between brokers, which cannot authenticate yet: \
                          list a PLAINTEXT listener first";
            return Err(listener_error("listeners", &self.listeners[0], reason));
        }
        let controllers = self.controller_voters()?;
        {
            let roles = self.roles()?;
            if roles.controller && !controllers.contains_key(&keel_types::NodeId(self.node_id)) {
                let controllers = self.controllers.clone();
                return Err(ConfigError::ControllerNotVoter { node: self.node_id, controllers });
            }
            if self.broker_heartbeat_interval_ms == 0
                || self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms
            {
                return Err(ConfigError::SessionTimeout);
            }
            if self.default_replication_factor < 1 {
                return out_of_range("default_replication_factor", &self.default_replication_factor, "at least 1");
            }
            if self.min_insync_replicas < 1 {
                return out_of_range("min_insync_replicas", &self.min_insync_replicas, "at least 1");
            }
            if self.controller_snapshot_entries == 0 {
                return out_of_range("controller_snapshot_entries", &0, "at least 1 (the default is 4096)");
            }
            if self.replica_lag_time_max_ms == 0 {
                return out_of_range("replica_lag_time_max_ms", &0, "positive (Kafka's default is 30000)");
            }
        }
        if self.topic_defaults.num_partitions < 1 {
            return out_of_range("topic_defaults.num_partitions", &self.topic_defaults.num_partitions, "at least 1");
        }
        self.topic_defaults.log_config()?.validate().map_err(ConfigError::TopicDefaults)
    }
}

/// How clients on a listener authenticate: Kafka's security protocols (SSL and SASL_SSL are
/// not built yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    SaslPlaintext,
}

impl SecurityProtocol {
    /// Kafka's name, which is also the listener's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
        }
    }
}

/// One Kafka listener: where it binds, what clients are told, how they authenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListener {
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    pub advertised: (String, u16),
}

impl KafkaListener {
    /// The listener's name (its protocol's), as brokers register it.
    pub fn name(&self) -> &'static str {
        self.protocol.name()
    }
}

fn listener_error(setting: &'static str, entry: &str, reason: &str) -> ConfigError {
    ConfigError::Listener { setting, value: entry.to_string(), reason: reason.to_string() }
}

/// `HOST:PORT` (a bracketed IPv6 host too) into the host and the port.
fn host_port(address: &str) -> Option<(String, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_string(), port.parse().ok()?))
}

/// `PROTOCOL://ADDRESS` into the protocol and the address.
fn parse_listener(setting: &'static str, entry: &str) -> Result<(SecurityProtocol, String), ConfigError> {
    let invalid = |reason: &str| listener_error(setting, entry, reason);
    let (protocol, address) = entry.split_once("://").ok_or_else(|| invalid("must be PROTOCOL://HOST:PORT"))?;
    let protocol = match protocol {
        "PLAINTEXT" => SecurityProtocol::Plaintext,
        "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
        "SSL" | "SASL_SSL" => return Err(invalid("TLS listeners are not built yet: use PLAINTEXT or SASL_PLAINTEXT")),
        _ => return Err(invalid("the protocol must be PLAINTEXT or SASL_PLAINTEXT")),
    };
    Ok((protocol, address.to_string()))
}

/// Which roles a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

impl BrokerConfig {
    /// The controller quorum, by node id: `controllers`, or this node alone on
    /// `controller_listen`.
    pub fn controller_voters(
        &self,
    ) -> Result<std::collections::BTreeMap<keel_types::NodeId, std::net::SocketAddr>, ConfigError> {
        let mut voters = std::collections::BTreeMap::new();
        if self.is_single_node() {
            voters.insert(keel_types::NodeId(self.node_id), self.controller_listen);
            return Ok(voters);
        }
        for entry in self.controllers.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let bad = |detail: Option<String>| ConfigError::ControllersEntry { entry: entry.to_string(), detail };
            let (id, address) = entry.split_once('@').ok_or_else(|| bad(None))?;
            let id: i32 = id.parse().map_err(|_| bad(None))?;
            use std::net::ToSocketAddrs;
            let address = address
                .to_socket_addrs()
                .map_err(|e| bad(Some(e.to_string())))?
                .next()
                .ok_or_else(|| bad(Some("the address resolves to nothing".to_string())))?;
            if voters.insert(keel_types::NodeId(id), address).is_some() {
                return Err(ConfigError::DuplicateVoter { node: id });
            }
        }
        Ok(voters)
    }

    /// Whether this node is a cluster of one: no `controllers` given, so it is the only voter.
    pub fn is_single_node(&self) -> bool {
        self.controllers.trim().is_empty()
    }

    pub fn roles(&self) -> Result<Roles, ConfigError> {
        match self.process_roles.as_deref().map(str::trim) {
            None => Ok(Roles {
                broker: true,
                controller: self.controller_voters()?.contains_key(&keel_types::NodeId(self.node_id)),
            }),
            Some("broker") => Ok(Roles { broker: true, controller: false }),
            Some("broker,controller") | Some("controller,broker") => Ok(Roles { broker: true, controller: true }),
            Some(other) => Err(ConfigError::ProcessRoles { value: other.to_string() }),
        }
    }
}

impl TopicDefaults {
    /// The flush policy topics get by default: as configured, else `always` (a single node
    /// has no replicas to fall back on: it acknowledges only what is on disk).
    pub fn flush_policy_name(&self) -> &str {
        if self.flush_policy.is_empty() {
            "always"
        } else {
            &self.flush_policy
        }
    }

    /// The defaults in a quorum of `voters` controllers: an unset flush policy is `never` in a
    /// cluster of several nodes, where the ISR holds what is acknowledged, and `always` on a
    /// cluster of one (the single node), which acknowledges only what is on disk.
    pub fn for_voters(mut self, voters: usize) -> TopicDefaults {
        if self.flush_policy.is_empty() && voters > 1 {
            self.flush_policy = "never".to_string();
        }
        self
    }

    /// The log configuration these defaults give a topic without overrides.
    pub fn log_config(&self) -> Result<LogConfig, ConfigError> {
        let flush =
            FlushPolicy::parse(self.flush_policy_name(), self.flush_messages, self.flush_ms).ok_or_else(|| {
                ConfigError::FlushPolicy { setting: "topic_defaults.flush_policy", value: self.flush_policy.clone() }
            })?;
        Ok(LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            retention_ms: (self.retention_ms >= 0).then_some(self.retention_ms as u64),
            retention_bytes: (self.retention_bytes >= 0).then_some(self.retention_bytes as u64),
            max_message_bytes: self.max_message_bytes,
            flush,
            ..LogConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_pair_with_their_advertised_addresses_and_bad_ones_are_refused() {
        let config = BrokerConfig {
            listeners: vec!["PLAINTEXT://127.0.0.1:9092".into(), "SASL_PLAINTEXT://0.0.0.0:9094".into()],
            advertised_listeners: vec!["SASL_PLAINTEXT://kafka.example:19094".into()],
            ..BrokerConfig::default()
        };
        let listeners = config.kafka_listeners().unwrap();
        let summary: Vec<_> = listeners.iter().map(|l| (l.name(), l.bind.to_string(), l.advertised.clone())).collect();
        assert_eq!(
            summary,
            vec![
                ("PLAINTEXT", "127.0.0.1:9092".to_string(), ("127.0.0.1".to_string(), 9092)),
                ("SASL_PLAINTEXT", "0.0.0.0:9094".to_string(), ("kafka.example".to_string(), 19094)),
            ]
        );
        config.validate().unwrap();
        let default = BrokerConfig::default().kafka_listeners().unwrap();
        assert_eq!(
            (default.len(), default[0].name(), default[0].bind),
            (1, "PLAINTEXT", BrokerConfig::default().listen)
        );

        let refused = |listeners: &[&str], advertised: &[&str], mechanisms: &[&str]| {
            let config = BrokerConfig {
                listeners: listeners.iter().map(|l| l.to_string()).collect(),
                advertised_listeners: advertised.iter().map(|l| l.to_string()).collect(),
                sasl_mechanisms: mechanisms.iter().map(|m| m.to_string()).collect(),
                ..BrokerConfig::default()
            };
            config.validate().unwrap_err().to_string()
        };
        let ok = ["SCRAM-SHA-256"];
        assert!(refused(&["SSL://127.0.0.1:9093"], &[], &ok).contains("TLS listeners are not built yet"));
        assert!(refused(&["HTTP://127.0.0.1:80"], &[], &ok).contains("PLAINTEXT or SASL_PLAINTEXT"));
        assert!(refused(&["PLAINTEXT://localhost:9092"], &[], &ok).contains("IP:PORT"));
        assert!(refused(&["PLAINTEXT://127.0.0.1:1", "PLAINTEXT://127.0.0.1:2"], &[], &ok).contains("twice"));
        assert!(refused(&["PLAINTEXT://127.0.0.1:1"], &["SASL_PLAINTEXT://h:1"], &ok).contains("no entry"));
        assert!(refused(&["PLAINTEXT://127.0.0.1:1"], &[], &["GSSAPI"]).contains("sasl_mechanisms"));
        let member = BrokerConfig {
            listeners: vec!["SASL_PLAINTEXT://127.0.0.1:9094".into()],
            controllers: "1@127.0.0.1:9093,2@127.0.0.1:9193".into(),
            ..BrokerConfig::default()
        };
        assert!(member.validate().unwrap_err().to_string().contains("list a PLAINTEXT listener first"));
    }

    #[test]
    fn defaults_are_safe_for_a_single_node() {
        let config = BrokerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.topic_defaults.log_config().unwrap().flush, FlushPolicy::Always);
        assert_eq!(config.advertised().unwrap(), ("127.0.0.1".to_string(), 9092));
    }

    #[test]
    fn toml_overrides_and_rejects_unknown_keys() {
        let config: BrokerConfig = toml::from_str(
            r#"
            data_dir = "/var/lib/keel"
            listen = "0.0.0.0:19092"
            advertise = "kafka.example:19092"
            [topic_defaults]
            num_partitions = 8
            flush_policy = "interval"
            flush_ms = 50
            "#,
        )
        .unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/keel"));
        assert_eq!(config.topic_defaults.num_partitions, 8);
        assert_eq!(config.advertised().unwrap(), ("kafka.example".to_string(), 19092));
        assert_eq!(
            config.topic_defaults.log_config().unwrap().flush,
            FlushPolicy::Interval { messages: 10_000, ms: 50 }
        );
        assert!(toml::from_str::<BrokerConfig>("colour = \"blue\"").is_err());
        let bad = BrokerConfig {
            topic_defaults: TopicDefaults { flush_policy: "sometimes".into(), ..TopicDefaults::default() },
            ..BrokerConfig::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::FlushPolicy { setting: "topic_defaults.flush_policy", value }) if value == "sometimes"
        ));
        let config = |f: fn(&mut BrokerConfig)| {
            let mut config = BrokerConfig::default();
            f(&mut config);
            config.validate().map_err(|e| (e.to_string(), e))
        };
        let (message, error) = config(|c| c.advertise = Some("kafka.example".into())).unwrap_err();
        assert!(matches!(error, ConfigError::AdvertiseAddress { .. }), "{message}");
        let (message, _) = config(|c| c.node_id = -2).unwrap_err();
        assert_eq!(message, "node_id = -2: must be 0 or more");
        let (message, error) = config(|c| c.controllers = "1@127.0.0.1:9093,1@127.0.0.1:9094".into()).unwrap_err();
        assert!(matches!(error, ConfigError::DuplicateVoter { node: 1 }), "{message}");
        let (message, error) = config(|c| c.controllers = "one@127.0.0.1:9093".into()).unwrap_err();
        assert!(matches!(error, ConfigError::ControllersEntry { .. }) && message.contains("1@127.0.0.1:9093"));
        let missing = BrokerConfig::from_file(Path::new("/nonexistent/keel.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    }

    #[test]
    fn controller_snapshot_entries_must_be_positive() {
        let cluster = |entries| BrokerConfig {
            node_id: 1,
            controllers: "1@127.0.0.1:9093".to_string(),
            controller_snapshot_entries: entries,
            ..BrokerConfig::default()
        };
        for (entries, valid) in [(0, false), (1, true), (16, true), (4096, true)] {
            assert_eq!(cluster(entries).validate().is_ok(), valid, "controller_snapshot_entries = {entries}");
        }
        let config: BrokerConfig = toml::from_str("controller_snapshot_entries = 16").unwrap();
        assert_eq!(config.controller_snapshot_entries, 16);
        assert_eq!(BrokerConfig::default().controller_snapshot_entries, 4096);
    }
}
