//! The cluster simulation: brokers running keel-replication's real [`Replica`] engine (its
//! `Leader` and `Follower` cores) for every partition replica over keel-storage's real `Log`
//! on a crash-simulating disk per broker, a controller quorum of keel-metadata's real
//! [`QuorumController`](keel_metadata::QuorumController) members (keel-raft carrying the
//! metadata log, the active [`Controller`] deciding) on the first brokers, an idempotent
//! acks=all producer and a consumer per partition, on simulated time.
//!
//! Each broker's disk is a `CrashBackend`: logs are never fsynced on the write path
//! (`flush.policy=never`); the simulated OS writes them back now and then (`Log::flush`). A
//! lossy crash keeps the disk's crash image (synced data, and a random part of the rest, the
//! last write possibly torn) and recovers every log from it with `Log::open`; a clean stop
//! closes every log (`Log::close`) and opens it again on restart; a disk swap starts from an
//! empty disk. Idempotence is the log's producer state: a retry is answered as a duplicate.
//!
//! The controller quorum runs in combined mode, as keel does (a node runs the broker role, or
//! the broker and controller roles; there is no controller-only process): brokers 1..=N
//! (three by default) are also voters, and a crash, a clean stop or a power loss stops both
//! roles at once. Each voter keeps its Raft state in a simulated durable store
//! (`raft::store::RaftStore`, shared with `keel sim raft`): writes complete after a simulated
//! disk latency, a crash keeps a random prefix of the unsynced ones (the next possibly torn),
//! and a restart reads what is synced, snapshot included (the log is compacted every 2-8
//! applied entries, so restarts from a snapshot happen in most seeds). Voters talk Raft over
//! the same lossy, duplicating, partitioned network as everything else (see [`quorum`]).
//!
//! Everything else is asynchronous too: brokers send controller requests to the voter they
//! believe active, follow NOT_CONTROLLER hints, and move on to the next voter when a request
//! goes unanswered; they poll committed metadata (a snapshot when they are behind it, then
//! entries: `CommittedLog::after`) from their own controller, or a voter on a broker-only
//! node, and replay it with `MetadataReplay`, so a broker may act on old metadata for a
//! while (a zombie leader); followers fetch from leaders, leaders ask the controller for ISR
//! changes, brokers heartbeat, and the controller fences a broker whose session expires.
//!
//! The harness's event queue (see [`crate::harness`]), ordered by (time, sequence number),
//! drives it all; after every event the cores' own invariants and the oracle's checks run (see
//! [`oracle`]).

mod log;
mod oracle;
mod quorum;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use keel_metadata::{
    AlterIsr, Answer, BrokerRegistrationRequest, Controller, ControllerConfig, MetadataDelta, MetadataImage,
    MetadataRecord, MetadataReplay, Mutation, QuorumConfig,
};
use keel_metadata::{PartitionRegistration, ProducerIdAllocator, MIN_INSYNC_REPLICAS};
use keel_raft::{Durable, LogIndex, Snapshot, Term};
use keel_replication::{
    may_act_on, Config as ReplicaConfig, FetchDecision, FetchRequest, FetchResponse, FollowerAction, LocalLog, Replica,
    Role, RoleChange, WaiterId,
};
use keel_storage::backend::CrashBackend;
use keel_storage::{AppendError, LogConfig, ReadError, RecoveryReport};
use keel_types::{BrokerEpoch, Duration, ErrorCode, Instant, LeaderEpoch, NodeId, Rng, TopicId};

use crate::harness::{
    self, draw_fault_interval_ms_mean, draw_fault_kinds, fork, ms, Failure, Harness, Phase, Scenario, SimReport,
    Streams,
};
use crate::network::{
    cut_both, cut_one_way_at_random, isolate, show_links, show_side, split, Links, Network, NetworkFaults,
};
use crate::raft::store::RaftStore;
use crate::trace::Trace;
use log::{log_config, producer_batch, records_in, SimLog};
use oracle::Oracle;
use quorum::{Call, CommittedView, Decided, Token, Voter, CONTROLLER_TICK, METADATA_ENTRIES_MAX};

/// Most brokers a simulated cluster may have.
pub const BROKERS_MAX: usize = 7;
/// Most partitions of the simulated topic.
pub const PARTITIONS_MAX: usize = 8;

const TOPIC: &str = "t";
/// The simulated wall clock at time zero (milliseconds since the Unix epoch), so record
/// timestamps look like a producer's and an old one is still positive.
const WALL_CLOCK_START_MS: i64 = 1_700_000_000_000;
/// Most events one run may take.
const EVENTS_MAX: u64 = 5_000_000;
/// Most messages on the wire at once; beyond it the network drops, as a full buffer would.
const IN_FLIGHT_MAX: usize = 20_000;
/// How often a broker's replica manager runs (leader ticks, fetch timeouts, flushes).
const BROKER_TICK: Duration = Duration(5_000_000);
/// A leader holds a follower's fetch that finds nothing new for at most this long (Kafka's
/// `replica.fetch.wait.max.ms`), answering it as soon as a producer appends.
const FETCH_WAIT_MAX: Duration = Duration(200_000_000);
/// Most fetches a leader holds per partition.
const PARKED_MAX: usize = 16;
/// A fetch with no answer in this long counts as failed.
const FETCH_TIMEOUT: Duration = Duration(500_000_000);
/// Most bytes one follower fetch returns (Kafka's `replica.fetch.max.bytes`; at least one whole
/// batch is returned): about 32 of the simulation's one-record batches.
const FETCH_BYTES_MAX: usize = 32 * 80;
const HEARTBEAT_INTERVAL: Duration = Duration(250_000_000);
const METADATA_POLL: Duration = Duration(20_000_000);
const METADATA_TIMEOUT: Duration = Duration(500_000_000);
const REGISTER_RETRY: Duration = Duration(300_000_000);
/// A broker asks again this soon after a controller that knows of no active controller.
const NO_CONTROLLER_BACKOFF: Duration = Duration(50_000_000);
const ALTER_ISR_TIMEOUT: Duration = Duration(1_000_000_000);
/// Controller elections start after 750-1500 ms without a leader (the broker's
/// `controller_election_timeout_ms` default).
const CONTROLLER_ELECTION_TIMEOUT_MS: u64 = 750;
/// The most voters the quorum gets by default.
const CONTROLLERS_DEFAULT_MAX: usize = 3;
/// acks=all requests time out at the leader after this.
const PRODUCE_TIMEOUT: Duration = Duration(1_000_000_000);
/// The producer resends a request with no answer after this.
const PRODUCE_RETRY: Duration = Duration(1_500_000_000);
const CLIENT_BACKOFF_MS_MAX: u64 = 50;
/// A producer asks another broker for a producer id after this without an answer.
const INIT_PRODUCER_ID_TIMEOUT: Duration = Duration(1_000_000_000);
/// A broker's request for a block of producer ids fails after this without an answer (the
/// broker's `BLOCK_REQUEST_TIMEOUT`), and is not sent again for the back-off.
const PRODUCER_ID_BLOCK_TIMEOUT: Duration = Duration(5_000_000_000);
const PRODUCER_ID_BLOCK_BACKOFF: Duration = Duration(200_000_000);
/// A producer with nothing in flight is replaced by a new one (which asks for a new producer
/// id) at a client step with a chance of one in this many: every 100-odd records.
const PRODUCER_REPLACED_ONE_IN: u64 = 256;
const CONSUMER_TIMEOUT: Duration = Duration(1_000_000_000);
/// Most bytes one consumer fetch returns (Kafka's `max.partition.fetch.bytes`): about 64 of the
/// simulation's one-record batches.
const CONSUMER_BYTES_MAX: usize = 64 * 80;
/// A controlled shutdown that has not been granted in this long stops anyway (flushed, so
/// still clean).
const CONTROLLED_SHUTDOWN_MAX: Duration = Duration(5_000_000_000);
/// The longest simulated run accepted: one day.
const RUN_MS_MAX: u64 = 24 * 60 * 60 * 1000;

/// A planted bug the simulation should find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterMutation {
    /// keel-metadata's [`Mutation::NoElr`]: Kafka before KIP-966. The last ISR member stays
    /// in the ISR whatever its disk lost and is elected again.
    NoElr,
    /// The follower's broker leaves its last fetched epoch out of fetches (a fetcher without
    /// KIP-320), so the leader never reports a divergence and the follower never truncates a
    /// tail it should have cut: it appends the leader's records after its own.
    NoTruncate,
    /// The broker acts on every replayed image, not only once it holds this process's own
    /// registration, and its followers fetch before registering (without a broker epoch):
    /// the cluster shell before issue 17's fix (finding F1).
    NoMetadataGate,
    /// A broker that returns on an empty data directory registers as cleanly shut down (the
    /// rule before issue 17's fix, finding F2: a fresh directory counted as clean), so it keeps
    /// its ELR membership and may be elected with an empty log.
    FreshDirectoryIsClean,
    /// With the metadata log on the data disk, a voter back on a replaced disk trusts its
    /// empty Raft state (keel-raft's `TrustLostState`: keel before its recovery rule), so it
    /// may help elect a leader that lacks committed metadata. Implies
    /// [`ClusterSimOptions::metadata_on_data_disk`] even where it is turned off.
    TrustLostState,
    /// The broker's maintenance passes its log end offset as the retention bound instead of
    /// the replica engine's (the rule before issue 17's fix, finding F6), so retention deletes
    /// records no follower holds yet and acks=all can succeed for records no replica holds.
    RetentionIgnoresHighWatermark,
    /// keel-replication's `TrustBelowLogStart`: a leader vouches for a follower whose records
    /// all lie below its log start, as Kafka's epoch cache answers, so a record an old leader
    /// wrote there and never committed survives with the producer state it left.
    TrustBelowLogStart,
}

/// What to simulate. [`ClusterSimOptions::new`] gives the defaults CI sweeps with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSimOptions {
    pub seed: u64,
    pub brokers: usize,
    pub partitions: usize,
    pub replication_factor: usize,
    pub min_isr: usize,
    /// Simulated time with faults and a producer writing.
    pub safety_ms: u64,
    /// Then faults stop: within this much simulated time every partition with a live ISR or
    /// ELR member must have a leader and every acknowledged record must reach every replica.
    pub liveness_ms: u64,
    /// Kafka's `broker.session.timeout.ms`.
    pub session_timeout_ms: u64,
    /// Kafka's `replica.lag.time.max.ms`.
    pub replica_lag_time_max_ms: u64,
    /// Voters of the controller quorum, in combined mode on brokers 1..=N; `None`: three, or
    /// every broker if there are fewer.
    pub controllers: Option<usize>,
    /// The controllers compact their Raft log into a snapshot every this many applied entries;
    /// `None`: each seed draws 2 to 8, so snapshots, InstallSnapshot and restarts from a
    /// snapshot happen in most runs.
    pub controller_snapshot_entries: Option<u64>,
    /// A voter keeps its Raft state on the broker's data disk, as `keel serve` keeps
    /// `__cluster_metadata` in the data directory: a disk swap on a voter wipes its term, vote
    /// and log, and it recovers them from the other voters (docs/raft.md). On by default, as
    /// the broker runs; off, a disk swap takes only the partition logs.
    pub metadata_on_data_disk: bool,
    pub faults: ClusterFaultOptions,
    pub mutation: Option<ClusterMutation>,
    /// KIP-903 in the simulated brokers and controller: fetches carry the follower's broker
    /// epoch, an AlterPartition carries the broker epoch of each replica it adds, and the
    /// controller refuses one whose epoch is not the current registration. keel-replication's
    /// `Leader` and keel-metadata's `AlterIsr` have no broker epochs, so without this a leader
    /// re-admits a restarted follower on what its previous incarnation fetched (see
    /// docs/simulator.md). On by default; off reproduces the gap.
    pub broker_epoch_check: bool,
    pub record_trace: bool,
}

/// Which faults the safety phase injects; each seed draws its own mix and rates up to these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFaultOptions {
    pub network_delay_ms_max: u64,
    pub message_loss_percent_max: u64,
    pub message_duplicate_percent_max: u64,
    /// Messages delayed 5-20 times longer than usual (late metadata, late fetch answers).
    pub delay_spike_percent_max: u64,
    /// A broker crashes and loses a random part of its unflushed tail, then restarts without
    /// its clean-shutdown marker.
    pub lossy_crashes: bool,
    /// A broker shuts down cleanly (controlled shutdown, flush, marker) and restarts.
    pub clean_restarts: bool,
    /// Every broker crashes at once.
    pub power_loss: bool,
    pub partitions: bool,
    /// A broker's flushes take 50-800 ms for a while.
    pub slow_disks: bool,
    /// A broker stops replaying metadata for a while, so it acts on an old registration.
    pub metadata_stalls: bool,
    /// A broker crashes and comes back with an empty data directory (a replaced disk): it
    /// registers unclean, since it has no clean-shutdown marker.
    pub disk_swaps: bool,
    /// Every broker shuts down cleanly at once (controlled shutdowns that cannot all move
    /// leadership away), then all restart.
    pub cluster_restarts: bool,
    /// The operator sets the topic's `min.insync.replicas` to a random value from 1 to the
    /// replication factor, while ISR changes are in flight.
    pub min_isr_changes: bool,
    /// Each seed draws its retention (none, `retention.ms`, `retention.bytes` or both) over
    /// small segments, and its producers sometimes write records whose CreateTime is older
    /// than `retention.ms`; every broker runs its log maintenance (retention, then a recovery
    /// checkpoint) periodically, whatever else goes on.
    pub retention: bool,
    pub fault_interval_ms_mean: u64,
    /// Each seed switches off a random subset of the fault kinds above.
    pub swarm: bool,
}

impl ClusterFaultOptions {
    pub fn none() -> ClusterFaultOptions {
        ClusterFaultOptions {
            network_delay_ms_max: 1,
            message_loss_percent_max: 0,
            message_duplicate_percent_max: 0,
            delay_spike_percent_max: 0,
            lossy_crashes: false,
            clean_restarts: false,
            power_loss: false,
            partitions: false,
            slow_disks: false,
            metadata_stalls: false,
            disk_swaps: false,
            cluster_restarts: false,
            min_isr_changes: false,
            retention: false,
            fault_interval_ms_mean: 500,
            swarm: false,
        }
    }
}

impl Default for ClusterFaultOptions {
    fn default() -> ClusterFaultOptions {
        ClusterFaultOptions {
            network_delay_ms_max: 20,
            message_loss_percent_max: 5,
            message_duplicate_percent_max: 3,
            delay_spike_percent_max: 5,
            lossy_crashes: true,
            clean_restarts: true,
            power_loss: true,
            partitions: true,
            slow_disks: true,
            metadata_stalls: true,
            disk_swaps: true,
            cluster_restarts: true,
            min_isr_changes: true,
            retention: true,
            fault_interval_ms_mean: 700,
            swarm: true,
        }
    }
}

impl ClusterSimOptions {
    /// Three brokers, two partitions with RF 3 and min ISR 2, 10 s of faults, then at most
    /// 10 s to converge.
    pub fn new(seed: u64) -> ClusterSimOptions {
        ClusterSimOptions {
            seed,
            brokers: 3,
            partitions: 2,
            replication_factor: 3,
            min_isr: 2,
            safety_ms: 10_000,
            liveness_ms: 10_000,
            session_timeout_ms: 1_500,
            replica_lag_time_max_ms: 1_000,
            controllers: None,
            controller_snapshot_entries: None,
            metadata_on_data_disk: true,
            faults: ClusterFaultOptions::default(),
            mutation: None,
            broker_epoch_check: true,
            record_trace: false,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(1..=BROKERS_MAX).contains(&self.brokers) {
            return Err(format!("--brokers must lie between 1 and {BROKERS_MAX}; got {}", self.brokers));
        }
        if !(1..=PARTITIONS_MAX).contains(&self.partitions) {
            return Err(format!("--partitions must lie between 1 and {PARTITIONS_MAX}; got {}", self.partitions));
        }
        if !(1..=self.brokers).contains(&self.replication_factor) {
            return Err(format!(
                "--replication-factor must lie between 1 and the {} brokers; got {}",
                self.brokers, self.replication_factor
            ));
        }
        if !(1..=self.replication_factor).contains(&self.min_isr) {
            return Err(format!(
                "--min-isr must lie between 1 and the replication factor {}; got {}",
                self.replication_factor, self.min_isr
            ));
        }
        if self.liveness_ms == 0 || self.safety_ms.saturating_add(self.liveness_ms) > RUN_MS_MAX {
            return Err(format!(
                "the liveness phase must be positive and both phases together at most {RUN_MS_MAX} ms"
            ));
        }
        if !(1..=self.brokers).contains(&self.controller_count()) {
            return Err(format!(
                "--controllers must lie between 1 and the {} brokers (combined mode); got {}",
                self.brokers,
                self.controller_count()
            ));
        }
        if self.controller_snapshot_entries == Some(0) {
            return Err("--controller-snapshot-entries must be at least 1".to_string());
        }
        if self.session_timeout_ms == 0 || self.replica_lag_time_max_ms == 0 {
            return Err("the session timeout and the replica lag time must be positive".to_string());
        }
        let f = &self.faults;
        if f.message_loss_percent_max > 100 || f.message_duplicate_percent_max > 100 || f.delay_spike_percent_max > 100
        {
            return Err("fault percentages must lie between 0 and 100".to_string());
        }
        if f.network_delay_ms_max == 0 || f.network_delay_ms_max > 60_000 || f.fault_interval_ms_mean == 0 {
            return Err("the network delay bound must lie between 1 ms and 60 s, the fault interval be positive".into());
        }
        self.replica_config(NodeId(1)).validate().map_err(|e| e.0)?;
        self.controller_config().validate()
    }

    /// How many voters the controller quorum has.
    pub fn controller_count(&self) -> usize {
        self.controllers.unwrap_or(self.brokers.min(CONTROLLERS_DEFAULT_MAX))
    }

    /// A voter's config, as the broker builds it from its defaults.
    fn quorum_config(&self, id: NodeId, voters: Vec<NodeId>, snapshot_entries: u64) -> QuorumConfig {
        let mut raft = keel_raft::Config::new(id, voters);
        raft.election_timeout_min = Duration::from_millis(CONTROLLER_ELECTION_TIMEOUT_MS);
        raft.election_timeout_max = Duration::from_millis(CONTROLLER_ELECTION_TIMEOUT_MS * 2);
        if self.mutation == Some(ClusterMutation::TrustLostState) {
            raft.mutation = Some(keel_raft::Mutation::TrustLostState);
        }
        QuorumConfig { raft, controller: self.controller_config(), snapshot_entries }
    }

    fn replica_config(&self, id: NodeId) -> ReplicaConfig {
        ReplicaConfig {
            min_isr: self.min_isr,
            replica_lag_time_max: Duration::from_millis(self.replica_lag_time_max_ms),
            isr_change_retry_backoff: Duration::from_millis(50),
            fetch_backoff: Duration::from_millis(100),
            mutation: (self.mutation == Some(ClusterMutation::TrustBelowLogStart))
                .then_some(keel_replication::Mutation::TrustBelowLogStart),
            ..ReplicaConfig::new(id)
        }
    }

    fn controller_config(&self) -> ControllerConfig {
        ControllerConfig {
            session_timeout: Duration::from_millis(self.session_timeout_ms),
            default_partitions: self.partitions as i32,
            default_replication_factor: self.replication_factor as i16,
            default_min_isr: self.min_isr,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval: Duration::from_secs(3),
            mutation: if self.mutation == Some(ClusterMutation::NoElr) {
                Some(Mutation::NoElr)
            } else {
                (!self.broker_epoch_check).then_some(Mutation::NoBrokerEpochCheck)
            },
            ..ControllerConfig::default()
        }
    }
}

impl Default for ClusterSimOptions {
    fn default() -> ClusterSimOptions {
        ClusterSimOptions::new(0)
    }
}

/// Counts over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub simulated_ms: u64,
    pub events: u64,
    pub messages_sent: u64,
    pub messages_dropped: u64,
    pub messages_duplicated: u64,
    /// Records the producer sent (first attempts) and that were acknowledged.
    pub records_produced: u64,
    pub records_acked: u64,
    /// Produce requests sent again after an error or a timeout.
    pub produce_retries: u64,
    /// Producer ids the producers got from InitProducerId (one per producer).
    pub producer_ids: u64,
    /// Producer epoch bumps after UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER (KIP-360).
    pub producer_epoch_bumps: u64,
    /// A value committed or acknowledged at a second offset after an epoch bump sent it again
    /// (legal: idempotence holds within a producer epoch; see `oracle`).
    pub epoch_bump_duplicates: u64,
    /// A value committed or acknowledged at a second offset after retention removed its first
    /// copy from some replica, so a leader that never held it did not know the retry (legal,
    /// as in Kafka; see `oracle`).
    pub retention_duplicates: u64,
    pub records_consumed: u64,
    /// Leader epochs seen in the committed metadata (elections, including re-elections).
    pub leader_changes: u64,
    pub isr_changes: u64,
    pub fences: u64,
    pub lossy_crashes: u64,
    /// Records a lossy crash removed from some replica's log.
    pub records_lost_in_crashes: u64,
    /// Logs whose recovery after a crash cut a torn or partly written tail (keel-storage's
    /// `RecoveryReport::truncated_at`).
    pub recovery_cuts: u64,
    pub clean_restarts: u64,
    pub power_losses: u64,
    pub partitions: u64,
    pub slow_disks: u64,
    pub metadata_stalls: u64,
    /// Follower truncations (divergence, out of range).
    pub truncations: u64,
    pub disk_swaps: u64,
    pub cluster_restarts: u64,
    pub min_isr_changes: u64,
    /// Snapshots the controllers took or installed (compactions and InstallSnapshot).
    pub controller_snapshots: u64,
    /// Controller restarts that loaded a snapshot from their Raft store (beyond the setup's).
    pub controller_restarts_from_snapshot: u64,
    /// Violations not reported because more replicas than min ISR - 1 lost the record.
    pub excused: u64,
    /// Consumer fetches answered by a new leader with a lower high watermark than the
    /// consumer saw before (allowed; see docs/simulator.md).
    pub consumer_high_watermark_regressions: u64,
    /// Segments, and records, retention deleted from some replica's log.
    pub segments_deleted_by_retention: u64,
    pub records_deleted_by_retention: u64,
    /// Consumers answered OFFSET_OUT_OF_RANGE that moved to the leader's log start (Kafka's
    /// `auto.offset.reset=earliest`).
    pub consumer_resets: u64,
    pub liveness_converged_ms: Option<u64>,
}

/// The result of one run.
pub type ClusterSimReport = SimReport<ClusterStats>;

/// Runs one seed. A violated check, a core that panics, or a cluster that does not converge
/// comes back as a [`Failure`].
pub fn run_cluster(options: &ClusterSimOptions) -> ClusterSimReport {
    harness::run_seed(options.seed, options.validate(), || Sim::new(options), Sim::finish)
}

// ---- the simulation --------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Message {
    /// A request for the active controller, to a voter.
    ControllerRequest {
        broker: usize,
        process: u64,
        call: Call,
    },
    /// A voter's answer (from broker `from`'s controller).
    ControllerAnswer {
        from: usize,
        process: u64,
        call: Call,
        answer: Answer<Decided>,
    },
    /// Committed metadata after `after`, from a voter.
    MetadataFetch {
        broker: usize,
        process: u64,
        after: LogIndex,
    },
    MetadataReply {
        process: u64,
        delta: MetadataDelta,
    },
    /// Between voters.
    Raft {
        from: NodeId,
        message: keel_raft::Message,
    },
    Fetch {
        broker: usize,
        process: u64,
        partition: usize,
        request: FetchRequest,
    },
    FetchReply {
        process: u64,
        partition: usize,
        request: FetchRequest,
        response: FetchResponse,
        /// Whole batches as the leader's log returned them.
        records: Bytes,
    },
    /// A producer asks any broker for a producer id (InitProducerId).
    InitProducerId {
        partition: usize,
        attempt: u64,
    },
    InitProducerIdReply {
        partition: usize,
        attempt: u64,
        result: Result<i64, ErrorCode>,
    },
    Produce {
        partition: usize,
        value: u64,
        attempt: u64,
        /// The producer's batch: one record holding `value`, with its producer id, epoch and
        /// sequence.
        batch: Bytes,
    },
    ProduceReply {
        partition: usize,
        value: u64,
        attempt: u64,
        result: Result<i64, ErrorCode>,
    },
    ConsumerFetch {
        partition: usize,
        offset: i64,
        leader_epoch: LeaderEpoch,
        attempt: u64,
    },
    ConsumerReply {
        partition: usize,
        offset: i64,
        attempt: u64,
        /// The leader's high watermark and whole batches from `offset` below it.
        result: Result<(i64, Bytes), ErrorCode>,
    },
    /// The consumer asks the leader for the partition's earliest offset (ListOffsets with
    /// timestamp EARLIEST), after its fetch position was out of range.
    ListOffsets {
        partition: usize,
        leader_epoch: LeaderEpoch,
        attempt: u64,
    },
    ListOffsetsReply {
        partition: usize,
        attempt: u64,
        /// The leader's log start offset.
        result: Result<i64, ErrorCode>,
    },
}

#[derive(Debug)]
enum Event {
    Deliver {
        to: usize,
        message: Box<Message>,
    },
    BrokerTick {
        broker: usize,
        process: u64,
    },
    /// The broker's periodic log maintenance: retention, then a recovery checkpoint.
    Maintenance {
        broker: usize,
        process: u64,
    },
    FlushDone {
        broker: usize,
        process: u64,
        partition: usize,
    },
    Restart {
        broker: usize,
        process: u64,
    },
    /// The active controller's tick, on the voter of broker `broker`.
    ControllerTick {
        broker: usize,
        process: u64,
    },
    RaftTimer {
        broker: usize,
        process: u64,
    },
    /// The oldest pending Raft write of the voter of broker `broker` completes.
    RaftWrite {
        broker: usize,
        process: u64,
    },
    Client,
}

/// A broker's replica of one partition: keel-replication's [`Replica`] engine (the code the
/// broker runs), its keel-storage log, and what the simulated broker shell keeps around it.
#[derive(Debug)]
struct Hosted {
    log: SimLog,
    engine: Replica,
    /// The producer's acks=all requests waiting on the leader: (value, attempt, offset).
    waiters: BTreeMap<WaiterId, (u64, u64, i64)>,
    /// The fetch in flight: what the follower core built, and when it left.
    fetch: Option<(FetchRequest, Instant)>,
    fetch_not_before: Instant,
    flush_at: Instant,
    flushing: bool,
    /// Followers' fetches the leader holds until records arrive: (follower, its process, the
    /// request, held since).
    parked: Vec<(usize, u64, FetchRequest, Instant)>,
    /// The AlterPartition request in flight and when it left: the broker fails it after
    /// [`ALTER_ISR_TIMEOUT`] without an answer, as a network client times out a request.
    alter_isr: Option<(AlterIsr, Instant)>,
}

#[derive(Debug)]
struct Broker {
    id: NodeId,
    up: bool,
    /// Bumped by every stop: messages and events for an earlier life are ignored.
    process: u64,
    broker_epoch: Option<BrokerEpoch>,
    /// The clean-shutdown marker the next start finds: the broker epoch it names.
    marker: Option<BrokerEpoch>,
    /// The metadata replayed (keel-metadata's replay, as the broker runs it).
    metadata: MetadataReplay,
    /// The voter believed to be the active controller, and the next voter to try otherwise.
    controller_hint: Option<usize>,
    controller_cursor: usize,
    /// Since when a controller request has gone unanswered.
    call_since: Option<Instant>,
    /// The voter a broker-only node fetches metadata from (modulo the voters).
    metadata_source: usize,
    metadata_sent: Option<Instant>,
    metadata_stalled_until: Instant,
    next_metadata: Instant,
    next_heartbeat: Instant,
    register_sent: Option<Instant>,
    shutdown_requested: Option<Instant>,
    shutdown_granted: bool,
    slow_disk_until: Instant,
    flush_interval_ms_mean: u64,
    /// The broker's data directory: every partition log, on a disk that can lose power.
    disk: CrashBackend,
    /// The producer ids this process hands out, from blocks the controller allocated
    /// (keel-metadata's allocator, as the broker drives it; a new process starts with none).
    producer_ids: ProducerIdAllocator,
    /// The request for a block in flight: its number and when it left.
    producer_ids_request: Option<(u64, Instant)>,
    replicas: Vec<Hosted>,
}

impl Broker {
    /// The broker has replayed its own registration: it may act on metadata (the broker's
    /// own gate, [`may_act_on`]).
    fn caught_up(&self) -> bool {
        may_act_on(&self.metadata.image, self.id, self.broker_epoch)
    }
}

/// A partition's idempotent producer (Kafka's with `enable.idempotence=true` and one request
/// in flight): its producer id and epoch, the sequence of its next batch, and the batch in
/// flight, sent again unchanged until it is acknowledged.
#[derive(Debug, Default)]
struct Producer {
    /// `None` until a broker answers InitProducerId, and again once the producer is replaced.
    producer_id: Option<i64>,
    producer_epoch: i16,
    next_sequence: i32,
    in_flight: Option<InFlight>,
    /// The InitProducerId attempt whose answer counts, when it left (`None`: not sent, or
    /// failed) and when it may be sent again.
    init_attempt: u64,
    init_sent: Option<Instant>,
    init_not_before: Instant,
    /// The producer stamps its records with an old CreateTime for a while (see
    /// [`Retention`]); it survives a new producer id, as the application producing does.
    writes_old: bool,
}

#[derive(Debug, Clone)]
struct InFlight {
    value: u64,
    /// The record's CreateTime.
    timestamp_ms: i64,
    sequence: i32,
    batch: Bytes,
    /// The attempt whose answer counts.
    attempt: u64,
    /// When that attempt left; `None` while it waits for `not_before` (a back-off).
    sent: Option<Instant>,
    not_before: Instant,
}

impl Producer {
    /// The producer got its id: it starts in epoch 0 at sequence 0.
    fn initialized(&mut self, producer_id: i64) {
        assert!(self.producer_id.is_none() && self.in_flight.is_none(), "a producer gets one id");
        *self = Producer { producer_id: Some(producer_id), writes_old: self.writes_old, ..Producer::default() };
    }

    /// The batch for a new `value` with CreateTime `timestamp_ms`, at the next sequence.
    fn start(&mut self, value: u64, timestamp_ms: i64, now: Instant) {
        assert!(self.in_flight.is_none(), "one request in flight");
        let producer_id = self.producer_id.expect("a producer id");
        let sequence = self.next_sequence;
        let batch = producer_batch(value, timestamp_ms, producer_id, self.producer_epoch, sequence);
        let in_flight = InFlight { value, timestamp_ms, sequence, batch, attempt: 0, sent: None, not_before: now };
        self.in_flight = Some(in_flight);
    }

    /// KIP-360: the partition lost this producer's state (UNKNOWN_PRODUCER_ID) or has a gap
    /// before the batch in flight (OUT_OF_ORDER_SEQUENCE_NUMBER). Kafka's idempotent producer
    /// bumps its epoch and starts its sequences again at 0, resending the batch in flight.
    fn bump_epoch(&mut self) {
        let in_flight = self.in_flight.as_mut().expect("a batch in flight");
        let producer_id = self.producer_id.expect("a producer id");
        self.producer_epoch = self.producer_epoch.checked_add(1).expect("fewer than 32767 epoch bumps in a run");
        in_flight.sequence = 0;
        in_flight.batch = producer_batch(in_flight.value, in_flight.timestamp_ms, producer_id, self.producer_epoch, 0);
        self.next_sequence = 0;
    }

    /// The batch in flight was acknowledged.
    fn acknowledged(&mut self) {
        let in_flight = self.in_flight.take().expect("a batch in flight");
        self.next_sequence = in_flight.sequence.checked_add(1).expect("fewer than 2^31 batches in a run");
    }
}

#[derive(Debug, Default)]
struct Consumer {
    position: i64,
    high_watermark: i64,
    leader_epoch: LeaderEpoch,
    attempt: u64,
    sent: Option<Instant>,
    /// The last fetch was answered OFFSET_OUT_OF_RANGE: the consumer looks up the earliest
    /// offset before it fetches again (`auto.offset.reset=earliest`).
    resetting: bool,
}

/// A seed's retention: the topic's `retention.ms` and `retention.bytes` (neither: no
/// retention), whether producers sometimes stamp records with a CreateTime older than
/// `retention.ms` (so they expire at once), and how often each broker runs its maintenance.
#[derive(Debug, Clone, Copy)]
struct Retention {
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    old_timestamps: bool,
    maintenance_interval: Duration,
}

impl Retention {
    /// Draws a seed's retention: none, by time, by size or both, a quarter of seeds each
    /// (`enabled` false: none), over segments of 1 to 4 KiB (13 to 50 records) with
    /// retention; `segment_bytes` otherwise. Returns it with the segment size.
    fn draw(rng: &mut Rng, enabled: bool, segment_bytes: u64) -> (Retention, u64) {
        let kind = if enabled { rng.below(4) } else { 0 };
        let segment_bytes = if kind == 0 { segment_bytes } else { 1 << rng.range_inclusive(10, 12) };
        let retention_ms = matches!(kind, 1 | 3).then(|| rng.range_inclusive(100, 3_000));
        let retention_bytes = matches!(kind, 2 | 3).then(|| segment_bytes * rng.range_inclusive(1, 8));
        let retention = Retention {
            retention_ms,
            retention_bytes,
            old_timestamps: retention_ms.is_some() && rng.chance(3, 4),
            maintenance_interval: ms(rng.range_inclusive(200, 3_000)),
        };
        (retention, segment_bytes)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    LossyCrash,
    CleanRestart,
    PowerLoss,
    Partition,
    SlowDisk,
    MetadataStall,
    DiskSwap,
    ClusterRestart,
    MinIsrChange,
}

impl FaultKind {
    fn weight(self) -> u64 {
        match self {
            FaultKind::PowerLoss | FaultKind::DiskSwap | FaultKind::ClusterRestart => 1,
            _ => 3,
        }
    }
}

struct Sim<'a> {
    options: &'a ClusterSimOptions,
    harness: Harness<Event, Links>,
    /// The controller quorum's voters, on brokers `0..voters.len()`.
    voters: Vec<Voter>,
    /// The index of the formatted metadata snapshot every voter starts from.
    setup_index: LogIndex,
    /// A freshly formatted voter's Raft state.
    formatted: Durable,
    snapshot_entries: u64,
    /// The oracle's view of the committed metadata log.
    committed: CommittedView,
    topic_id: TopicId,
    brokers: Vec<Broker>,
    producers: Vec<Producer>,
    /// Every producer id a broker handed out: none may be handed out twice (issue 17, F3).
    producer_ids_handed_out: BTreeSet<i64>,
    next_block_request: u64,
    consumers: Vec<Consumer>,
    next_value: u64,
    next_attempt: u64,
    network: Network,
    client_rng: Rng,
    disk_rng: Rng,
    /// Draws for retention: the producers' old timestamps and the maintenance schedule.
    retention_rng: Rng,
    retention: Retention,
    faults: Vec<FaultKind>,
    /// Every replica's log configuration (segment and checkpoint sizes drawn per seed).
    log_config: LogConfig,
    oracle: Oracle,
    /// Leader epochs seen per partition in the committed image.
    leader_epochs: Vec<LeaderEpoch>,
    stats: ClusterStats,
}

/// Where a broker keeps partition `p`'s log on its disk.
fn log_dir(p: usize) -> PathBuf {
    PathBuf::from(format!("/data/{TOPIC}-{p}"))
}

/// Simulated time as the wall-clock milliseconds keel-storage takes (and producers stamp
/// records with).
fn millis(now: Instant) -> i64 {
    WALL_CLOCK_START_MS + now.as_millis() as i64
}

fn show_nodes(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("b{n}")).collect();
    format!("[{}]", names.join(" "))
}

/// What recovery did to a log after a crash, if anything.
fn show_recovery(report: &RecoveryReport) -> String {
    match &report.truncated_at {
        Some((file, position, reason)) => format!(
            "; recovery from offset {} cut {} bytes at {}:{position}: {reason}",
            report.recovery_point,
            report.truncated_bytes,
            file.file_name().map_or_else(|| file.display().to_string(), |n| n.to_string_lossy().into_owned())
        ),
        None => String::new(),
    }
}

fn show_registration(p: &PartitionRegistration) -> String {
    format!(
        "leader {} e{} pe{} isr {} elr {} lkelr {}",
        p.leader.map_or("none".to_string(), |l| format!("b{l}")),
        p.leader_epoch.0,
        p.partition_epoch,
        show_nodes(&p.isr),
        show_nodes(&p.elr),
        show_nodes(&p.last_known_elr)
    )
}

/// The cluster as formatted: every broker registered (clean) and unfenced, the topic created.
/// Returns the number of metadata entries that took, the image, the broker epochs and the
/// topic id.
fn setup_metadata(options: &ClusterSimOptions, rng: &mut Rng) -> (LogIndex, MetadataImage, Vec<BrokerEpoch>, TopicId) {
    let mut controller = Controller::new(options.controller_config(), MetadataImage::default(), Instant::ZERO);
    let mut entries = 0;
    let mut commit = |controller: &mut Controller, records: Vec<MetadataRecord>| {
        records.iter().for_each(|record| controller.handle_committed(record));
        entries += u64::from(!records.is_empty());
    };
    let mut epochs = Vec::new();
    for b in 0..options.brokers {
        let node = NodeId(b as i32 + 1);
        let request = BrokerRegistrationRequest {
            node,
            listeners: Vec::new(),
            rack: None,
            previous_broker_epoch: None,
            process_id: 1,
            incarnation: 1,
        };
        let decision = controller.register_broker(Instant::ZERO, request).expect("a registration at setup");
        epochs.push(decision.reply);
        commit(&mut controller, decision.records);
        let decision = controller.heartbeat(Instant::ZERO, node, decision.reply, true, false).expect("a heartbeat");
        commit(&mut controller, decision.records);
    }
    let configs = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), options.min_isr.to_string())]);
    let (partitions, replication_factor) = (options.partitions as i32, options.replication_factor as i16);
    let decision =
        controller.create_topic(TOPIC, partitions, replication_factor, configs, rng).expect("the topic at setup");
    commit(&mut controller, decision.records);
    (entries, controller.committed().clone(), epochs, decision.reply)
}

impl<'a> Sim<'a> {
    fn new(options: &'a ClusterSimOptions) -> Sim<'a> {
        let Streams {
            mut master,
            mut knobs,
            network: network_rng,
            fault: fault_rng,
            client: client_rng,
            disk: disk_rng,
        } = Streams::new(options.seed);
        let mut placement_rng = fork(&mut master);
        let mut retention_rng = fork(&mut master);
        let f = &options.faults;
        let network_faults = NetworkFaults {
            loss_percent_max: f.message_loss_percent_max,
            duplicate_percent_max: f.message_duplicate_percent_max,
            spike_percent_max: f.delay_spike_percent_max,
            delay_us_max_min: 200,
            delay_ms_max: f.network_delay_ms_max,
        };
        let network = Network::draw(&mut knobs, network_faults, IN_FLIGHT_MAX, network_rng);
        let kinds = [
            (f.lossy_crashes, FaultKind::LossyCrash),
            (f.clean_restarts, FaultKind::CleanRestart),
            (f.power_loss, FaultKind::PowerLoss),
            (f.partitions, FaultKind::Partition),
            (f.slow_disks, FaultKind::SlowDisk),
            (f.metadata_stalls, FaultKind::MetadataStall),
            (f.disk_swaps, FaultKind::DiskSwap),
            (f.cluster_restarts, FaultKind::ClusterRestart),
            (f.min_isr_changes, FaultKind::MinIsrChange),
        ];
        let faults = draw_fault_kinds(&mut knobs, f.swarm, kinds);
        let fault_interval_ms_mean = draw_fault_interval_ms_mean(&mut knobs, f.fault_interval_ms_mean);
        // flush.policy=never: the OS writes dirty pages back now and then; per broker a mean
        // writeback interval of 50 ms to 5 s.
        let flush_means: Vec<u64> = (0..options.brokers).map(|_| knobs.range_inclusive(50, 5_000)).collect();
        // Segments of 1 KiB to 64 KiB (13 to 860 records) roll within a run; recovery
        // checkpoints every 1 to 16 KiB flushed.
        let segment_bytes = 1 << knobs.range_inclusive(10, 16);
        let recovery_checkpoint_bytes = 1 << knobs.range_inclusive(10, 14);
        let (retention, segment_bytes) = Retention::draw(&mut retention_rng, f.retention, segment_bytes);
        let log_config =
            log_config(segment_bytes, recovery_checkpoint_bytes, retention.retention_ms, retention.retention_bytes);

        let snapshot_entries = options.controller_snapshot_entries.unwrap_or_else(|| knobs.range_inclusive(2, 8));
        let (setup_index, setup_image, epochs, topic_id) = setup_metadata(options, &mut placement_rng);
        // Every voter starts from the formatted metadata (as `kafka-storage format` writes a
        // bootstrap snapshot): the setup's records as a snapshot at `setup_index`.
        let formatted = Durable {
            snapshot: Some(Snapshot { index: setup_index, term: Term(0), data: setup_image.encode() }),
            ..Durable::default()
        };
        let voters: Vec<Voter> = (0..options.controller_count())
            .map(|_| Voter {
                member: None,
                store: RaftStore::formatted(formatted.clone()),
                rng: fork(&mut master),
                timer: None,
                snapshot_index: 0,
                observed: None,
            })
            .collect();

        let mut brokers = Vec::new();
        for (b, &flush_interval_ms_mean) in flush_means.iter().enumerate() {
            let id = NodeId(b as i32 + 1);
            let disk = CrashBackend::new();
            let mut replicas = Vec::new();
            for p in 0..options.partitions {
                let (log, _) = SimLog::open(&disk, log_dir(p), log_config.clone(), 0).expect("a new log opens");
                replicas.push(Hosted {
                    log,
                    engine: Replica::new(options.replica_config(id)),
                    waiters: BTreeMap::new(),
                    fetch: None,
                    fetch_not_before: Instant::ZERO,
                    flush_at: Instant::ZERO + ms(flush_interval_ms_mean),
                    flushing: false,
                    parked: Vec::new(),
                    alter_isr: None,
                });
            }
            brokers.push(Broker {
                id,
                up: true,
                process: 1,
                broker_epoch: Some(epochs[b]),
                marker: None,
                metadata: MetadataReplay::default(),
                controller_hint: None,
                controller_cursor: b,
                call_since: None,
                metadata_source: b,
                metadata_sent: None,
                metadata_stalled_until: Instant::ZERO,
                next_metadata: Instant::ZERO,
                next_heartbeat: Instant::ZERO,
                register_sent: None,
                shutdown_requested: None,
                shutdown_granted: false,
                slow_disk_until: Instant::ZERO,
                flush_interval_ms_mean,
                disk,
                producer_ids: ProducerIdAllocator::new(),
                producer_ids_request: None,
                replicas,
            });
        }
        let mut trace = Trace::new(options.record_trace);
        trace.line(
            Instant::ZERO,
            format_args!(
                "seed {} brokers {} partitions {} RF {} min ISR {} mutation {:?}; loss {}% duplicate \
                 {}% spike {}% delay <= {} us; faults {faults:?} every \
                 {fault_interval_ms_mean} ms; writeback means {flush_means:?} ms; segments of {} bytes, \
                 recovery checkpoints every {} bytes; {} controllers snapshot every {snapshot_entries} entries; \
                 retention.ms {:?} retention.bytes {:?}, old timestamps {}, maintenance every {} ms",
                options.seed,
                options.brokers,
                options.partitions,
                options.replication_factor,
                options.min_isr,
                options.mutation,
                network.loss_percent,
                network.duplicate_percent,
                network.spike_percent,
                network.delay_us_max,
                log_config.segment_bytes,
                log_config.recovery_checkpoint_bytes,
                voters.len(),
                retention.retention_ms,
                retention.retention_bytes,
                retention.old_timestamps,
                retention.maintenance_interval.as_millis(),
            ),
        );
        let mut sim = Sim {
            options,
            harness: Harness::new(options.safety_ms, options.liveness_ms, fault_rng, fault_interval_ms_mean, trace),
            voters,
            setup_index,
            formatted,
            snapshot_entries,
            committed: CommittedView::default(),
            topic_id,
            brokers,
            producers: (0..options.partitions).map(|_| Producer::default()).collect(),
            producer_ids_handed_out: BTreeSet::new(),
            next_block_request: 1,
            consumers: (0..options.partitions).map(|_| Consumer::default()).collect(),
            next_value: 1,
            next_attempt: 1,
            network,
            client_rng,
            disk_rng,
            retention_rng,
            retention,
            faults,
            log_config,
            oracle: Oracle::new(options.partitions, options.min_isr),
            leader_epochs: vec![LeaderEpoch(0); options.partitions],
            stats: ClusterStats::default(),
        };
        sim.observe_setup(setup_index, setup_image);
        for p in 0..options.partitions {
            if let Some(reg) = sim.committed.image.partition(topic_id, p as i32) {
                let text = show_registration(reg);
                sim.harness
                    .trace
                    .line(Instant::ZERO, format_args!("p{p} replicas {} {text}", show_nodes(&reg.replicas)));
            }
        }
        sim
    }

    fn finish(mut self, outcome: Result<u64, Failure>) -> ClusterSimReport {
        self.stats.liveness_converged_ms = outcome.as_ref().ok().copied();
        self.stats.events = self.harness.events;
        self.stats.simulated_ms = self.harness.now.as_millis();
        self.stats.excused = self.oracle.excused;
        self.stats.epoch_bump_duplicates = self.oracle.epoch_bump_duplicates;
        self.stats.retention_duplicates = self.oracle.retention_duplicates;
        self.stats.records_acked = self.oracle.partitions.iter().map(|p| p.acked.len() as u64).sum();
        self.harness.finish(self.options.seed, outcome.map(|_| ()), self.stats)
    }

    fn downtime(&mut self) -> Duration {
        if self.harness.phase == Phase::Liveness {
            return ms(self.harness.fault_rng.range_inclusive(10, 100));
        }
        self.harness.downtime()
    }

    fn client_index(&self) -> usize {
        self.brokers.len() + 1
    }

    // ---- the network ---------------------------------------------------------------------

    fn send(&mut self, from: usize, to: usize, message: Message) {
        self.stats.messages_sent += 1;
        if from == to {
            // In-process, between the broker and the controller of a combined node.
            self.harness
                .schedule(self.harness.now + Duration(10_000), Event::Deliver { to, message: Box::new(message) });
            self.network.in_flight += 1;
            return;
        }
        let cut = self.harness.partition.cut().is_some_and(|links| links.contains(&(from, to)));
        let Ok(delays) = self.network.send(cut) else {
            self.stats.messages_dropped += 1;
            return;
        };
        self.stats.messages_duplicated += delays.len() as u64 - 1;
        for delay in delays {
            self.harness.schedule(self.harness.now + delay, Event::Deliver { to, message: Box::new(message.clone()) });
        }
    }

    fn deliver(&mut self, to: usize, message: Message) -> Result<(), String> {
        if to == self.client_index() {
            return self.client_receive(message);
        }
        if !self.brokers[to].up {
            self.stats.messages_dropped += 1;
            return Ok(());
        }
        self.broker_receive(to, message)?;
        self.after_broker(to)
    }

    // ---- brokers -------------------------------------------------------------------------

    fn broker_tick(&mut self, b: usize) -> Result<(), String> {
        let now = self.harness.now;
        let broker = &mut self.brokers[b];
        match broker.broker_epoch {
            None => {
                if broker.register_sent.is_none_or(|t| now >= t + REGISTER_RETRY) {
                    broker.register_sent = Some(now);
                    let previous_broker_epoch = broker.marker;
                    self.send_call(b, Call::Register { previous_broker_epoch });
                }
            }
            Some(broker_epoch) => {
                if now >= broker.next_heartbeat {
                    broker.next_heartbeat = now + HEARTBEAT_INTERVAL;
                    let caught_up = broker.caught_up();
                    let want_shutdown = broker.shutdown_requested.is_some();
                    self.send_call(b, Call::Heartbeat { broker_epoch, caught_up, want_shutdown });
                }
            }
        }
        self.fetch_metadata(b);
        let broker = &mut self.brokers[b];
        if broker.producer_ids_request.is_some_and(|(_, sent)| now >= sent + PRODUCER_ID_BLOCK_TIMEOUT) {
            broker.producer_ids_request = None;
            broker.producer_ids.handle_request_failed(now, PRODUCER_ID_BLOCK_BACKOFF);
        }
        if let Some(since) = self.brokers[b].shutdown_requested {
            if self.brokers[b].shutdown_granted || now >= since + CONTROLLED_SHUTDOWN_MAX {
                return self.stop_cleanly(b);
            }
        }
        for p in 0..self.options.partitions {
            self.replica_tick(b, p)?;
        }
        self.after_broker(b)
    }

    /// A combined node fetches committed metadata from its own controller; a broker-only node
    /// from a voter, the next one after a fetch with no answer.
    fn fetch_metadata(&mut self, b: usize) {
        let now = self.harness.now;
        let voter = self.is_voter(b);
        let voters = self.voters.len();
        let broker = &mut self.brokers[b];
        let timed_out = broker.metadata_sent.is_some_and(|t| now >= t + METADATA_TIMEOUT);
        if timed_out {
            broker.metadata_source += 1;
        }
        if (broker.metadata_sent.is_none() || timed_out)
            && now >= broker.next_metadata
            && now >= broker.metadata_stalled_until
        {
            broker.metadata_sent = Some(now);
            let (process, after) = (broker.process, broker.metadata.index);
            let to = if voter { b } else { broker.metadata_source % voters };
            self.send(b, to, Message::MetadataFetch { broker: b, process, after });
        }
    }

    fn replica_tick(&mut self, b: usize, p: usize) -> Result<(), String> {
        let now = self.harness.now;
        let broker = &mut self.brokers[b];
        let slow = now < broker.slow_disk_until;
        let mean = broker.flush_interval_ms_mean;
        let replica = &mut broker.replicas[p];
        if now >= replica.flush_at && !replica.flushing {
            replica.flushing = true;
            let latency_us = if slow {
                self.disk_rng.range_inclusive(50_000, 800_000)
            } else {
                self.disk_rng.range_inclusive(100, 2_000)
            };
            replica.flush_at = now + ms(self.disk_rng.range_inclusive(mean.div_ceil(2), mean + mean / 2));
            let process = broker.process;
            self.harness
                .schedule(now + Duration(latency_us * 1_000), Event::FlushDone { broker: b, process, partition: p });
        }
        self.harness.current = format!("b{} p{p} tick", b + 1);
        let replica = &mut self.brokers[b].replicas[p];
        match replica.engine.role() {
            Role::Leader(_) => {
                let leader = replica.engine.leader_mut().expect("a leader");
                if let Some((request, sent)) = replica.alter_isr.take() {
                    if now >= sent + ALTER_ISR_TIMEOUT {
                        leader.handle_isr_change_result(now, &request, Err(ErrorCode::RequestTimedOut));
                    } else {
                        replica.alter_isr = Some((request, sent));
                    }
                }
                leader.handle_tick(now);
            }
            Role::Follower(_) => {
                if let Some((_, sent)) = replica.fetch {
                    if now >= sent + FETCH_TIMEOUT {
                        replica.engine.follower_mut().expect("a follower").handle_fetch_failed(now);
                        replica.fetch = None;
                    }
                }
            }
            Role::Offline { .. } => {}
        }
        self.maybe_fetch(b, p);
        let expired = self.brokers[b].replicas[p].parked.iter().any(|(.., since)| now >= *since + FETCH_WAIT_MAX);
        if expired || self.brokers[b].replicas[p].engine.leader().is_none() {
            self.release_parked(b, p, false)?;
        }
        Ok(())
    }

    /// Schedules broker `b`'s next log maintenance, about its interval from now.
    fn schedule_maintenance(&mut self, b: usize) {
        let interval = self.retention.maintenance_interval.as_millis();
        let next = ms(self.retention_rng.range_inclusive(interval.div_ceil(2), interval + interval / 2));
        let process = self.brokers[b].process;
        self.harness.schedule(self.harness.now + next, Event::Maintenance { broker: b, process });
    }

    /// The broker's periodic log maintenance, as keel-broker runs it for every replica:
    /// keel-storage's `Log::maintain` (retention below the bound, then a recovery checkpoint)
    /// with the bound the replica engine gives ([`Replica::retention_bound`], which the
    /// broker's role asks too).
    fn maintain(&mut self, b: usize) -> Result<(), String> {
        let now_ms = millis(self.harness.now);
        let id = self.brokers[b].id;
        let ignores_high_watermark = self.options.mutation == Some(ClusterMutation::RetentionIgnoresHighWatermark);
        for p in 0..self.options.partitions {
            self.harness.current = format!("b{id} p{p} maintenance");
            let replica = &mut self.brokers[b].replicas[p];
            let bound = if ignores_high_watermark { replica.log.log_end() } else { replica.engine.retention_bound() };
            let before = replica.log.log_start_offset();
            let deleted = replica.log.maintain(now_ms, bound)?;
            if deleted.is_empty() {
                continue;
            }
            let (start, end, hw) =
                (replica.log.log_start_offset(), replica.log.log_end(), replica.engine.high_watermark());
            self.stats.segments_deleted_by_retention += deleted.len() as u64;
            self.stats.records_deleted_by_retention += (start - before) as u64;
            let text = format!(
                "b{id} p{p} retention deletes {} segment(s) below bound {bound}: log start {before} -> {start} \
                 (log end {end}, hw {hw})",
                deleted.len()
            );
            self.harness.trace.line(self.harness.now, format_args!("{text}"));
            self.oracle.observe_log_start(p, id, start)?;
        }
        self.after_broker(b)
    }

    /// Answers the fetches the leader holds: all of them, or those held long enough.
    fn release_parked(&mut self, b: usize, p: usize, all: bool) -> Result<(), String> {
        let now = self.harness.now;
        let parked = std::mem::take(&mut self.brokers[b].replicas[p].parked);
        for (from, from_process, request, since) in parked {
            let leads = self.brokers[b].replicas[p].engine.leader().is_some();
            if all || now >= since + FETCH_WAIT_MAX || !leads {
                self.answer_fetch(b, from, from_process, p, request, false)?;
            } else {
                self.brokers[b].replicas[p].parked.push((from, from_process, request, since));
            }
        }
        Ok(())
    }

    fn maybe_fetch(&mut self, b: usize, p: usize) {
        let now = self.harness.now;
        let broker = &mut self.brokers[b];
        let process = broker.process;
        let replica = &mut broker.replicas[p];
        if replica.fetch.is_some() || now < replica.fetch_not_before {
            return;
        }
        let ungated = self.options.mutation == Some(ClusterMutation::NoMetadataGate);
        if broker.broker_epoch.is_none() && !ungated {
            return;
        }
        // KIP-903 off: fetches carry no broker epoch, so nothing vouches for a process.
        let carried = broker.broker_epoch.filter(|_| self.options.broker_epoch_check);
        let Some(request) = replica.engine.next_fetch(now, carried, &replica.log) else { return };
        let Some(leader) = replica.engine.follower().map(|f| f.leader().0 as usize - 1) else { return };
        replica.fetch = Some((request.clone(), now));
        let mut wire = request;
        if self.options.mutation == Some(ClusterMutation::NoTruncate) {
            wire.last_fetched_epoch = None;
        }
        self.send(b, leader, Message::Fetch { broker: b, process, partition: p, request: wire });
    }

    /// Collects what the broker's leaders produced after an input, and checks the broker.
    fn after_broker(&mut self, b: usize) -> Result<(), String> {
        let now = self.harness.now;
        let id = self.brokers[b].id;
        for p in 0..self.options.partitions {
            let broker = &mut self.brokers[b];
            let broker_epoch = broker.broker_epoch;
            let replica = &mut broker.replicas[p];
            let mut alter = None;
            match replica.engine.role() {
                Role::Leader(leader) => {
                    leader.check_invariants().map_err(|e| format!("p{p}: {e}"))?;
                    let hw = leader.high_watermark();
                    let min_isr = leader.config().min_isr;
                    self.oracle.check_leader_log_start(p, id, &replica.log, hw)?;
                    self.oracle.observe_high_watermark(p, id, &replica.log, hw, min_isr, now)?;
                    let leader = replica.engine.leader_mut().expect("a leader");
                    if let Some(proposal) = leader.poll_isr_change(now) {
                        replica.alter_isr = Some((proposal.request.clone(), now));
                        alter = Some(proposal);
                    }
                }
                Role::Follower(follower) => {
                    follower.check_invariants(&replica.log).map_err(|e| format!("p{p}: {e}"))?;
                    let hw = follower.high_watermark();
                    self.oracle.check_below_high_watermark(p, id, &replica.log, hw)?;
                }
                Role::Offline { .. } => {}
            }
            let mut replies = Vec::new();
            for (waiter, result) in replica.engine.drain_completed() {
                if let Some((value, attempt, offset)) = replica.waiters.remove(&waiter) {
                    if result.is_ok() {
                        self.oracle.check_acknowledgement(p, id, &replica.log, value, offset)?;
                    }
                    replies.push((value, attempt, result.map(|()| offset)));
                }
            }
            let client = self.client_index();
            for (value, attempt, result) in replies {
                self.send(b, client, Message::ProduceReply { partition: p, value, attempt, result });
            }
            if let (Some(proposal), Some(broker_epoch)) = (alter, broker_epoch) {
                let (request, added) = (proposal.request, proposal.added);
                self.send_call(b, Call::AlterIsr { broker_epoch, partition: p, request, added });
            }
        }
        Ok(())
    }

    fn broker_receive(&mut self, b: usize, message: Message) -> Result<(), String> {
        let now = self.harness.now;
        let process = self.brokers[b].process;
        let id = self.brokers[b].id;
        match message {
            Message::ControllerRequest { broker, process: from_process, call } => {
                self.controller_request(b, Token { from: Some((broker, from_process)), call })?;
            }
            Message::MetadataFetch { broker, process: from_process, after } => {
                if let Some(member) = self.member(b) {
                    let delta = member.committed().after(after, METADATA_ENTRIES_MAX);
                    self.send(b, broker, Message::MetadataReply { process: from_process, delta });
                }
            }
            Message::Raft { from, message } => {
                self.harness.current = format!("b{id} controller hears {} from b{from}", message.kind());
                self.with_member(b, |member, now, rng| member.handle_message(now, rng, from, message))?;
            }
            Message::ControllerAnswer { from, process: p, call, answer } if p == process => {
                self.heard_from_controller(b, from, &answer);
                self.handle_controller_answer(b, call, answer)?;
            }
            Message::InitProducerId { partition, attempt } => {
                let result = self.hand_out_producer_id(b)?;
                let client = self.client_index();
                self.send(b, client, Message::InitProducerIdReply { partition, attempt, result });
            }
            Message::MetadataReply { process: p, delta } if p == process => {
                let broker = &mut self.brokers[b];
                broker.metadata_sent = None;
                broker.next_metadata = now + METADATA_POLL;
                if now < broker.metadata_stalled_until {
                    return Ok(());
                }
                if broker.metadata.apply(&delta).map_err(|e| format!("b{id} cannot replay metadata: {e}"))? {
                    let image = &broker.metadata.image;
                    image.check_invariants().map_err(|e| format!("b{id}'s replayed image: {e}"))?;
                    self.apply_roles(b)?;
                }
            }
            Message::Fetch { broker: from, process: from_process, partition, request } => {
                self.answer_fetch(b, from, from_process, partition, request, true)?;
            }
            Message::FetchReply { process: p, partition, request, response, records } if p == process => {
                self.handle_fetch_reply(b, partition, request, response, records)?;
            }
            Message::Produce { partition, value, attempt, batch } => {
                self.handle_produce(b, partition, value, attempt, &batch)?;
            }
            Message::ConsumerFetch { partition, offset, leader_epoch, attempt } => {
                let replica = &self.brokers[b].replicas[partition];
                // What the broker answers a consumer's Fetch (keel-replication's rule): the
                // leader's high watermark, even while it is below the one its predecessor
                // exposed (Kafka does the same; only ListOffsets waits for it).
                let result = match replica.engine.consumer_view(Some(leader_epoch)) {
                    Ok(view) => match replica.log.read(offset, CONSUMER_BYTES_MAX, view.high_watermark) {
                        Ok(read) => Ok((view.high_watermark, read.records)),
                        Err(ReadError::OffsetOutOfRange { .. }) => Err(ErrorCode::OffsetOutOfRange),
                        Err(error) => return Err(format!("storage: b{id} p{partition} read at {offset}: {error}")),
                    },
                    Err(code) => Err(code),
                };
                let client = self.client_index();
                self.send(b, client, Message::ConsumerReply { partition, offset, attempt, result });
            }
            Message::ListOffsets { partition, leader_epoch, attempt } => {
                let replica = &self.brokers[b].replicas[partition];
                // The broker's answer to ListOffsets EARLIEST: the leader's log start offset.
                let result = replica.engine.consumer_view(Some(leader_epoch)).map(|_| replica.log.log_start_offset());
                let client = self.client_index();
                self.send(b, client, Message::ListOffsetsReply { partition, attempt, result });
            }
            // Replies addressed to an earlier life of this broker.
            _ => {}
        }
        Ok(())
    }

    /// What broker `b` does with the active controller's answer to its request.
    fn handle_controller_answer(&mut self, b: usize, call: Call, answer: Answer<Decided>) -> Result<(), String> {
        let now = self.harness.now;
        let id = self.brokers[b].id;
        let hinted = self.brokers[b].controller_hint.is_some();
        let decided = match answer {
            Answer::Decided { answer, .. } => Some(answer),
            Answer::NotController { .. } | Answer::Busy => None,
        };
        let broker = &mut self.brokers[b];
        match (call, decided) {
            (Call::Register { .. }, Some(Decided::Registered(broker_epoch))) => {
                // Answers to a retried registration may arrive in any order: the newest wins.
                if broker.broker_epoch.is_none_or(|e| e < broker_epoch) {
                    broker.broker_epoch = Some(broker_epoch);
                    broker.next_heartbeat = now;
                    self.harness.trace.line(now, format_args!("b{id} registered with broker epoch {broker_epoch}"));
                }
            }
            (Call::Register { .. }, Some(refused)) => {
                return Err(format!("registration of b{id} refused: {refused:?}"))
            }
            (Call::Register { .. }, None) => {
                // Ask the controller named at once; otherwise the next one at the next retry.
                if hinted && broker.broker_epoch.is_none() {
                    broker.register_sent = None;
                }
            }
            (Call::Heartbeat { .. }, Some(Decided::Heartbeat(reply))) => {
                broker.shutdown_granted |= reply.should_shut_down;
            }
            (Call::Heartbeat { broker_epoch, .. }, Some(_)) => {
                // The broker epoch is not the registered one (a retried registration got a
                // newer one, or a controller fenced and replaced it): register again.
                if broker.broker_epoch == Some(broker_epoch) {
                    broker.broker_epoch = None;
                    broker.register_sent = None;
                    let text =
                        format!("b{id}'s heartbeat with broker epoch {broker_epoch} is refused: it registers again");
                    self.harness.trace.line(now, format_args!("{text}"));
                }
            }
            (Call::Heartbeat { .. }, None) => {
                broker.next_heartbeat = if hinted { now } else { now + NO_CONTROLLER_BACKOFF };
            }
            (Call::AlterIsr { partition, request, .. }, decided) => {
                let result = match decided {
                    Some(Decided::AlterPartition(registration)) => Ok((registration.partition_epoch, registration.isr)),
                    Some(Decided::Refused(code, message)) => {
                        let text = format!("controller refuses AlterPartition from b{id} for p{partition}: {message}");
                        self.harness.trace.line(now, format_args!("{text}"));
                        Err(code)
                    }
                    Some(other) => return Err(format!("simulator bug: AlterPartition answered {other:?}")),
                    None => Err(ErrorCode::NotController),
                };
                let replica = &mut self.brokers[b].replicas[partition];
                if replica.alter_isr.as_ref().is_some_and(|(r, _)| *r == request) {
                    replica.alter_isr = None;
                }
                if let Some(leader) = replica.engine.leader_mut() {
                    self.harness.current = format!("b{id} p{partition} hears {result:?} for {request:?}");
                    leader.handle_isr_change_result(now, &request, result);
                }
            }
            (Call::AllocateProducerIds { request, .. }, decided) => {
                // Only the answer to the request out counts (a duplicate or late one does not).
                if broker.producer_ids_request.is_some_and(|(out, _)| out == request) {
                    broker.producer_ids_request = None;
                    match decided {
                        Some(Decided::ProducerIds(block)) => broker.producer_ids.handle_block(block),
                        _ => broker.producer_ids.handle_request_failed(now, PRODUCER_ID_BLOCK_BACKOFF),
                    }
                }
            }
            (Call::AlterMinIsr { .. }, _) => return Err("simulator bug: a broker got the operator's answer".into()),
        }
        Ok(())
    }

    fn answer_fetch(
        &mut self,
        b: usize,
        from: usize,
        from_process: u64,
        p: usize,
        request: FetchRequest,
        may_park: bool,
    ) -> Result<(), String> {
        let now = self.harness.now;
        let id = self.brokers[b].id;
        let replica = &mut self.brokers[b].replicas[p];
        if may_park && replica.parked.len() < PARKED_MAX && replica.engine.leader().is_some() {
            // A fetch that finds nothing new waits for records (the leader learns the
            // follower's offset now all the same).
            let decision = replica.engine.serve_fetch(now, &request, &replica.log);
            if matches!(decision, FetchDecision::Read { fetch_offset, .. } if fetch_offset >= replica.log.log_end()) {
                replica.parked.push((from, from_process, request, now));
                return Ok(());
            }
        }
        let decision = replica.engine.serve_fetch(now, &request, &replica.log);
        // A follower reads up to the leader's log end.
        let (records, records_end) = match decision {
            FetchDecision::Read { fetch_offset, .. } => {
                let read = replica
                    .log
                    .read(fetch_offset, FETCH_BYTES_MAX, replica.log.log_end())
                    .map_err(|e| format!("storage: b{id} p{p} serving a fetch at {fetch_offset}: {e}"))?;
                (read.records, read.next_offset)
            }
            _ => (Bytes::new(), request.fetch_offset),
        };
        let response = decision.response(records_end);
        let message = Message::FetchReply { process: from_process, partition: p, request, response, records };
        self.send(b, from, message);
        Ok(())
    }

    fn handle_fetch_reply(
        &mut self,
        b: usize,
        p: usize,
        request: FetchRequest,
        response: FetchResponse,
        records: Bytes,
    ) -> Result<(), String> {
        let now = self.harness.now;
        let id = self.brokers[b].id;
        let replica = &mut self.brokers[b].replicas[p];
        // The reply carries the request as sent; the follower judges the one it built.
        let Some((sent, _)) = replica.fetch.clone() else { return Ok(()) };
        let matches = sent.fetch_offset == request.fetch_offset
            && sent.current_leader_epoch == request.current_leader_epoch
            && (sent.last_fetched_epoch == request.last_fetched_epoch || request.last_fetched_epoch.is_none());
        if !matches {
            return Ok(());
        }
        replica.fetch = None;
        let Some(leader) = replica.engine.follower().map(|f| f.leader()) else { return Ok(()) };
        self.harness.current = format!("b{id} p{p} fetch reply {response:?}");
        let before = replica.log.log_end();
        let mut log = replica.log.at(millis(now));
        let action = replica
            .engine
            .handle_fetched(now, &sent, response, &records[..], &mut log)
            .map_err(|e| format!("b{id} p{p}: the follower's log refused what the fetch asked of it: {e}"))?;
        let cut = match action {
            FollowerAction::Truncate { offset } => Some((offset, before)),
            FollowerAction::ResetTo { .. } => Some((0, before)),
            FollowerAction::Backoff { until } => {
                replica.fetch_not_before = until;
                None
            }
            FollowerAction::Continue => {
                replica.fetch_not_before = now;
                None
            }
            FollowerAction::Append | FollowerAction::AwaitMetadata | FollowerAction::Stale => None,
        };
        let (leo, hw, start) = (replica.log.log_end(), replica.engine.high_watermark(), replica.log.log_start_offset());
        self.oracle.observe_log_start(p, id, start)?;
        if leo > before && action == FollowerAction::Append {
            let text = format!("b{id} p{p} appends {} from b{leader} => leo {leo} hw {hw}", leo - before);
            self.harness.trace.line(now, format_args!("{text}"));
        }
        if let Some((offset, before)) = cut {
            self.stats.truncations += 1;
            self.harness
                .trace
                .line(now, format_args!("b{id} p{p} truncates to {offset} (log ended at {before}, now at {leo})"));
            self.oracle.cut(p, id, offset);
            let logs: Vec<&SimLog> = self.brokers.iter().map(|b| &b.replicas[p].log).collect();
            self.oracle.check_not_lost(p, offset, logs.into_iter())?;
        }
        if matches!(action, FollowerAction::Append | FollowerAction::Truncate { .. } | FollowerAction::ResetTo { .. }) {
            self.maybe_fetch(b, p);
        }
        Ok(())
    }

    /// A producer's batch for `value` reaches broker `b`: appended as leader (the broker's
    /// `append_as_leader`), then answered once the high watermark passes it.
    fn handle_produce(&mut self, b: usize, p: usize, value: u64, attempt: u64, batch: &[u8]) -> Result<(), String> {
        let now = self.harness.now;
        let client = self.client_index();
        let id = self.brokers[b].id;
        let replica = &mut self.brokers[b].replicas[p];
        let refusal = match replica.engine.leader() {
            Some(leader) => leader.check_produce(-1).err(),
            None => Some(ErrorCode::NotLeaderOrFollower),
        };
        if let Some(code) = refusal {
            self.send(b, client, Message::ProduceReply { partition: p, value, attempt, result: Err(code) });
            return Ok(());
        }
        let Some(leader) = replica.engine.leader_mut() else { return Ok(()) };
        let epoch = leader.leader_epoch();
        // Idempotence is keel-storage's: a retry of a batch the log's producer state holds is
        // answered with the original offsets, never appended twice; a sequence gap or an
        // unknown producer is refused.
        let info = match replica.log.append(batch, epoch, millis(now)) {
            Ok(info) => info,
            Err(AppendError::Producer { producer_id, error }) => {
                let text = format!("b{id} p{p} refuses v{value} from producer {producer_id}: {error}");
                self.harness.trace.line(now, format_args!("{text}"));
                let result = Err(error.error_code());
                self.send(b, client, Message::ProduceReply { partition: p, value, attempt, result });
                return Ok(());
            }
            Err(error) => {
                return Err(format!("b{id} p{p}: leader in epoch {} failed to append v{value}: {error}", epoch.0))
            }
        };
        let offset = info.base_offset;
        if info.duplicate {
            // The producer resends a batch only unchanged, so the original holds this value,
            // unless retention has deleted it since (the log's producer state still answers).
            let held = replica.log.get(offset);
            if offset >= replica.log.log_start_offset() && held.map(|r| r.1) != Some(value) {
                return Err(format!(
                    "storage: b{id} p{p} answered a retry of v{value} as a duplicate of offset {offset}, which holds {held:?}"
                ));
            }
        } else {
            self.oracle.record_written(p, value, now);
        }
        leader.handle_local_append(now, replica.log.log_end());
        let waiter = leader.add_waiter(now, offset + 1, now + PRODUCE_TIMEOUT);
        replica.waiters.insert(waiter, (value, attempt, offset));
        self.release_parked(b, p, true)
    }

    /// InitProducerId: an id from the broker's block, or COORDINATOR_LOAD_IN_PROGRESS (which
    /// the producer retries) while the broker waits for a block from the controller.
    fn hand_out_producer_id(&mut self, b: usize) -> Result<Result<i64, ErrorCode>, String> {
        let id = self.brokers[b].producer_ids.next_id();
        // Ask for the first block, or the next one once 90% of the current one is used.
        self.request_producer_ids(b);
        let Some(id) = id else { return Ok(Err(ErrorCode::CoordinatorLoadInProgress)) };
        if !self.producer_ids_handed_out.insert(id) {
            return Err(format!("producer id {id} handed out twice (now by b{})", self.brokers[b].id));
        }
        Ok(Ok(id))
    }

    /// Sends AllocateProducerIds if the broker's allocator asks for a block and the broker
    /// has a registration to ask in.
    fn request_producer_ids(&mut self, b: usize) {
        let now = self.harness.now;
        let broker = &mut self.brokers[b];
        let Some(broker_epoch) = broker.broker_epoch else { return };
        if broker.producer_ids.poll_request(now) {
            let request = self.next_block_request;
            self.next_block_request += 1;
            broker.producer_ids_request = Some((request, now));
            self.send_call(b, Call::AllocateProducerIds { broker_epoch, request });
        }
    }

    /// Brings each partition's role in line with the broker's replayed metadata, once it has
    /// replayed its own registration: keel-replication's [`Replica::apply_image`], as the
    /// broker calls it.
    fn apply_roles(&mut self, b: usize) -> Result<(), String> {
        if !self.brokers[b].caught_up() && self.options.mutation != Some(ClusterMutation::NoMetadataGate) {
            return Ok(());
        }
        let now = self.harness.now;
        let id = self.brokers[b].id;
        let topic_id = self.topic_id;
        let image = std::mem::take(&mut self.brokers[b].metadata.image);
        let client = self.client_index();
        for p in 0..self.options.partitions {
            if let Some(registration) = image.partition(topic_id, p as i32) {
                self.harness.current = format!("b{id} p{p} gets metadata {}", show_registration(registration));
            }
            let replica = &mut self.brokers[b].replicas[p];
            let change = replica.engine.apply_image(now, &image, topic_id, p as i32, &replica.log);
            let mut replies = Vec::new();
            for (waiter, result) in replica.engine.drain_completed() {
                if let Some((value, attempt, offset)) = replica.waiters.remove(&waiter) {
                    if result.is_ok() {
                        self.oracle.check_acknowledgement(p, id, &replica.log, value, offset)?;
                    }
                    replies.push((value, attempt, result.map(|()| offset)));
                }
            }
            if change != RoleChange::Unchanged {
                replica.fetch = None;
                replica.alter_isr = None;
                replica.fetch_not_before = now;
            }
            let (log_end, hw) = (replica.log.log_end(), replica.engine.high_watermark());
            for (value, attempt, result) in replies {
                self.send(b, client, Message::ProduceReply { partition: p, value, attempt, result });
            }
            let text = match change {
                RoleChange::Unchanged => continue,
                RoleChange::Leads(epoch) => format!("b{id} p{p} leads epoch {} (log end {log_end}, hw {hw})", epoch.0),
                RoleChange::Follows(leader, epoch) => format!("b{id} p{p} follows b{leader} in epoch {}", epoch.0),
                RoleChange::Offline => format!("b{id} p{p} has no leader to follow"),
                RoleChange::Refused(reason) => format!("b{id} p{p} refuses its role: {reason}"),
            };
            self.harness.trace.line(now, format_args!("{text}"));
        }
        self.brokers[b].metadata.image = image;
        for p in 0..self.options.partitions {
            self.maybe_fetch(b, p);
        }
        Ok(())
    }

    /// The broker process stops; `marker` says whether the next start finds a clean-shutdown
    /// marker (naming the broker epoch it had). Its controller, if any, stops with it.
    fn stop(&mut self, b: usize, marker: bool, controller_clean: bool) -> String {
        let controller = self.stop_member(b, controller_clean);
        let broker = &mut self.brokers[b];
        broker.up = false;
        broker.process += 1;
        broker.marker = if marker { broker.broker_epoch } else { None };
        broker.broker_epoch = None;
        broker.metadata = MetadataReplay::default();
        broker.controller_hint = None;
        broker.call_since = None;
        broker.metadata_sent = None;
        broker.register_sent = None;
        broker.shutdown_requested = None;
        broker.shutdown_granted = false;
        broker.producer_ids = ProducerIdAllocator::new();
        broker.producer_ids_request = None;
        for replica in &mut broker.replicas {
            replica.engine = Replica::new(self.options.replica_config(broker.id));
            replica.waiters.clear();
            replica.fetch = None;
            replica.flushing = false;
            replica.parked.clear();
            replica.alter_isr = None;
        }
        controller
    }

    /// A crash: the broker's disk is what a power loss leaves of it (each file keeps what was
    /// synced and a random part of its later writes, the last possibly torn), and every log
    /// is recovered from that image at once: what the restarted broker will find, and what a
    /// stopped broker holds meanwhile as far as the oracle is concerned.
    fn crash(&mut self, b: usize, downtime: Duration) -> Result<(), String> {
        if !self.brokers[b].up {
            return Ok(());
        }
        let id = self.brokers[b].id;
        let image = self.brokers[b].disk.crash(&mut self.disk_rng);
        let mut lost_text = Vec::new();
        for p in 0..self.options.partitions {
            let log = &self.brokers[b].replicas[p].log;
            let (flushed, end) = (log.flushed(), log.log_end());
            let (recovered, report) = log.reopen(&image, millis(self.harness.now))?;
            let cut = recovered.log_end();
            self.stats.recovery_cuts += u64::from(report.truncated_at.is_some());
            lost_text.push(format!("p{p} {end}->{cut} (flushed {flushed}{})", show_recovery(&report)));
            self.brokers[b].replicas[p].log = recovered;
            if cut < end {
                self.stats.records_lost_in_crashes += (end - cut) as u64;
                self.oracle.record_loss(p, id, cut, self.harness.now);
                let logs: Vec<&SimLog> = self.brokers.iter().map(|b| &b.replicas[p].log).collect();
                self.oracle.check_not_lost(p, cut, logs.into_iter())?;
            }
        }
        self.brokers[b].disk = image;
        let controller = self.stop(b, false, false);
        self.stats.lossy_crashes += 1;
        let process = self.brokers[b].process;
        self.harness.trace.line(
            self.harness.now,
            format_args!(
                "CRASH b{id} for {} ms, logs recovered: {}{controller}",
                downtime.as_millis(),
                lost_text.join(", ")
            ),
        );
        self.harness.schedule(self.harness.now + downtime, Event::Restart { broker: b, process });
        Ok(())
    }

    /// Whether a disk swap on broker `b` takes its controller's Raft state with it.
    fn swap_loses_raft_state(&self, b: usize) -> bool {
        let on_data_disk =
            self.options.metadata_on_data_disk || self.options.mutation == Some(ClusterMutation::TrustLostState);
        on_data_disk && self.is_voter(b)
    }

    /// Whether every voter but `b` trusts the Raft state on its disk.
    fn others_trusted(&self, b: usize) -> bool {
        (0..self.voters.len())
            .filter(|&v| v != b)
            .all(|v| self.voters[v].store.durable().recovery == keel_raft::Recovery::Trusted)
    }

    /// A crash after which the broker comes back on an empty data directory.
    fn swap_disk(&mut self, b: usize, downtime: Duration) -> Result<(), String> {
        if !self.brokers[b].up {
            return Ok(());
        }
        let id = self.brokers[b].id;
        let disk = CrashBackend::new();
        for p in 0..self.options.partitions {
            let (empty, _) = SimLog::open(&disk, log_dir(p), self.log_config.clone(), millis(self.harness.now))?;
            let log = &mut self.brokers[b].replicas[p].log;
            let lost = log.log_end() - log.log_start_offset();
            *log = empty;
            self.stats.records_lost_in_crashes += lost as u64;
            self.oracle.record_loss(p, id, 0, self.harness.now);
            let logs: Vec<&SimLog> = self.brokers.iter().map(|b| &b.replicas[p].log).collect();
            self.oracle.check_not_lost(p, 0, logs.into_iter())?;
        }
        self.brokers[b].disk = disk;
        let fresh_is_clean = self.options.mutation == Some(ClusterMutation::FreshDirectoryIsClean);
        // Unless the metadata log is on the data disk, the controller's Raft store crashes as
        // in any crash (see docs/simulator.md).
        let mut controller = self.stop(b, fresh_is_clean, false);
        if self.swap_loses_raft_state(b) {
            // Formatted again (the bootstrap snapshot), and not trusted: it must recover.
            let lost = Durable { recovery: keel_raft::Recovery::Probing, ..self.formatted.clone() };
            self.voters[b].store = RaftStore::formatted(lost);
            controller = "; its controller's Raft state is gone with the disk".to_string();
        }
        self.stats.disk_swaps += 1;
        let process = self.brokers[b].process;
        self.harness.trace.line(
            self.harness.now,
            format_args!(
                "CRASH b{id} for {} ms; it returns with an empty data directory{controller}",
                downtime.as_millis()
            ),
        );
        self.harness.schedule(self.harness.now + downtime, Event::Restart { broker: b, process });
        Ok(())
    }

    /// A clean shutdown: every log is closed (flushed, with a clean checkpoint), and opened
    /// again when the broker restarts.
    fn stop_cleanly(&mut self, b: usize) -> Result<(), String> {
        let id = self.brokers[b].id;
        let granted = self.brokers[b].shutdown_granted;
        for replica in &mut self.brokers[b].replicas {
            replica.log.close(millis(self.harness.now))?;
        }
        self.stop(b, true, true);
        self.stats.clean_restarts += 1;
        let downtime = self.downtime();
        let process = self.brokers[b].process;
        self.harness.trace.line(
            self.harness.now,
            format_args!(
                "b{id} stops cleanly ({}) for {} ms",
                if granted { "controlled shutdown granted" } else { "controlled shutdown timed out" },
                downtime.as_millis()
            ),
        );
        self.harness.schedule(self.harness.now + downtime, Event::Restart { broker: b, process });
        Ok(())
    }

    /// The broker starts again: it opens the logs it closed cleanly (a crashed broker's were
    /// recovered when it crashed).
    fn restart(&mut self, b: usize) -> Result<(), String> {
        let now_ms = millis(self.harness.now);
        let broker = &mut self.brokers[b];
        for (p, replica) in broker.replicas.iter_mut().enumerate() {
            if replica.log.is_closed() {
                let (reopened, report) = replica.log.reopen(&broker.disk, now_ms)?;
                if !report.clean_shutdown || report.scanned_bytes > 0 {
                    return Err(format!(
                        "storage: b{} p{p} closed cleanly but opened without a clean checkpoint: {report:?}",
                        broker.id
                    ));
                }
                replica.log = reopened;
            }
        }
        broker.up = true;
        broker.next_metadata = self.harness.now;
        let (id, process, marker) = (broker.id, broker.process, broker.marker);
        self.harness.trace.line(self.harness.now, format_args!("b{id} starts, clean-shutdown marker {marker:?}"));
        self.harness.schedule(self.harness.now, Event::BrokerTick { broker: b, process });
        self.schedule_maintenance(b);
        if self.is_voter(b) {
            self.start_member(b)?;
        }
        Ok(())
    }

    // ---- the checks ----------------------------------------------------------------------

    /// Every ISR and ELR member of the controller's committed image whose state is current
    /// (its broker runs the process the image registered) holds every committed record.
    fn check_members(&mut self) -> Result<(), String> {
        for p in 0..self.options.partitions {
            let Some(registration) = self.committed.image.partition(self.topic_id, p as i32) else { continue };
            for (role, members) in [("ISR", &registration.isr), ("ELR", &registration.elr)] {
                for &member in members {
                    let broker = &self.brokers[member.0 as usize - 1];
                    let registered = self.committed.image.broker(member).map(|r| r.broker_epoch);
                    if broker.up && broker.broker_epoch.is_some() && broker.broker_epoch == registered {
                        self.oracle.check_member(p, member, &broker.replicas[p].log, role)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// At the end: every log's stored batches pass keel-storage's verification (CRCs
    /// included) and say what the simulation read from them all along.
    fn check_storage(&self) -> Result<(), String> {
        for broker in &self.brokers {
            for (p, replica) in broker.replicas.iter().enumerate() {
                replica.log.verify().map_err(|e| format!("b{} p{p}: {e}", broker.id))?;
            }
        }
        Ok(())
    }

    // ---- clients -------------------------------------------------------------------------

    /// Where a client believes the leader of `p` is: the view of a random running broker.
    fn believed_leader(&mut self, p: usize) -> Option<(usize, LeaderEpoch)> {
        let up: Vec<usize> = (0..self.brokers.len()).filter(|&b| self.brokers[b].up).collect();
        if up.is_empty() {
            return None;
        }
        let b = up[self.client_rng.below(up.len() as u64) as usize];
        let registration = self.brokers[b].metadata.image.partition(self.topic_id, p as i32)?;
        let leader = registration.leader?;
        Some((leader.0 as usize - 1, registration.leader_epoch))
    }

    fn client_step(&mut self) -> Result<(), String> {
        for p in 0..self.options.partitions {
            self.producer_step(p);
            self.consumer_step(p);
        }
        let next = ms(self.client_rng.range_inclusive(2, 30));
        self.harness.schedule(self.harness.now + next, Event::Client);
        Ok(())
    }

    /// The producer of `p`: first a producer id from any broker; then one request in flight
    /// (max.in.flight.requests.per.connection=1), sent again unchanged until acknowledged.
    fn producer_step(&mut self, p: usize) {
        let now = self.harness.now;
        let producing = self.harness.phase == Phase::Safety;
        let producer = &self.producers[p];
        if producer.producer_id.is_none() {
            if producing {
                self.init_producer_id(p);
            }
            return;
        }
        if producer.in_flight.is_none() && producing && self.client_rng.chance(1, PRODUCER_REPLACED_ONE_IN) {
            let old = self.producers[p].producer_id.take().expect("a producer id");
            self.harness.trace.line(now, format_args!("the producer {old} of p{p} is replaced by a new one"));
            return;
        }
        let send = match &self.producers[p].in_flight {
            None if producing && self.client_rng.chance(1, 2) => {
                let value = self.next_value;
                self.next_value += 1;
                self.stats.records_produced += 1;
                let timestamp_ms = self.create_time(p);
                self.producers[p].start(value, timestamp_ms, now);
                true
            }
            Some(in_flight) => {
                let due = match in_flight.sent {
                    Some(sent) => now >= sent + PRODUCE_RETRY,
                    None => now >= in_flight.not_before,
                };
                self.stats.produce_retries += u64::from(due);
                due
            }
            None => false,
        };
        if send {
            self.send_produce(p);
        }
    }

    /// The CreateTime of producer `p`'s next record: now, or, while the producer writes old
    /// records, older than `retention.ms`, so the record may go as soon as its segment rolls
    /// and the high watermark passes it.
    fn create_time(&mut self, p: usize) -> i64 {
        let now_ms = millis(self.harness.now);
        let Some(retention_ms) = self.retention.retention_ms.filter(|_| self.retention.old_timestamps) else {
            return now_ms;
        };
        let producer = &mut self.producers[p];
        if self.retention_rng.chance(1, 8) {
            producer.writes_old = !producer.writes_old;
        }
        if !producer.writes_old {
            return now_ms;
        }
        now_ms - retention_ms as i64 - self.retention_rng.range_inclusive(1, 60_000) as i64
    }

    /// Sends the batch in flight to the leader the producer believes in, or backs off.
    fn send_produce(&mut self, p: usize) {
        let now = self.harness.now;
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let leader = self.believed_leader(p);
        let backoff = ms(self.client_rng.range_inclusive(1, CLIENT_BACKOFF_MS_MAX));
        let in_flight = self.producers[p].in_flight.as_mut().expect("a batch to send");
        in_flight.attempt = attempt;
        match leader {
            Some((leader, _)) => {
                in_flight.sent = Some(now);
                let (value, batch) = (in_flight.value, in_flight.batch.clone());
                let client = self.client_index();
                self.send(client, leader, Message::Produce { partition: p, value, attempt, batch });
            }
            None => {
                in_flight.sent = None;
                in_flight.not_before = now + backoff;
            }
        }
    }

    /// Sends InitProducerId to a random running broker (Kafka's producer asks the least loaded
    /// one), unless one is out or backing off.
    fn init_producer_id(&mut self, p: usize) {
        let now = self.harness.now;
        let producer = &self.producers[p];
        let due = match producer.init_sent {
            Some(sent) => now >= sent + INIT_PRODUCER_ID_TIMEOUT,
            None => now >= producer.init_not_before,
        };
        let up: Vec<usize> = (0..self.brokers.len()).filter(|&b| self.brokers[b].up).collect();
        if !due || up.is_empty() {
            return;
        }
        let to = up[self.client_rng.below(up.len() as u64) as usize];
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let producer = &mut self.producers[p];
        producer.init_attempt = attempt;
        producer.init_sent = Some(now);
        let client = self.client_index();
        self.send(client, to, Message::InitProducerId { partition: p, attempt });
    }

    /// The consumer of `p` fetches from the leader it believes in, unless a fetch is out.
    fn consumer_step(&mut self, p: usize) {
        let now = self.harness.now;
        if self.consumers[p].sent.is_some_and(|sent| now < sent + CONSUMER_TIMEOUT) {
            return;
        }
        let Some((leader, epoch)) = self.believed_leader(p) else { return };
        let consumer = &mut self.consumers[p];
        consumer.leader_epoch = consumer.leader_epoch.max(epoch);
        consumer.attempt += 1;
        consumer.sent = Some(now);
        let (leader_epoch, attempt) = (consumer.leader_epoch, consumer.attempt);
        let message = if consumer.resetting {
            Message::ListOffsets { partition: p, leader_epoch, attempt }
        } else {
            Message::ConsumerFetch { partition: p, offset: consumer.position, leader_epoch, attempt }
        };
        let client = self.client_index();
        self.send(client, leader, message);
    }

    fn client_receive(&mut self, message: Message) -> Result<(), String> {
        match message {
            Message::InitProducerIdReply { partition, attempt, result } => {
                self.handle_init_producer_id_reply(partition, attempt, result);
                Ok(())
            }
            Message::ProduceReply { partition, value, attempt, result } => {
                self.handle_produce_reply(partition, value, attempt, result)
            }
            Message::ConsumerReply { partition, offset, attempt, result } => {
                self.handle_consumer_reply(partition, offset, attempt, result)
            }
            Message::ListOffsetsReply { partition, attempt, result } => {
                self.handle_list_offsets_reply(partition, attempt, result)
            }
            other => Err(format!("simulator bug: a client got {other:?}")),
        }
    }

    fn handle_init_producer_id_reply(&mut self, p: usize, attempt: u64, result: Result<i64, ErrorCode>) {
        let now = self.harness.now;
        let producer = &mut self.producers[p];
        if producer.producer_id.is_some() || producer.init_attempt != attempt || producer.init_sent.is_none() {
            return;
        }
        producer.init_sent = None;
        match result {
            Ok(id) => {
                producer.initialized(id);
                self.stats.producer_ids += 1;
                self.harness.trace.line(now, format_args!("producer of p{p} gets producer id {id}"));
            }
            Err(code) => {
                producer.init_not_before = now + ms(self.client_rng.range_inclusive(1, CLIENT_BACKOFF_MS_MAX));
                self.harness.trace.line(now, format_args!("producer of p{p}: InitProducerId failed: {code:?}"));
            }
        }
    }

    fn handle_produce_reply(
        &mut self,
        p: usize,
        value: u64,
        attempt: u64,
        result: Result<i64, ErrorCode>,
    ) -> Result<(), String> {
        let now = self.harness.now;
        let producer = &mut self.producers[p];
        let in_flight = producer.in_flight.as_ref().filter(|f| f.value == value);
        let current = in_flight.is_some_and(|f| f.attempt == attempt);
        match result {
            Ok(offset) => {
                // A late answer to an earlier attempt acknowledges the value too.
                self.oracle.record_ack(p, value, offset)?;
                if in_flight.is_some() {
                    self.harness.trace.line(now, format_args!("producer: v{value} acked at p{p} offset {offset}"));
                    producer.acknowledged();
                }
            }
            Err(code) if current => {
                let backoff = ms(self.client_rng.range_inclusive(1, CLIENT_BACKOFF_MS_MAX));
                self.harness.trace.line(now, format_args!("producer: v{value} to p{p} failed: {code:?}"));
                self.handle_produce_error(p, value, code)?;
                let in_flight = self.producers[p].in_flight.as_mut().expect("the batch in flight");
                in_flight.sent = None;
                in_flight.not_before = now + backoff;
            }
            Err(_) => {}
        }
        Ok(())
    }

    fn handle_consumer_reply(
        &mut self,
        p: usize,
        offset: i64,
        attempt: u64,
        result: Result<(i64, Bytes), ErrorCode>,
    ) -> Result<(), String> {
        // A late or duplicated answer is ignored.
        if self.consumers[p].attempt != attempt || self.consumers[p].sent.is_none() {
            return Ok(());
        }
        self.consumers[p].sent = None;
        let (hw, bytes) = match result {
            Ok(answer) => answer,
            // Below the leader's log start (retention deleted what the consumer has not read
            // yet), or beyond a new leader's log end: Kafka's consumer with
            // auto.offset.reset=earliest looks up the earliest offset and moves there.
            Err(ErrorCode::OffsetOutOfRange) => {
                self.consumers[p].resetting = true;
                return Ok(());
            }
            Err(_) => return Ok(()),
        };
        // A new leader may answer with a high watermark below the one its predecessor exposed
        // (the broker does, as Kafka does: only ListOffsets waits for it). That is no loss:
        // every record read is checked instead.
        if hw < self.consumers[p].high_watermark {
            self.stats.consumer_high_watermark_regressions += 1;
        }
        let position = self.consumers[p].position;
        assert_eq!(position, offset, "simulator bug: an answer for another position");
        // The consumer decodes the batches (checking their CRCs) and reads each record's
        // identity from them.
        let records = records_in(&bytes).map_err(|e| format!("a consumer of p{p} at {position}: {e}"))?;
        for (i, (at, record)) in records.iter().enumerate() {
            if *at != position + i as i64 {
                return Err(format!("a consumer of p{p} read a batch at {at} where {} was due", position + i as i64));
            }
            self.oracle.check_read(p, *at, *record)?;
        }
        let consumer = &mut self.consumers[p];
        consumer.high_watermark = consumer.high_watermark.max(hw);
        consumer.position += records.len() as i64;
        self.stats.records_consumed += records.len() as u64;
        Ok(())
    }

    /// The leader's log start, asked for after OFFSET_OUT_OF_RANGE: the consumer moves there.
    fn handle_list_offsets_reply(
        &mut self,
        p: usize,
        attempt: u64,
        result: Result<i64, ErrorCode>,
    ) -> Result<(), String> {
        let consumer = &mut self.consumers[p];
        if consumer.attempt != attempt || consumer.sent.is_none() || !consumer.resetting {
            return Ok(());
        }
        consumer.sent = None;
        let Ok(log_start) = result else { return Ok(()) };
        let from = consumer.position;
        consumer.position = log_start;
        consumer.resetting = false;
        self.stats.consumer_resets += 1;
        self.harness.trace.line(
            self.harness.now,
            format_args!("consumer of p{p}: offset {from} out of range, resets to the log start {log_start}"),
        );
        self.oracle.check_consumer_reset(p, from, log_start)
    }

    /// An error for the batch in flight: every one is retried; KIP-360's two (the partition
    /// lost the producer's state, or a gap precedes the batch) with a new producer epoch.
    fn handle_produce_error(&mut self, p: usize, value: u64, code: ErrorCode) -> Result<(), String> {
        let producer = &mut self.producers[p];
        match code {
            ErrorCode::UnknownProducerId | ErrorCode::OutOfOrderSequenceNumber => {
                producer.bump_epoch();
                self.oracle.record_resent(p, value);
                self.stats.producer_epoch_bumps += 1;
                let (id, epoch) = (producer.producer_id.expect("a producer id"), producer.producer_epoch);
                self.harness.trace.line(
                    self.harness.now,
                    format_args!("producer {id} of p{p} bumps its epoch to {epoch}: v{value} again as sequence 0"),
                );
                Ok(())
            }
            // The batch in flight carries the producer's newest epoch; no log can hold a newer.
            ErrorCode::InvalidProducerEpoch | ErrorCode::ProducerFenced => {
                Err(format!("p{p}: the batch in flight for v{value} was refused as fenced ({code:?})"))
            }
            _ => Ok(()),
        }
    }

    // ---- faults --------------------------------------------------------------------------

    /// Cuts links among the nodes (brokers and the controllers on them; clients stay
    /// connected).
    fn partition(&mut self) {
        let brokers = self.brokers.len();
        let nodes = brokers;
        let (active, voters) = (self.active_controller(), self.voters.len());
        let rng = &mut self.harness.fault_rng;
        let mut links = Links::new();
        let name = |i: usize| format!("b{}", i + 1);
        let variant = rng.below(5);
        let victim = rng.below(brokers as u64) as usize;
        let shape = match variant {
            0 => {
                isolate(&mut links, victim, nodes);
                format!("{} isolated", name(victim))
            }
            1 => {
                let controller = active.filter(|&a| a != victim).unwrap_or((victim + 1) % voters);
                cut_both(&mut links, victim, controller);
                format!("{} cut from the controller on {}", name(victim), name(controller))
            }
            2 => {
                isolate(&mut links, victim, brokers);
                format!("{} cut from the other brokers", name(victim))
            }
            3 => {
                let side: Vec<bool> = (0..nodes).map(|_| rng.chance(1, 2)).collect();
                split(&mut links, &side);
                format!("{} | {}", show_side(&side, true, name), show_side(&side, false, name))
            }
            _ => {
                cut_one_way_at_random(&mut links, nodes, rng, 4);
                format!("one-way cuts {}", show_links(&links, name))
            }
        };
        let flapping = self.harness.fault_rng.chance(1, 4);
        self.stats.partitions += 1;
        self.harness.partition_briefly(links, &shape, flapping);
    }
}

impl Scenario for Sim<'_> {
    type Event = Event;
    type Cut = Links;
    const EVENTS_MAX: u64 = EVENTS_MAX;

    fn harness(&self) -> &Harness<Event, Links> {
        &self.harness
    }

    fn harness_mut(&mut self) -> &mut Harness<Event, Links> {
        &mut self.harness
    }

    fn start(&mut self) -> Result<(), Failure> {
        for b in 0..self.brokers.len() {
            self.harness.schedule(Instant::ZERO, Event::BrokerTick { broker: b, process: 1 });
            self.schedule_maintenance(b);
        }
        for b in 0..self.voters.len() {
            self.guarded(|sim| sim.start_member(b))?;
        }
        self.harness.schedule(Instant::ZERO + ms(1), Event::Client);
        Ok(())
    }

    fn faults_from(&self) -> Option<Instant> {
        (!self.faults.is_empty() && self.options.safety_ms > 0).then_some(Instant::ZERO)
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver { to, message } => {
                self.network.in_flight = self.network.in_flight.saturating_sub(1);
                self.deliver(to, *message)
            }
            Event::BrokerTick { broker, process } => {
                if self.brokers[broker].up && self.brokers[broker].process == process {
                    self.broker_tick(broker)?;
                    self.harness.schedule(self.harness.now + BROKER_TICK, Event::BrokerTick { broker, process });
                }
                Ok(())
            }
            Event::Maintenance { broker, process } => {
                if self.brokers[broker].up && self.brokers[broker].process == process {
                    self.maintain(broker)?;
                    self.schedule_maintenance(broker);
                }
                Ok(())
            }
            Event::FlushDone { broker, process, partition } => {
                let b = &mut self.brokers[broker];
                if b.up && b.process == process {
                    // The simulated OS wrote the log's dirty pages back: fsync.
                    b.replicas[partition].log.flush(millis(self.harness.now))?;
                    b.replicas[partition].flushing = false;
                }
                Ok(())
            }
            Event::Restart { broker, process } => {
                if !self.brokers[broker].up && self.brokers[broker].process == process {
                    self.restart(broker)?;
                }
                Ok(())
            }
            Event::ControllerTick { broker, process } => {
                if self.brokers[broker].up && self.brokers[broker].process == process {
                    self.harness.current = format!("b{} controller tick", broker + 1);
                    self.with_member(broker, |member, now, _| {
                        let _ = member.handle_controller_tick(now, std::iter::empty());
                    })?;
                    self.harness
                        .schedule(self.harness.now + CONTROLLER_TICK, Event::ControllerTick { broker, process });
                }
                Ok(())
            }
            Event::RaftTimer { broker, process } => {
                if self.brokers[broker].up && self.brokers[broker].process == process {
                    self.voters[broker].timer = None;
                    self.harness.current = format!("b{} Raft timer", broker + 1);
                    self.with_member(broker, |member, now, rng| member.handle_timeout(now, rng))?;
                }
                Ok(())
            }
            Event::RaftWrite { broker, process } => {
                if self.brokers[broker].up && self.brokers[broker].process == process {
                    self.raft_write_done(broker)?;
                }
                Ok(())
            }
            Event::Client => self.client_step(),
        }
    }

    fn inject_fault(&mut self) -> Result<(), String> {
        let kind = self.harness.draw_fault(&self.faults, FaultKind::weight);
        let total = self.brokers.len();
        let up: Vec<usize> = (0..total).filter(|&b| self.brokers[b].up).collect();
        let pick = |sim: &mut Sim<'_>, among: &[usize]| -> Option<usize> {
            if among.is_empty() {
                return None;
            }
            // Half the time a broker that leads something: failover is where the rules matter.
            let leaders: Vec<usize> = among
                .iter()
                .copied()
                .filter(|&b| sim.brokers[b].replicas.iter().any(|r| r.engine.leader().is_some()))
                .collect();
            if !leaders.is_empty() && sim.harness.fault_rng.chance(1, 2) {
                return Some(leaders[sim.harness.fault_rng.below(leaders.len() as u64) as usize]);
            }
            Some(among[sim.harness.fault_rng.below(among.len() as u64) as usize])
        };
        match kind {
            FaultKind::LossyCrash => {
                if let Some(victim) = pick(self, &up) {
                    let downtime = self.downtime();
                    self.crash(victim, downtime)?;
                }
            }
            FaultKind::CleanRestart => {
                let candidates: Vec<usize> =
                    up.iter().copied().filter(|&b| self.brokers[b].shutdown_requested.is_none()).collect();
                if let Some(victim) = pick(self, &candidates) {
                    self.brokers[victim].shutdown_requested = Some(self.harness.now);
                    self.brokers[victim].next_heartbeat = self.harness.now;
                    let id = self.brokers[victim].id;
                    self.harness.trace.line(self.harness.now, format_args!("b{id} begins a controlled shutdown"));
                }
            }
            FaultKind::PowerLoss => {
                self.stats.power_losses += 1;
                self.harness.trace.line(self.harness.now, format_args!("power loss: every broker crashes"));
                // Crashing draws nothing from the fault stream, so the downtimes may all be
                // drawn first.
                for (b, downtime) in self.harness.power_loss_downtimes(total).into_iter().enumerate() {
                    self.crash(b, downtime)?;
                }
            }
            FaultKind::Partition => self.partition(),
            FaultKind::SlowDisk => {
                let (victim, until) = self.harness.draw_spell(total, 100);
                let broker = &mut self.brokers[victim];
                broker.slow_disk_until = broker.slow_disk_until.max(until);
                self.stats.slow_disks += 1;
                let id = broker.id;
                self.harness
                    .trace
                    .line(self.harness.now, format_args!("disk of b{id} slow until {} ms", until.as_millis()));
            }
            FaultKind::DiskSwap => {
                // With the metadata log on the data disk, a voter's disk is replaced only while
                // every other voter trusts its own Raft state (two voters forgetting at once is
                // more than Raft tolerates), and never the only voter's, whose disk holds the
                // cluster's only copy of its metadata (docs/raft.md).
                let swappable: Vec<usize> = up
                    .iter()
                    .copied()
                    .filter(|&b| !self.swap_loses_raft_state(b) || (self.voters.len() > 1 && self.others_trusted(b)))
                    .collect();
                if let Some(victim) = pick(self, &swappable) {
                    let downtime = self.downtime();
                    self.swap_disk(victim, downtime)?;
                }
            }
            FaultKind::ClusterRestart => {
                self.stats.cluster_restarts += 1;
                self.harness.trace.line(self.harness.now, format_args!("the whole cluster shuts down cleanly"));
                for &b in &up {
                    if self.brokers[b].shutdown_requested.is_none() {
                        self.brokers[b].shutdown_requested = Some(self.harness.now);
                        self.brokers[b].next_heartbeat = self.harness.now;
                    }
                }
            }
            FaultKind::MinIsrChange => {
                let min_isr =
                    self.harness.fault_rng.range_inclusive(1, self.options.replication_factor as u64) as usize;
                self.change_min_isr(min_isr)?;
            }
            FaultKind::MetadataStall => {
                let (victim, until) = self.harness.draw_spell(total, 200);
                let broker = &mut self.brokers[victim];
                broker.metadata_stalled_until = broker.metadata_stalled_until.max(until);
                self.stats.metadata_stalls += 1;
                let id = broker.id;
                self.harness.trace.line(
                    self.harness.now,
                    format_args!("b{id} stops replaying metadata until {} ms", until.as_millis()),
                );
            }
        }
        Ok(())
    }

    fn start_liveness(&mut self) -> Result<(), String> {
        self.harness.trace.line(
            self.harness.now,
            format_args!("liveness phase: faults stop, the network heals, brokers restart, the producer stops"),
        );
        self.network.calm();
        self.heal();
        for b in 0..self.brokers.len() {
            self.brokers[b].slow_disk_until = self.harness.now;
            self.brokers[b].metadata_stalled_until = self.harness.now;
            if !self.brokers[b].up {
                self.restart(b)?;
            }
        }
        Ok(())
    }

    /// Every broker runs, is registered and active, and has replayed all metadata; the
    /// producer has nothing in flight and the consumer has read everything committed; every
    /// partition with an ISR or ELR member has a leader
    /// that has committed its whole log, which every replica holds, acknowledged records
    /// included.
    fn converged(&self) -> bool {
        // An active controller that has applied everything it committed; every broker has
        // replayed all of it.
        let Some(active) = self.active_controller().and_then(|b| self.member(b)) else { return false };
        let committed = active.image();
        if active.raft().applied_index() != active.raft().last_index() || committed != &self.committed.image {
            return false;
        }
        for broker in &self.brokers {
            let registered = broker.broker_epoch.and_then(|_| committed.broker(broker.id));
            if !broker.up
                || broker.shutdown_requested.is_some()
                || !registered.is_some_and(|r| Some(r.broker_epoch) == broker.broker_epoch && r.is_active())
                || &broker.metadata.image != committed
            {
                return false;
            }
        }
        for p in 0..self.options.partitions {
            let Some(registration) = committed.partition(self.topic_id, p as i32) else { return false };
            if registration.isr.is_empty() && registration.elr.is_empty() {
                // No replica may lead: the partition stays unavailable (an operator's unclean
                // recovery is the way out), and its producer waits.
                continue;
            }
            if self.producers[p].in_flight.is_some() {
                return false;
            }
            let Some(leader) = registration.leader else { return false };
            let replica = &self.brokers[leader.0 as usize - 1].replicas[p];
            let Some(core) = replica.engine.leader() else { return false };
            let end = replica.log.log_end();
            // The consumer has read everything committed that the leader holds: a leader whose
            // log lost committed records beyond the loss bound (the only replica of a partition,
            // back after a crash, leads again) cannot serve them, which the safety checks judge.
            if self.consumers[p].position < self.oracle.committed_end(p).min(end) {
                return false;
            }
            if core.leader_epoch() != registration.leader_epoch || core.high_watermark() != end {
                return false;
            }
            // Replicas agree where they overlap: retention may have moved their log starts apart.
            let start = replica.log.log_start_offset();
            for &r in &registration.replicas {
                let log = &self.brokers[r.0 as usize - 1].replicas[p].log;
                let from = start.max(log.log_start_offset());
                if log.log_end() != end || log.slice(from, end) != replica.log.slice(from, end) {
                    return false;
                }
            }
            // Acknowledged records below the leader's log start were deleted by retention.
            let oracle = &self.oracle.partitions[p];
            if oracle.acked.iter().any(|(&v, &o)| {
                o >= start && self.oracle.ack_promised(p, v, o) && replica.log.get(o).map(|r| r.1) != Some(v)
            }) {
                return false;
            }
        }
        true
    }

    fn not_converged(&self) -> String {
        let mut message =
            format!("the cluster did not converge within {} ms after faults stopped", self.options.liveness_ms);
        let committed = &self.committed.image;
        message.push_str(&format!("\n  metadata committed up to {}", self.committed.index));
        message.push_str(&self.describe_members());
        for broker in &self.brokers {
            let registered = committed.broker(broker.id);
            message.push_str(&format!(
                "\n  b{}: up {} broker epoch {:?} (registered {:?}, fenced {:?}) metadata {}/{}",
                broker.id,
                broker.up,
                broker.broker_epoch,
                registered.map(|r| r.broker_epoch),
                registered.map(|r| r.fenced),
                broker.metadata.index,
                self.committed.index
            ));
            for (p, replica) in broker.replicas.iter().enumerate() {
                let role = match replica.engine.role() {
                    Role::Offline { .. } => "none".to_string(),
                    Role::Leader(leader) => format!(
                        "leader e{} hw {} isr {} pending {:?}",
                        leader.leader_epoch().0,
                        leader.high_watermark(),
                        show_nodes(leader.isr()),
                        leader.pending_isr_change()
                    ),
                    Role::Follower(f) => format!(
                        "follower of b{} e{} hw {} awaiting metadata {}",
                        f.leader(),
                        f.leader_epoch().0,
                        f.high_watermark(),
                        f.is_awaiting_metadata()
                    ),
                };
                message.push_str(&format!(
                    "\n    p{p}: log [{}, {}) flushed {} {role}",
                    replica.log.log_start_offset(),
                    replica.log.log_end(),
                    replica.log.flushed()
                ));
            }
        }
        for p in 0..self.options.partitions {
            if let Some(registration) = committed.partition(self.topic_id, p as i32) {
                message.push_str(&format!("\n  p{p} committed: {}", show_registration(registration)));
            }
            let pending = self.producers[p]
                .in_flight
                .as_ref()
                .map(|f| format!(", producer waits for v{}", f.value))
                .unwrap_or_default();
            message.push_str(&format!(
                " (committed prefix {}, {} acked{pending})",
                self.oracle.committed_end(p),
                self.oracle.partitions[p].acked.len()
            ));
        }
        message
    }
    /// Convergence is checked on broker 1's ticks, every [`BROKER_TICK`].
    fn converges_after(event: &harness::Event<Event>) -> bool {
        matches!(event, harness::Event::Scenario(Event::BrokerTick { broker: 0, .. }))
    }

    fn after_event(&mut self) -> Result<(), String> {
        self.check_members()
    }

    fn validate_converged(&mut self) -> Result<(), String> {
        self.check_storage()
    }
}

impl fmt::Display for ClusterMutation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClusterMutation::NoElr => "no-elr",
            ClusterMutation::NoTruncate => "no-truncate",
            ClusterMutation::NoMetadataGate => "no-metadata-gate",
            ClusterMutation::FreshDirectoryIsClean => "fresh-directory-is-clean",
            ClusterMutation::TrustLostState => "trust-lost-state",
            ClusterMutation::RetentionIgnoresHighWatermark => "retention-ignores-high-watermark",
            ClusterMutation::TrustBelowLogStart => "trust-below-log-start",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_options_fail_in_setup() {
        for options in [
            ClusterSimOptions { brokers: 0, ..ClusterSimOptions::new(1) },
            ClusterSimOptions { replication_factor: 4, ..ClusterSimOptions::new(1) },
            ClusterSimOptions { min_isr: 0, ..ClusterSimOptions::new(1) },
            ClusterSimOptions { partitions: 0, ..ClusterSimOptions::new(1) },
        ] {
            let failure = run_cluster(&options).outcome.unwrap_err();
            assert_eq!(failure.phase, Phase::Setup, "{options:?}");
        }
    }
}
