//! Configuration of one replica of one partition, validated once at construction.

use std::fmt;

use keel_types::{Duration, NodeId};

/// How one broker replicates one partition. Kafka's names and defaults, with units in the names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// This broker.
    pub id: NodeId,
    /// The topic's `min.insync.replicas`: acks=all needs this many ISR members, and the high
    /// watermark advances only while the ISR has at least this many.
    pub min_isr: usize,
    /// Kafka's `replica.lag.time.max.ms`: a follower that has not caught up with the leader for
    /// longer than this leaves the ISR.
    pub replica_lag_time_max: Duration,
    /// How long the leader waits before sending an ISR change again after the controller
    /// failed it with a retriable error or rejected an addition (`INELIGIBLE_REPLICA`).
    pub isr_change_retry_backoff: Duration,
    /// Kafka's `replica.fetch.backoff.ms`: how long a follower waits after a failed fetch.
    pub fetch_backoff: Duration,
    /// A planted bug, for the checker and simulator tests that must catch it; `None` always in
    /// the broker.
    pub mutation: Option<Mutation>,
}

/// A deliberately planted bug in the leader's rules. Each removes one check the design says
/// is needed; the checker (`keel check isr`), the simulator or a unit test must fail with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mutation {
    /// ISR expansion ignores the start offset of the leader's epoch: a new leader's high
    /// watermark may be stale, so reaching it does not prove a follower holds what is acked.
    ExpandBelowEpochStart,
    /// The leader keeps what it learned of a follower across the follower's restart (no
    /// broker-epoch check, as before Kafka's KIP-903), so it can vouch for a log a crash has
    /// since cut back.
    KeepFollowerStateOnRestart,
    /// The leader skips the KIP-320 divergence check: a follower with a divergent tail is
    /// never told to truncate it.
    NoDivergenceCheck,
    /// The high watermark advances whatever the ISR's size (no strict min ISR, KIP-966).
    IgnoreMinIsr,
    /// The leader vouches for a follower whose records all lie below its log start, where its
    /// epoch cache knows nothing (Kafka's answer): a divergent record there survives, and with
    /// it the producer state it left.
    TrustBelowLogStart,
}

/// Why a configuration or a role could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Kafka's defaults: min ISR 1, a follower leaves the ISR after 30 s without catching up,
    /// fetches back off 1 s after an error, ISR changes are retried after 50 ms.
    pub fn new(id: NodeId) -> Config {
        Config {
            id,
            min_isr: 1,
            replica_lag_time_max: Duration::from_secs(30),
            isr_change_retry_backoff: Duration::from_millis(50),
            fetch_backoff: Duration::from_millis(1000),
            mutation: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.min_isr == 0 {
            return Err(ConfigError(
                "min.insync.replicas must be at least 1: with 0 the high watermark would not need the leader".into(),
            ));
        }
        if self.replica_lag_time_max == Duration::ZERO {
            return Err(ConfigError(
                "replica.lag.time.max.ms must be positive, or every follower leaves the ISR at once; Kafka's default is 30000"
                    .into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let ok = Config::new(NodeId(1));
        assert_eq!(ok.validate(), Ok(()));
        let table = [
            (Config { min_isr: 0, ..ok.clone() }, "min.insync.replicas"),
            (Config { replica_lag_time_max: Duration::ZERO, ..ok.clone() }, "replica.lag.time.max.ms"),
        ];
        for (config, mentions) in table {
            let error = config.validate().expect_err(mentions);
            assert!(error.0.contains(mentions), "{error}");
        }
    }
}
