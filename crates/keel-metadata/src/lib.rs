//! keel's cluster metadata, as pure code: the records of the controller's Raft log, the image
//! every node replays from them, and the active controller's decisions.
//!
//! - [`records`]: [`MetadataRecord`], one fact each (a broker registered, was fenced, a topic,
//!   a partition's whole state), with a versioned, bounded encoding.
//! - [`image`]: [`MetadataImage`], the state the records describe. [`MetadataImage::apply`] is
//!   the one replay function; brokers, controllers and tests all use it. It encodes whole, for
//!   Raft snapshots.
//! - [`partition`]: the rules every partition change follows: leader election from the ISR,
//!   then the Eligible Leader Replicas (KIP-966), else no leader; ELR and last-known ELR upkeep;
//!   the unclean-shutdown rule; the partition-epoch compare-and-set of AlterPartition. The
//!   controller, the model checker (`keel check isr`) and the simulator all use these
//!   functions, so what is checked is what runs.
//! - [`producer_ids`]: producer-id blocks (KIP-730): the controller hands them out through the
//!   metadata log, so no producer id is ever handed out twice; [`ProducerIdAllocator`] is a
//!   broker's side (hand out ids, ask for the next block in time).
//! - [`controller`]: [`Controller`], the active controller: registration and broker epochs
//!   (clean only when the clean-shutdown marker names the registered epoch, KIP-966),
//!   heartbeats, session expiry and fencing, controlled shutdown, replica placement, topic and
//!   config changes, preferred-leader rebalancing, producer-id blocks. Each decision returns
//!   the records to append and has already applied them to its working image.
//! - [`scram`]: SCRAM credential changes (AlterUserScramCredentials), decided as Kafka's
//!   `ScramControlManager` does; the image keeps the salted keys, never a password.
//! - [`quorum`]: [`QuorumController`], a member of the controller quorum: keel-raft carrying
//!   the metadata log, the applied image, the active [`Controller`] on the caught-up leader,
//!   requests waiting for their records to commit, compaction into snapshots, and the
//!   [`CommittedLog`] brokers fetch; [`MetadataReplay`] is a broker's side of that fetch. The
//!   broker drives it with tokio, keel-sim with simulated time and disks.
//!
//! This crate owns the meaning of the metadata log. It never does IO, reads a clock, spawns
//! threads or draws unseeded randomness: time comes in as [`keel_types::Instant`] arguments and
//! random choices (topic ids, placement) from a caller's [`keel_types::Entropy`]. Appending the
//! records to Raft, waiting for them to commit and answering the caller are the shell's job.

pub mod controller;
pub mod image;
pub mod partition;
pub mod producer_ids;
pub mod quorum;
pub mod records;
pub mod scram;

#[cfg(test)]
mod tests;

pub use controller::{BrokerRegistrationRequest, Controller, ControllerConfig, Decision, HeartbeatReply, Restart};
pub use image::{
    validate_topic_name, BrokerRegistration, MetadataImage, TopicImage, MIN_INSYNC_REPLICAS,
    UNCLEAN_LEADER_ELECTION_ENABLE,
};
pub use partition::{AlterIsr, Eligibility, Mutation, PartitionRegistration};
pub use producer_ids::{ProducerIdAllocator, ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};
pub use quorum::{Answer, CommittedLog, MetadataDelta, MetadataReplay, QuorumConfig, QuorumController};
pub use records::{Endpoint, MetadataRecord};
pub use scram::{alter_scram_credentials, describe_scram_user, ScramAltered, ScramDeletion, ScramUpsertion};
