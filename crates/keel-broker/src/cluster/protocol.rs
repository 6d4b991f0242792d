//! What keel nodes say to each other on the cluster port.

use std::collections::BTreeMap;

use keel_metadata::{AlterIsr, PartitionRegistration, ProducerIdBlock, ScramDeletion, ScramUpsertion};
use keel_raft::Message;
use keel_types::{BrokerEpoch, NodeId, TopicId};
use serde::{Deserialize, Serialize};

/// One frame on the cluster port.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Frame {
    /// A one-way Raft message between controllers.
    Raft { from: NodeId, to: NodeId, message: Message },
    /// A call; the answer is a [`Response`] frame on the same connection.
    Request(Request),
}

/// A listener of a broker, as registered.
pub use keel_metadata::Endpoint as Listener;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// A broker starts: it gets a new broker epoch and stays fenced until it has caught up.
    RegisterBroker {
        node: NodeId,
        listeners: Vec<Listener>,
        rack: Option<String>,
        /// The broker epoch named by the clean-shutdown marker the broker found (KIP-966's
        /// previousBrokerEpoch); `None` without one.
        previous_broker_epoch: Option<BrokerEpoch>,
        /// Random, drawn once per broker process (Kafka's incarnation id).
        process_id: u128,
        incarnation: u64,
    },
    /// A broker is alive. `metadata_index` is how far it has replayed the metadata log;
    /// `caught_up` that it has replayed its own registration (it may then be unfenced).
    Heartbeat {
        node: NodeId,
        broker_epoch: BrokerEpoch,
        metadata_index: u64,
        caught_up: bool,
        want_shutdown: bool,
        /// A broker-only node's membership view, for `keel cluster status` (empty from a
        /// controller node, which answers with its own).
        membership: Vec<ViewEntry>,
    },
    /// A partition leader's ISR change.
    AlterPartition {
        node: NodeId,
        broker_epoch: BrokerEpoch,
        topic_id: TopicId,
        partition: i32,
        change: AlterIsr,
        /// The replicas the change adds to the ISR, each with the broker epoch it fetched with
        /// (KIP-903).
        added: Vec<(NodeId, BrokerEpoch)>,
    },
    /// A broker needs a block of producer ids (KIP-730's AllocateProducerIds); only its
    /// current registration may ask.
    AllocateProducerIds {
        node: NodeId,
        broker_epoch: BrokerEpoch,
    },
    CreateTopic {
        name: String,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        /// Replicas by partition, given by the client; empty: the controller places them.
        assignment: Vec<Vec<NodeId>>,
    },
    DeleteTopic {
        name: String,
    },
    CreatePartitions {
        name: String,
        total: i32,
        /// Replicas of each new partition, given by the client; empty: the controller places
        /// them.
        assignment: Vec<Vec<NodeId>>,
    },
    AlterConfigs {
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// Committed metadata after `after` (a Raft index), waiting up to `max_wait_ms` for some.
    FetchMetadata {
        after: u64,
        max_wait_ms: u32,
    },
    /// This controller's view, for `keel cluster status`.
    Status,
    /// AlterUserScramCredentials.
    AlterScramCredentials {
        deletions: Vec<ScramDeletion>,
        upsertions: Vec<ScramUpsertion>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    /// This node is not the active controller; `leader` is who it thinks is.
    NotController {
        leader: Option<NodeId>,
    },
    /// A Kafka error code and a message for people.
    Error {
        code: i16,
        message: String,
    },
    Registered {
        broker_epoch: BrokerEpoch,
        metadata_index: u64,
    },
    Heartbeat {
        fenced: bool,
        should_shut_down: bool,
    },
    AlterPartition {
        registration: PartitionRegistration,
    },
    TopicCreated {
        topic_id: TopicId,
    },
    /// A block of producer ids, recorded in the metadata log: no other broker gets any of it.
    ProducerIds {
        block: ProducerIdBlock,
    },
    Done,
    Metadata {
        /// A snapshot of the whole image when the records after `after` were compacted away:
        /// (index, encoded image).
        snapshot: Option<(u64, Vec<u8>)>,
        /// Committed entries: (Raft index, encoded records).
        records: Vec<(u64, Vec<u8>)>,
    },
    Status(ControllerStatus),
    /// What each user named in an AlterScramCredentials got: a Kafka error code (0: done) and
    /// a message.
    ScramAltered {
        results: Vec<(String, i16, String)>,
    },
}

/// One controller's view of the quorum and the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerStatus {
    pub node: NodeId,
    pub role: String,
    pub term: u64,
    pub leader: Option<NodeId>,
    pub commit_index: u64,
    pub applied_index: u64,
    pub voters: Vec<NodeId>,
    pub replication_quorum: usize,
    pub election_quorum: usize,
    /// The encoded committed image, so the caller can show brokers and partitions.
    pub image: Vec<u8>,
    /// This node's membership view.
    pub membership: Vec<ViewEntry>,
    /// The views broker-only nodes sent with their heartbeats to this node while it was the
    /// active controller: (broker, milliseconds since that heartbeat, view).
    pub reported: Vec<(NodeId, u64, Vec<ViewEntry>)>,
}

/// One record of a membership view: (node, address, incarnation, status).
pub type ViewEntry = (NodeId, String, u64, String);

/// A view as the cluster protocol carries it.
pub fn view_entries(members: &[keel_gossip::Member]) -> Vec<ViewEntry> {
    members.iter().map(|m| (m.id, m.address.0.clone(), m.incarnation.0, m.status.to_string())).collect()
}
