//! The partition follower: Kafka's fetcher rules for one partition (`AbstractFetcherThread`
//! with truncation on fetch, KIP-320).
//!
//! The follower fetches from its log end offset with the epoch of its last record. When the
//! leader answers with a diverging epoch, it truncates to the smaller of the leader's end
//! offset for that epoch and its own (KIP-101), in several rounds if its epochs differ from the
//! leader's. Its high watermark is `min(leader's high watermark, own log end offset)` and, in
//! keel, never moves back except when the log itself is cut below it (which only an unclean
//! leader election can cause): a new leader may still report an older high watermark than the
//! one this follower learned from its predecessor, and everything below that one is committed.

use keel_metadata::PartitionRegistration;
use keel_types::{ErrorCode, Instant, LeaderEpoch, NodeId};

use crate::config::{Config, ConfigError};
use crate::message::{FetchRequest, FetchResponse, FollowerAction};
use crate::LocalLog;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Status {
    Fetching,
    BackingOff {
        until: Instant,
    },
    /// Fenced: only new metadata (a new role) gets this partition fetching again.
    AwaitingMetadata,
}

/// A follower of one partition, fetching from one leader in one leader epoch. A new leader or
/// leader epoch is a new `Follower`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Follower {
    config: Config,
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    high_watermark: i64,
    /// The leader's high watermark from the last accepted records, applied (up to the log end)
    /// once the broker reports the log updated. Forgotten when the log is cut.
    leader_high_watermark: Option<i64>,
    status: Status,
}

impl Follower {
    /// Starts following the leader `registration` names, with the high watermark this replica
    /// had (clamped into the log).
    pub fn new(
        config: Config,
        registration: &PartitionRegistration,
        log: &impl LocalLog,
        high_watermark: i64,
    ) -> Result<Follower, ConfigError> {
        config.validate()?;
        let id = config.id;
        let Some(leader) = registration.leader.filter(|&l| l != id) else {
            return Err(ConfigError(format!(
                "broker {id} cannot follow a partition whose registration names leader {:?}",
                registration.leader
            )));
        };
        if !registration.replicas.contains(&id) {
            return Err(ConfigError(format!("broker {id} is not a replica {:?}", registration.replicas)));
        }
        // Leader epochs only grow: a log holding a newer epoch than the registration was
        // written under a later leader, so the registration is stale metadata, and following
        // it could truncate records that later epoch committed.
        if let Some(latest) = log.latest_epoch().filter(|e| *e > registration.leader_epoch) {
            return Err(ConfigError(format!(
                "broker {id} will not follow epoch {} (stale metadata): its log holds epoch {latest}",
                registration.leader_epoch
            )));
        }
        let mut follower = Follower {
            config,
            leader,
            leader_epoch: registration.leader_epoch,
            high_watermark,
            leader_high_watermark: None,
            status: Status::Fetching,
        };
        follower.clamp_high_watermark(log);
        Ok(follower)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn leader(&self) -> NodeId {
        self.leader
    }

    pub fn leader_epoch(&self) -> LeaderEpoch {
        self.leader_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// Whether the leader fenced this follower's epoch: it waits for new metadata.
    pub fn is_awaiting_metadata(&self) -> bool {
        self.status == Status::AwaitingMetadata
    }

    /// The fetch to send now: from the log end, with the epoch of the last record. `None` while
    /// backing off or fenced. The broker sends one at a time per partition.
    pub fn next_fetch(&mut self, now: Instant, log: &impl LocalLog) -> Option<FetchRequest> {
        match self.status {
            Status::AwaitingMetadata => return None,
            Status::BackingOff { until } if now < until => return None,
            Status::BackingOff { .. } => self.status = Status::Fetching,
            Status::Fetching => {}
        }
        Some(FetchRequest {
            replica: self.config.id,
            fetch_offset: log.log_end_offset(),
            last_fetched_epoch: log.latest_epoch(),
            current_leader_epoch: Some(self.leader_epoch),
            broker_epoch: None,
        })
    }

    /// The leader's answer to `request`. An answer to a request this follower would no longer
    /// send (another leader epoch, or a log that changed since) is [`FollowerAction::Stale`].
    ///
    /// - Records: append them (if any); the high watermark follows once the broker calls
    ///   [`Follower::handle_log_updated`].
    /// - Diverging `(epoch, end_offset)`: if this log has `epoch`, truncate to the smaller of
    ///   `end_offset` and this log's end of `epoch`; if it does not, truncate to the end of its
    ///   largest epoch below, and the next fetch compares again (Kafka's
    ///   `getOffsetTruncationState`).
    /// - Offset out of range: beyond the leader's end, truncate to it; before the leader's
    ///   start, restart the log empty at the leader's start (Kafka's `handleOutOfRangeError`),
    ///   and also at it (keel: the leader answers so when it cannot compare the records this
    ///   log holds below its start, see [`crate::Leader::handle_fetch`]).
    /// - `FENCED_LEADER_EPOCH`: this epoch is over; wait for metadata. Any other error (the
    ///   leader does not know the epoch yet, is not the leader any more, ...): back off.
    pub fn handle_fetch_response(
        &mut self,
        now: Instant,
        request: &FetchRequest,
        response: FetchResponse,
        log: &impl LocalLog,
    ) -> FollowerAction {
        let log_end_offset = log.log_end_offset();
        if self.status == Status::AwaitingMetadata
            || request.replica != self.config.id
            || request.current_leader_epoch != Some(self.leader_epoch)
            || request.fetch_offset != log_end_offset
            || request.last_fetched_epoch != log.latest_epoch()
        {
            return FollowerAction::Stale;
        }
        match response {
            FetchResponse::Records { high_watermark, records_end, .. } => {
                if records_end < request.fetch_offset {
                    return self.back_off(now);
                }
                self.leader_high_watermark = Some(high_watermark);
                if records_end == request.fetch_offset {
                    self.handle_log_updated(now, log);
                    FollowerAction::Continue
                } else {
                    FollowerAction::Append
                }
            }
            FetchResponse::Diverging { epoch, end_offset } => {
                let offset = if !epoch.is_defined() || end_offset < 0 {
                    // The leader knows no epoch at or below ours (Kafka: fall back to the high
                    // watermark, then let an out-of-range answer settle the rest).
                    self.high_watermark
                } else {
                    match log.end_offset_for_epoch(epoch) {
                        Some((own_epoch, own_end)) if own_epoch == epoch => own_end.min(end_offset),
                        // This log lacks `epoch`: cut back to the end of its largest epoch
                        // below and compare again.
                        Some((_, own_end)) => own_end,
                        None => end_offset,
                    }
                };
                self.truncate(offset, log)
            }
            FetchResponse::OffsetOutOfRange { log_start_offset, log_end_offset: leader_end } => {
                if leader_end < log_end_offset {
                    self.truncate(leader_end, log)
                } else if log_start_offset >= log_end_offset {
                    // Beyond this log's end, or at it when the leader cannot compare what
                    // this log holds below its start: start over there.
                    self.leader_high_watermark = None;
                    FollowerAction::ResetTo { offset: log_start_offset }
                } else {
                    // The leader's log moved between the fetch and the answer; just fetch again.
                    FollowerAction::Continue
                }
            }
            FetchResponse::Error(ErrorCode::FencedLeaderEpoch) => {
                self.status = Status::AwaitingMetadata;
                FollowerAction::AwaitMetadata
            }
            FetchResponse::Error(_) => self.back_off(now),
        }
    }

    /// The broker carried out [`FollowerAction::Append`], [`FollowerAction::Truncate`] or
    /// [`FollowerAction::ResetTo`]: the high watermark follows the log (down only if the log
    /// was cut below it; up to `min(leader's high watermark, log end)` after records).
    pub fn handle_log_updated(&mut self, _now: Instant, log: &impl LocalLog) {
        if let Some(leader_high_watermark) = self.leader_high_watermark {
            self.high_watermark = self.high_watermark.max(leader_high_watermark.min(log.log_end_offset()));
        }
        self.clamp_high_watermark(log);
    }

    /// A fetch failed without an answer (a network error or timeout): back off.
    pub fn handle_fetch_failed(&mut self, now: Instant) {
        if self.status != Status::AwaitingMetadata {
            self.status = Status::BackingOff { until: now + self.config.fetch_backoff };
        }
    }

    /// When [`Follower::next_fetch`] may return a fetch again after a backoff.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.status {
            Status::BackingOff { until } => Some(until),
            Status::Fetching | Status::AwaitingMetadata => None,
        }
    }

    /// Checks what must hold after every step the broker completed (actions carried out).
    pub fn check_invariants(&self, log: &impl LocalLog) -> Result<(), String> {
        let id = self.config.id;
        if self.leader == id {
            return Err(format!("follower {id} follows itself"));
        }
        let (start, end) = (log.log_start_offset(), log.log_end_offset());
        if self.high_watermark > end || self.high_watermark < start.min(end) {
            return Err(format!(
                "follower {id}: high watermark {} outside its log {start}..={end}",
                self.high_watermark
            ));
        }
        Ok(())
    }

    fn back_off(&mut self, now: Instant) -> FollowerAction {
        let until = now + self.config.fetch_backoff;
        self.status = Status::BackingOff { until };
        FollowerAction::Backoff { until }
    }

    /// Cuts the log at `offset` (never below its start), if that removes anything.
    fn truncate(&mut self, offset: i64, log: &impl LocalLog) -> FollowerAction {
        let offset = offset.max(log.log_start_offset());
        if offset >= log.log_end_offset() {
            return FollowerAction::Continue;
        }
        self.leader_high_watermark = None;
        FollowerAction::Truncate { offset }
    }

    /// Keeps the high watermark within the log: at most its end, at least its start.
    fn clamp_high_watermark(&mut self, log: &impl LocalLog) {
        let end = log.log_end_offset();
        self.high_watermark = self.high_watermark.min(end).max(log.log_start_offset().min(end));
    }
}
