//! What leaders and followers exchange, and what the cores ask the broker to do.

use keel_types::{BrokerEpoch, ErrorCode, Instant, LeaderEpoch, NodeId};

/// A follower's fetch for one partition (the replication fields of Kafka's Fetch v12+).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchRequest {
    /// The fetching replica (Kafka's `ReplicaId` / `ReplicaState.ReplicaId`).
    pub replica: NodeId,
    /// Where to read from: the follower's log end offset.
    pub fetch_offset: i64,
    /// The epoch of the last record in the follower's log (Kafka's `LastFetchedEpoch`), `None`
    /// if its epoch cache is empty. The leader checks it for divergence before answering.
    pub last_fetched_epoch: Option<LeaderEpoch>,
    /// The leader epoch the follower believes in (Kafka's `CurrentLeaderEpoch`); `None` skips
    /// the check, as Kafka does for requests without it.
    pub current_leader_epoch: Option<LeaderEpoch>,
    /// The broker epoch of the fetching process (Fetch v15's `ReplicaState.ReplicaEpoch`),
    /// `None` from older fetchers. What the leader learns from a fetch belongs to that process
    /// (KIP-903): an ISR addition vouches for it by this epoch.
    pub broker_epoch: Option<BrokerEpoch>,
}

/// The leader's decision about a fetch. The broker turns it into a response: for
/// [`FetchDecision::Read`] it reads whole batches from `fetch_offset` up to the log end (a
/// follower reads past the high watermark) within its size limit; see
/// [`FetchDecision::response`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchDecision {
    Read {
        fetch_offset: i64,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// The follower's log diverges from the leader's (KIP-320's `DivergingEpoch`): `epoch` is
    /// the largest leader epoch at or below the follower's last fetched epoch, and the leader's
    /// log leaves it at `end_offset`. No records are sent.
    Diverging {
        epoch: LeaderEpoch,
        end_offset: i64,
        high_watermark: i64,
        log_start_offset: i64,
    },
    /// `OFFSET_OUT_OF_RANGE`, with the leader's bounds so the follower can repair without a
    /// ListOffsets round trip.
    OffsetOutOfRange {
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// Any other refusal: `NOT_LEADER_OR_FOLLOWER`, `FENCED_LEADER_EPOCH`,
    /// `UNKNOWN_LEADER_EPOCH`.
    Error(ErrorCode),
}

impl FetchDecision {
    /// The response a follower receives for this decision; `records_end` is the offset after
    /// the last record the broker read for [`FetchDecision::Read`] (the fetch offset if none).
    pub fn response(&self, records_end: i64) -> FetchResponse {
        match *self {
            FetchDecision::Read { high_watermark, log_start_offset, .. } => {
                FetchResponse::Records { high_watermark, log_start_offset, records_end }
            }
            FetchDecision::Diverging { epoch, end_offset, .. } => FetchResponse::Diverging { epoch, end_offset },
            FetchDecision::OffsetOutOfRange { log_start_offset, log_end_offset } => {
                FetchResponse::OffsetOutOfRange { log_start_offset, log_end_offset }
            }
            FetchDecision::Error(error) => FetchResponse::Error(error),
        }
    }

    /// The Kafka error code of the partition response.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FetchDecision::Read { .. } | FetchDecision::Diverging { .. } => ErrorCode::None,
            FetchDecision::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            FetchDecision::Error(error) => *error,
        }
    }
}

/// A fetch response as the follower sees it (records themselves stay with the broker).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FetchResponse {
    /// Records from the request's fetch offset up to `records_end` (equal to the fetch offset
    /// when there was nothing new).
    Records {
        high_watermark: i64,
        log_start_offset: i64,
        records_end: i64,
    },
    Diverging {
        epoch: LeaderEpoch,
        end_offset: i64,
    },
    OffsetOutOfRange {
        log_start_offset: i64,
        log_end_offset: i64,
    },
    Error(ErrorCode),
}

/// What a follower's broker must do after a fetch response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FollowerAction {
    /// Nothing to change in the log; fetch again.
    Continue,
    /// Append the fetched batches (keeping their offsets and epochs), then call
    /// [`Follower::handle_log_updated`](crate::Follower::handle_log_updated).
    Append,
    /// Remove every record at or after `offset` (`Log::truncate_to`), then call
    /// [`Follower::handle_log_updated`](crate::Follower::handle_log_updated).
    Truncate { offset: i64 },
    /// Delete the whole log and restart it, empty, at `offset` (the leader's log start moved
    /// past this log's end; Kafka's `truncateFullyAndStartAt`), then call
    /// [`Follower::handle_log_updated`](crate::Follower::handle_log_updated).
    ResetTo { offset: i64 },
    /// The leader could not answer; do not fetch before `until`.
    Backoff { until: Instant },
    /// This follower's leader epoch is stale (`FENCED_LEADER_EPOCH`): stop fetching until new
    /// metadata replaces it with a new role.
    AwaitMetadata,
    /// The response answered an older request (another epoch, or a log that changed since):
    /// ignore it.
    Stale,
}

/// An acks=all produce request waiting for the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WaiterId(pub u64);
