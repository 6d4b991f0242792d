//! keel's partition replication, as pure state machines: Kafka's design (pull-based followers,
//! leader epochs, high watermark, in-sync replica set) with the strict min-ISR rule that
//! Eligible Leader Replicas (KIP-966) rely on.
//!
//! It owns the decisions, never the bytes:
//!
//! - [`Leader`]: answers followers' fetches (with KIP-320 divergence detection), tracks each
//!   follower's log end offset and lag, advances the high watermark, completes acks=all
//!   produce requests, and asks the controller for ISR changes ([`AlterIsr`], one at a time,
//!   a compare-and-set on the partition epoch).
//! - [`Follower`]: builds fetch requests from its log and says what to do with the answer
//!   (append, truncate to the divergence point, reset, back off, wait for new metadata), and
//!   keeps the follower's high watermark.
//!
//! Neither reads a clock, does IO or draws randomness: `now` comes in with every `handle_*`
//! call, the local log is seen through the small [`LocalLog`] trait (the broker implements it
//! over `keel_storage::Log`; tests and the simulator use [`testing::VecLog`]), and effects are
//! returned as values ([`FetchDecision`], [`FollowerAction`]) or pulled
//! ([`Leader::poll_isr_change`], [`Leader::drain_completed`], `poll_timeout`). Stale or bad
//! input is answered with Kafka's error or ignored, never a panic.
//!
//! [`AlterIsr`]: keel_metadata::AlterIsr

mod config;
mod follower;
mod leader;
mod message;
mod replica;
pub mod testing;

pub use config::{Config, ConfigError, Mutation};
pub use follower::Follower;
pub use leader::{IsrProposal, Leader, MetadataOutcome, ReplicaState};
pub use message::{FetchDecision, FetchRequest, FetchResponse, FollowerAction, WaiterId};
pub use replica::{may_act_on, ConsumerView, Replica, ReplicaLog, Role, RoleChange};

use keel_types::LeaderEpoch;

/// What the replication cores need to know about the local partition log.
///
/// The broker implements it over `keel_storage::Log`; [`testing::VecLog`] implements it over
/// a vector. Offsets are Kafka offsets: the log holds `log_start_offset()..log_end_offset()`.
pub trait LocalLog {
    /// The first offset still in the log.
    fn log_start_offset(&self) -> i64;

    /// One past the last offset written (LEO).
    fn log_end_offset(&self) -> i64;

    /// The latest leader epoch in the log's epoch cache, if it has any entry.
    fn latest_epoch(&self) -> Option<LeaderEpoch>;

    /// Kafka's OffsetForLeaderEpoch answer, as `keel_storage::Log::end_offset_for_epoch`
    /// gives it: the largest epoch at or below `epoch` that the log knows, and the start offset
    /// of the next higher epoch (the log end offset if `epoch` is the latest). When `epoch` is
    /// older than every entry, `epoch` itself and the first entry's start. `None` where
    /// keel-storage answers `(UNDEFINED, -1)`: an undefined epoch, an empty cache, or an epoch
    /// newer than the latest.
    fn end_offset_for_epoch(&self, epoch: LeaderEpoch) -> Option<(LeaderEpoch, i64)>;
}
