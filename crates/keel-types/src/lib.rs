//! Shared vocabulary for every keel crate: time as a value, epochs and ids as newtypes, and
//! Kafka's error codes.
//!
//! This crate owns no behaviour. It must never do IO, read a clock or hold global state: every
//! other crate, the pure protocol cores included, depends on it.

mod error_code;
mod rng;
mod time;

pub use error_code::ErrorCode;
pub use rng::{Entropy, Rng};
pub use time::{Duration, Instant};

/// A request refused: the Kafka error code a client gets, and a message for people (Kafka's
/// error message fields, and logs). Every layer that refuses a request says so with this type.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal { code, message: message.into() }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({:?})", self.message, self.code)
    }
}

impl std::error::Error for Refusal {}

/// A partition leader epoch, as carried in RecordBatch headers and OffsetForLeaderEpoch.
///
/// Kafka uses -1 ("no epoch") in several places; that is [`LeaderEpoch::UNDEFINED`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// Kafka's `RecordBatch.NO_PARTITION_LEADER_EPOCH` / `UNDEFINED_EPOCH`.
    pub const UNDEFINED: LeaderEpoch = LeaderEpoch(-1);

    pub fn is_defined(self) -> bool {
        self.0 >= 0
    }
}

impl std::fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A producer id handed out by InitProducerId; -1 means "not idempotent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ProducerId(pub i64);

impl ProducerId {
    pub const NONE: ProducerId = ProducerId(-1);
}

/// A producer epoch; -1 means "not idempotent".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct ProducerEpoch(pub i16);

impl ProducerEpoch {
    pub const NONE: ProducerEpoch = ProducerEpoch(-1);
}

/// A broker (node) id, as Kafka's `node.id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub i32);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A broker epoch: the controller's number for one registration of one broker process (Kafka's
/// `brokerEpoch`). A restarted broker registers again and gets a higher one, so a request
/// carrying an old epoch comes from a process that no longer exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct BrokerEpoch(pub i64);

impl BrokerEpoch {
    /// Kafka's `-1` in requests from a broker that has not registered.
    pub const UNKNOWN: BrokerEpoch = BrokerEpoch(-1);
}

impl std::fmt::Display for BrokerEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A partition epoch: bumped by the controller on every change to a partition's registration
/// (leader, ISR, ELR), Kafka's `partitionEpoch`. AlterPartition carries the one it was built on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct PartitionEpoch(pub i32);

impl PartitionEpoch {
    pub fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0 + 1)
    }
}

impl std::fmt::Display for PartitionEpoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A topic id: the UUID the controller gives a topic when it creates it (Kafka's `topicId`),
/// as its 128 bits. A topic deleted and created again under the same name gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct TopicId(pub u128);

impl TopicId {
    /// Kafka's `Uuid.ZERO`: no topic id (requests that name topics by name).
    pub const ZERO: TopicId = TopicId(0);
}

impl std::fmt::Display for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl std::fmt::LowerHex for TopicId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::LowerHex::fmt(&self.0, f)
    }
}

/// Kafka's "no offset" sentinel (`UNDEFINED_EPOCH_OFFSET`, `-1` in ListOffsets answers).
pub const UNDEFINED_OFFSET: i64 = -1;
