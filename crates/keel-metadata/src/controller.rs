//! The active controller's decisions: broker registration, heartbeats and fencing, controlled
//! shutdown, topic creation with replica placement, partition changes, config changes,
//! producer-id blocks.
//!
//! A decision never changes anything by itself: it returns the records to append to the
//! metadata log, and has already applied them to the controller's working image (the committed
//! image plus every record decided since, as KRaft does), so the next decision sees them. If the
//! records never commit (leadership lost, a failed append), the caller must
//! [`Controller::reset`] to the committed image or drop the controller. A refused request
//! returns a [`Refusal`] and changes nothing.
//!
//! The caller reports every committed record with [`Controller::handle_committed`]: an answer
//! that releases a broker (controlled shutdown) is only given from committed state.

use std::collections::{BTreeMap, BTreeSet};

use keel_types::{BrokerEpoch, Duration, Entropy, ErrorCode, Instant, NodeId, Refusal, TopicId};

use crate::image::{self, MetadataImage, TopicImage, MIN_INSYNC_REPLICAS, UNCLEAN_LEADER_ELECTION_ENABLE};
use crate::partition::{AlterIsr, Eligibility, Mutation, PartitionRegistration};
use crate::producer_ids::{ProducerIdBlock, PRODUCER_ID_BLOCK_SIZE};
use crate::records::{Endpoint, MetadataRecord};
use crate::scram::{alter_scram_credentials, ScramDeletion, ScramUpsertion};

/// The controller's settings (Kafka's names in each field's documentation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ControllerConfig {
    /// `broker.session.timeout.ms`: a broker that has not heartbeated for this long is fenced.
    pub session_timeout: Duration,
    /// `num.partitions`: for a topic created with -1 partitions.
    pub default_partitions: i32,
    /// `default.replication.factor`: for a topic created with replication factor -1.
    pub default_replication_factor: i16,
    /// `min.insync.replicas`: written into a new topic's configs when the request does not set
    /// it, capped at the topic's replication factor so the topic can meet it.
    pub default_min_isr: usize,
    /// The most partitions one topic may have.
    pub topic_partitions_max: i32,
    /// `auto.leader.rebalance.enable`: move leadership back to preferred replicas.
    pub auto_leader_rebalance: bool,
    /// `leader.imbalance.check.interval.seconds`: how often.
    pub leader_imbalance_check_interval: Duration,
    /// A planted bug, for checker tests.
    pub mutation: Option<Mutation>,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            session_timeout: Duration::from_secs(9),
            default_partitions: 1,
            default_replication_factor: 1,
            default_min_isr: 1,
            topic_partitions_max: 10_000,
            auto_leader_rebalance: true,
            leader_imbalance_check_interval: Duration::from_secs(300),
            mutation: None,
        }
    }
}

impl ControllerConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.session_timeout == Duration::ZERO {
            return Err("broker session timeout must be positive".to_string());
        }
        if self.topic_partitions_max < 1 {
            return Err("the partition limit per topic must be at least 1".to_string());
        }
        if !(1..=self.topic_partitions_max).contains(&self.default_partitions) {
            return Err(format!(
                "default partitions {} must be between 1 and the limit per topic {}",
                self.default_partitions, self.topic_partitions_max
            ));
        }
        if self.default_replication_factor < 1 || self.default_min_isr < 1 {
            return Err("default replication factor and default min ISR must be at least 1".to_string());
        }
        Ok(())
    }
}

/// What a decision produced: the answer for the caller, and the records to append to the
/// metadata log as one entry (already applied to the working image). Answer only once the
/// records have committed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "the records must be appended to the metadata log"]
pub struct Decision<T> {
    pub reply: T,
    pub records: Vec<MetadataRecord>,
}

/// A broker process starting (Kafka's BrokerRegistration request).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BrokerRegistrationRequest {
    pub node: NodeId,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// The broker epoch named by the clean-shutdown marker the broker found in its data
    /// directory (KIP-966's `previousBrokerEpoch`): written after the final flush of a clean
    /// shutdown, with the epoch the broker was registered with then. `None` when there was no
    /// marker: after a crash, and on an empty or replaced data directory.
    pub previous_broker_epoch: Option<BrokerEpoch>,
    /// Random, drawn once by each broker process (Kafka's incarnation id).
    pub process_id: u128,
    /// The membership layer's incarnation of this process (0 when not known).
    pub incarnation: u64,
}

/// How a broker's registration follows the node's current registration in the metadata log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Restart {
    /// The broker's clean-shutdown marker names the epoch of the current registration: it
    /// flushed and closed everything after that registration's last write.
    Clean,
    /// Anything else: its replicas may have lost their unflushed tail.
    Unclean,
    /// The process that made the current registration registers again (its answer was lost,
    /// or its epoch went stale). It lost nothing since, and that registration already dealt
    /// with how it started (`clean_shutdown` is what it found then).
    SameProcess { clean_shutdown: bool },
}

/// The answer to a broker heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatReply {
    pub fenced: bool,
    /// The broker asked to shut down and, as committed, leads nothing any more: it may stop.
    pub should_shut_down: bool,
}

/// The active controller. See the module documentation for the contract.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Controller {
    config: ControllerConfig,
    /// The image of every committed record.
    committed: MetadataImage,
    /// `committed` plus the records decided since.
    image: MetadataImage,
    /// When each broker last heartbeated. Controller memory, not log: a new active controller
    /// starts without it.
    last_heartbeat: BTreeMap<NodeId, Instant>,
    /// When this controller became active. A broker it has not heard from yet gets a full
    /// session from here.
    active_since: Instant,
    /// Brokers the membership layer (keel-gossip) declared dead, with the incarnation it
    /// declared them dead at: they stay fenced, heartbeats or not, until it sees them alive
    /// at a higher incarnation.
    declared_dead: BTreeMap<NodeId, u64>,
    rebalance_deadline: Instant,
}

impl Controller {
    /// Becomes the active controller on top of `committed`, the image of every committed
    /// record. Panics on an invalid config: check it with [`ControllerConfig::validate`].
    pub fn new(config: ControllerConfig, committed: MetadataImage, now: Instant) -> Controller {
        if let Err(e) = config.validate() {
            panic!("invalid controller config: {e}");
        }
        Controller {
            rebalance_deadline: now + config.leader_imbalance_check_interval,
            config,
            image: committed.clone(),
            committed,
            last_heartbeat: BTreeMap::new(),
            active_since: now,
            declared_dead: BTreeMap::new(),
        }
    }

    /// Starts over from the committed image, forgetting uncommitted records and heartbeats:
    /// call it when this node becomes the active controller again, or when records it decided
    /// could not be appended.
    pub fn reset(&mut self, committed: MetadataImage, now: Instant) {
        *self = Controller::new(self.config.clone(), committed, now);
    }

    /// A record committed in the metadata log (in log order, each exactly once).
    pub fn handle_committed(&mut self, record: &MetadataRecord) {
        self.committed.apply(record);
    }

    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The working image: committed state plus every record decided since.
    pub fn image(&self) -> &MetadataImage {
        &self.image
    }

    pub fn committed(&self) -> &MetadataImage {
        &self.committed
    }

    /// When [`Controller::tick`] next has something to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let sessions = self.image.brokers().iter().filter(|(_, b)| !b.fenced).map(|(&n, _)| self.session_deadline(n));
        let rebalance = self.config.auto_leader_rebalance.then_some(self.rebalance_deadline);
        sessions.chain(rebalance).min()
    }

    // ---- brokers ------------------------------------------------------------------------

    /// A broker process starts. It gets a broker epoch greater than any handed out before and
    /// starts fenced. An earlier registration of the node belongs to a process that is gone:
    /// its replicas leave leadership and the ISR (for the ELR if that leaves the ISR short).
    /// Unless the start is clean (see [`Restart`]) they leave the ELR too, since their
    /// unflushed tail may be lost.
    pub fn register_broker(
        &mut self,
        now: Instant,
        request: BrokerRegistrationRequest,
    ) -> Result<Decision<BrokerEpoch>, Refusal> {
        let node = request.node;
        if node.0 < 0 {
            let message = format!("broker id {node} is negative; give the broker a node id of 0 or more");
            return Err(Refusal::new(ErrorCode::InvalidRequest, message));
        }
        let restart = self.restart(&request);
        let clean_shutdown = match restart {
            Restart::Clean => true,
            Restart::Unclean => false,
            Restart::SameProcess { clean_shutdown } => clean_shutdown,
        };
        let broker_epoch = BrokerEpoch(self.image.broker_epoch_last().0 + 1);
        let mut records = Vec::new();
        let registration = MetadataRecord::RegisterBroker {
            node,
            broker_epoch,
            listeners: request.listeners,
            rack: request.rack,
            clean_shutdown,
            process_id: request.process_id,
            incarnation: request.incarnation,
        };
        self.emit(&mut records, registration);
        self.change_partitions(
            &mut records,
            |_, p| p.replicas.contains(&node),
            |p, e| {
                let removed = p.remove_replica(node, e);
                let unclean = restart == Restart::Unclean && p.handle_unclean_shutdown(node, e);
                removed || unclean
            },
        );
        self.last_heartbeat.insert(node, now);
        Ok(Decision { reply: broker_epoch, records })
    }

    /// KIP-966: a start is clean only if the broker's clean-shutdown marker names the broker
    /// epoch of the node's current registration in the metadata log. No marker (a crash, or
    /// an empty or replaced data directory), a marker from an older run (a restored backup)
    /// and a node with no registration are all unclean.
    pub fn restart(&self, request: &BrokerRegistrationRequest) -> Restart {
        let Some(current) = self.image.broker(request.node) else {
            return Restart::Unclean;
        };
        if current.process_id == request.process_id {
            return Restart::SameProcess { clean_shutdown: current.clean_shutdown };
        }
        if request.previous_broker_epoch == Some(current.broker_epoch) {
            Restart::Clean
        } else {
            Restart::Unclean
        }
    }

    /// A broker is alive. `caught_up`: it has replayed the metadata log at least up to its own
    /// registration, so it may be unfenced (and then lead where nobody does). `want_shutdown`
    /// starts a controlled shutdown: it stops leading and leaves the ISRs at once, and is told
    /// it may stop once that has committed.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        node: NodeId,
        broker_epoch: BrokerEpoch,
        caught_up: bool,
        want_shutdown: bool,
    ) -> Result<Decision<HeartbeatReply>, Refusal> {
        let broker = self.registered(node, broker_epoch)?;
        let (fenced, shutting_down) = (broker.fenced, broker.shutting_down);
        self.last_heartbeat.insert(node, now);
        let mut records = Vec::new();
        if want_shutdown && !shutting_down {
            self.emit(&mut records, MetadataRecord::BeginControlledShutdown { node, broker_epoch });
            self.change_partitions(&mut records, |_, p| p.replicas.contains(&node), |p, e| p.remove_replica(node, e));
        } else if !want_shutdown && fenced && !shutting_down && caught_up && !self.declared_dead.contains_key(&node) {
            self.emit(&mut records, MetadataRecord::UnfenceBroker { node, broker_epoch });
            self.change_partitions(&mut records, |_, p| p.replicas.contains(&node), |p, e| p.try_elect(e));
        }
        let fenced = self.image.broker(node).is_some_and(|b| b.fenced);
        let should_shut_down =
            self.committed.broker(node).is_some_and(|b| b.broker_epoch == broker_epoch && b.shutting_down)
                && self.committed.leader_count(node) == 0;
        Ok(Decision { reply: HeartbeatReply { fenced, should_shut_down }, records })
    }

    /// The membership layer's verdict on `node` at its `incarnation`. Dead: the broker is
    /// fenced now rather than at the end of its session, and stays fenced, heartbeats or not,
    /// until the membership layer sees it alive at a higher incarnation (it refuted the
    /// accusation, or restarted); then its next heartbeat unfences it once it has caught up.
    /// Alive at the same or a lower incarnation changes nothing: that is the view the
    /// accusation already superseded.
    pub fn handle_membership(&mut self, node: NodeId, incarnation: u64, alive: bool) -> Decision<()> {
        if alive {
            if self.declared_dead.get(&node).is_some_and(|&dead| incarnation > dead) {
                self.declared_dead.remove(&node);
            }
            return Decision { reply: (), records: Vec::new() };
        }
        let dead = self.declared_dead.entry(node).or_insert(incarnation);
        *dead = (*dead).max(incarnation);
        self.fence_broker(node).unwrap_or(Decision { reply: (), records: Vec::new() })
    }

    /// Fences the broker of `node` now.
    pub fn fence_broker(&mut self, node: NodeId) -> Result<Decision<()>, Refusal> {
        let Some(broker) = self.image.broker(node) else {
            return Err(Refusal::new(ErrorCode::BrokerIdNotRegistered, format!("broker {node} is not registered")));
        };
        let mut records = Vec::new();
        if !broker.fenced {
            let broker_epoch = broker.broker_epoch;
            self.fence(&mut records, &[(node, broker_epoch)]);
        }
        Ok(Decision { reply: (), records })
    }

    /// Fences brokers whose session expired, and (every leader imbalance check interval)
    /// moves leadership back to preferred replicas that are in the ISR.
    pub fn tick(&mut self, now: Instant) -> Vec<MetadataRecord> {
        let mut records = Vec::new();
        let expired: Vec<(NodeId, BrokerEpoch)> = self
            .image
            .brokers()
            .iter()
            .filter(|(&node, broker)| !broker.fenced && now >= self.session_deadline(node))
            .map(|(&node, broker)| (node, broker.broker_epoch))
            .collect();
        if !expired.is_empty() {
            self.fence(&mut records, &expired);
        }
        if self.config.auto_leader_rebalance && now >= self.rebalance_deadline {
            self.rebalance_deadline = now + self.config.leader_imbalance_check_interval;
            records.extend(self.elect_preferred_leaders().records);
        }
        records
    }

    /// Moves leadership back to each partition's preferred replica where it is in the ISR and
    /// active and does not lead (Kafka's preferred leader election, as the periodic rebalance
    /// and ElectLeaders with type PREFERRED run it).
    pub fn elect_preferred_leaders(&mut self) -> Decision<()> {
        let mut records = Vec::new();
        self.change_partitions(&mut records, |_, _| true, |p, e| p.elect_preferred(e));
        Decision { reply: (), records }
    }

    /// Whether [`Controller::elect_preferred_leaders`] would move any leadership now (if not,
    /// Kafka's ElectLeaders answers ELECTION_NOT_NEEDED).
    pub fn preferred_election_needed(&self) -> bool {
        let active = self.image.active_brokers();
        self.image.topics().any(|topic| {
            let eligibility = topic.eligibility(&active, self.config.mutation);
            topic.partitions.iter().any(|p| p.clone().elect_preferred(&eligibility))
        })
    }

    /// The process of broker `node` was last known to be alive at `at`, before this controller
    /// became active and heard from it: in combined mode, when its controller role last sent
    /// this node a Raft message. Its session counts from then rather than from becoming active,
    /// so a node that died with the previous active controller is fenced one session after it
    /// went silent, not one session after the election. Ignored for unregistered brokers and
    /// brokers this controller has already heard from.
    pub fn handle_last_contact(&mut self, node: NodeId, at: Instant) {
        if self.image.broker(node).is_some() && at < self.active_since {
            self.last_heartbeat.entry(node).or_insert(at);
        }
    }

    fn session_deadline(&self, node: NodeId) -> Instant {
        // A broker not heard from since this controller became active has a session from then,
        // or from its last known contact (`handle_last_contact`).
        let heard = self.last_heartbeat.get(&node).copied().unwrap_or(self.active_since);
        heard + self.config.session_timeout
    }

    fn fence(&mut self, records: &mut Vec<MetadataRecord>, brokers: &[(NodeId, BrokerEpoch)]) {
        for &(node, broker_epoch) in brokers {
            self.emit(records, MetadataRecord::FenceBroker { node, broker_epoch });
        }
        self.change_partitions(
            records,
            |_, p| brokers.iter().any(|(node, _)| p.replicas.contains(node)),
            // Every broker leaves, whichever changed the partition (no short circuit).
            |p, e| brokers.iter().fold(false, |changed, &(node, _)| p.remove_replica(node, e) | changed),
        );
    }

    /// The registration of `node`, if `broker_epoch` is its current one.
    fn registered(&self, node: NodeId, broker_epoch: BrokerEpoch) -> Result<&image::BrokerRegistration, Refusal> {
        match self.image.broker(node) {
            Some(broker) if broker.broker_epoch == broker_epoch => Ok(broker),
            Some(broker) => Err(Refusal::new(
                ErrorCode::StaleBrokerEpoch,
                format!(
                    "broker {node} sent epoch {broker_epoch} but is registered with epoch {}; register again",
                    broker.broker_epoch
                ),
            )),
            None => Err(Refusal::new(
                ErrorCode::StaleBrokerEpoch,
                format!("broker {node} is not registered; register before sending heartbeats"),
            )),
        }
    }

    // ---- producer ids -------------------------------------------------------------------

    /// A block of producer ids for broker `node` (KIP-730's AllocateProducerIds): the ids from
    /// the image's next producer id on, recorded so that no later block overlaps it. Only the
    /// broker's current registration may ask (STALE_BROKER_EPOCH otherwise), so a process that
    /// was replaced cannot take blocks in its name. Answer only once the record has committed:
    /// a block the quorum could still lose could be handed out again.
    pub fn allocate_producer_ids(
        &mut self,
        node: NodeId,
        broker_epoch: BrokerEpoch,
    ) -> Result<Decision<ProducerIdBlock>, Refusal> {
        self.registered(node, broker_epoch)?;
        let next_producer_id = self.image.next_producer_id();
        if next_producer_id > i64::MAX - PRODUCER_ID_BLOCK_SIZE {
            let message =
                format!("every producer id has been handed out (the next block would start at {next_producer_id})");
            return Err(Refusal::new(ErrorCode::UnknownServerError, message));
        }
        let block = ProducerIdBlock::starting_at(next_producer_id);
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::ProducerIds { node, broker_epoch, next_producer_id: block.end() });
        assert_eq!(self.image.next_producer_id(), block.end(), "the image moved past the block");
        Ok(Decision { reply: block, records })
    }

    // ---- topics -------------------------------------------------------------------------

    /// Creates a topic; `partitions` -1 and `replication_factor` -1 mean the defaults, as in
    /// CreateTopics. Replicas go on active brokers only: leaders round-robin from a random
    /// start, each partition's replicas on as many distinct racks as there are. Returns the
    /// new topic's id.
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        rng: &mut impl Entropy,
    ) -> Result<Decision<TopicId>, Refusal> {
        self.check_new_topic_name(name)?;
        let partitions = if partitions == -1 { self.config.default_partitions } else { partitions };
        self.check_partition_count(name, partitions)?;
        let brokers = self.placement_order();
        // The default is capped at the brokers there are (a 1-node cluster gets RF 1); an
        // explicit replication factor is taken as asked, and refused if it cannot be met.
        let replication_factor = if replication_factor == -1 {
            self.config.default_replication_factor.min(brokers.len().max(1) as i16)
        } else {
            replication_factor
        };
        if replication_factor < 1 {
            let message = format!("replication factor {replication_factor} for topic {name:?} must be at least 1");
            return Err(Refusal::new(ErrorCode::InvalidReplicationFactor, message));
        }
        let replication_factor = replication_factor as usize;
        check_replication_factor(replication_factor, brokers.len())?;
        let configs = self.topic_configs(name, configs, replication_factor)?;

        let id = self.new_topic_id(rng);
        let start = rng.below(brokers.len() as u64) as usize;
        let shift = rng.below(brokers.len() as u64) as usize;
        let assignment = place(&brokers, 0, partitions as usize, replication_factor, start, shift);
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::Topic { name: name.to_string(), id, configs });
        self.add_partitions(&mut records, id, assignment);
        Ok(Decision { reply: id, records })
    }

    /// Creates a topic with the replicas given per partition (CreateTopics with
    /// assignments): each partition's first replica is its preferred leader. Every partition
    /// needs the same number of distinct, registered brokers (fenced ones included: they lead
    /// once they are back). Returns the new topic's id.
    pub fn create_topic_assigned(
        &mut self,
        name: &str,
        assignment: Vec<Vec<NodeId>>,
        configs: BTreeMap<String, String>,
        rng: &mut impl Entropy,
    ) -> Result<Decision<TopicId>, Refusal> {
        self.check_new_topic_name(name)?;
        self.check_partition_count(name, i32::try_from(assignment.len()).unwrap_or(i32::MAX))?;
        let replication_factor = self.check_assignment(name, &assignment, None)?;
        let configs = self.topic_configs(name, configs, replication_factor)?;
        let id = self.new_topic_id(rng);
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::Topic { name: name.to_string(), id, configs });
        self.add_partitions(&mut records, id, assignment);
        Ok(Decision { reply: id, records })
    }

    /// Adds partitions with the replicas given for each new one (CreatePartitions with
    /// assignments), as many replicas as the topic's existing partitions have.
    pub fn create_partitions_assigned(
        &mut self,
        name: &str,
        assignment: Vec<Vec<NodeId>>,
    ) -> Result<Decision<()>, Refusal> {
        let topic = self.topic_named(name)?;
        let (id, current, replication_factor) = (topic.id, topic.partitions.len(), topic.replication_factor());
        if assignment.is_empty() {
            let message = format!("topic {name:?} has {current} partitions; give at least one new partition");
            return Err(Refusal::new(ErrorCode::InvalidPartitions, message));
        }
        self.check_partition_count(name, i32::try_from(current + assignment.len()).unwrap_or(i32::MAX))?;
        self.check_assignment(name, &assignment, Some(replication_factor))?;
        let mut records = Vec::new();
        self.add_partitions(&mut records, id, assignment);
        Ok(Decision { reply: (), records })
    }

    /// Checks a manual assignment; returns its replication factor.
    fn check_assignment(
        &self,
        name: &str,
        assignment: &[Vec<NodeId>],
        replication_factor: Option<usize>,
    ) -> Result<usize, Refusal> {
        let invalid = |message: String| Err(Refusal::new(ErrorCode::InvalidReplicaAssignment, message));
        let Some(first) = assignment.first() else {
            return invalid(format!("the assignment of topic {name:?} names no partitions"));
        };
        let expected = replication_factor.unwrap_or(first.len());
        for (i, replicas) in assignment.iter().enumerate() {
            if replicas.is_empty() || replicas.len() != expected {
                return invalid(format!(
                    "partition {i} of the assignment of topic {name:?} has {} replicas; every partition needs {expected}",
                    replicas.len()
                ));
            }
            if let Some((j, duplicate)) = replicas.iter().enumerate().find(|(j, r)| replicas[..*j].contains(r)) {
                return invalid(format!(
                    "partition {i} of the assignment of topic {name:?} lists broker {duplicate} twice (at {j})"
                ));
            }
            if let Some(unknown) = replicas.iter().find(|r| self.image.broker(**r).is_none()) {
                return invalid(format!(
                    "partition {i} of the assignment of topic {name:?} names broker {unknown}, which is not registered"
                ));
            }
        }
        Ok(expected)
    }

    fn check_new_topic_name(&self, name: &str) -> Result<(), Refusal> {
        image::validate_topic_name(name).map_err(|m| Refusal::new(ErrorCode::InvalidTopicException, m))?;
        if self.image.topic_by_name(name).is_some() {
            return Err(Refusal::new(ErrorCode::TopicAlreadyExists, format!("topic {name:?} already exists")));
        }
        // Kafka refuses names that differ only in '.' versus '_': their metrics names collide.
        let normalized = |n: &str| n.replace('.', "_");
        if let Some(other) = self.image.topics().find(|t| normalized(&t.name) == normalized(name)) {
            let message =
                format!("topic {name:?} collides with existing topic {:?} ('.' and '_' are alike)", other.name);
            return Err(Refusal::new(ErrorCode::InvalidTopicException, message));
        }
        Ok(())
    }

    /// Grows a topic to `total` partitions, continuing its round-robin of leaders.
    pub fn create_partitions(
        &mut self,
        name: &str,
        total: i32,
        rng: &mut impl Entropy,
    ) -> Result<Decision<()>, Refusal> {
        let topic = self.topic_named(name)?;
        let (id, current, replication_factor) = (topic.id, topic.partitions.len(), topic.replication_factor());
        let first_leader = topic.partitions.first().and_then(|p| p.replicas.first().copied());
        if total < 1 || total as usize <= current {
            let message = format!(
                "topic {name:?} has {current} partitions; the new total {total} must be larger (partitions cannot be removed)"
            );
            return Err(Refusal::new(ErrorCode::InvalidPartitions, message));
        }
        self.check_partition_count(name, total)?;
        let brokers = self.placement_order();
        check_replication_factor(replication_factor, brokers.len())?;
        // Continue where partition 0's preferred leader started the round-robin.
        let start = match brokers.iter().position(|(node, _)| Some(*node) == first_leader) {
            Some(position) => position,
            None => rng.below(brokers.len() as u64) as usize,
        };
        let shift = rng.below(brokers.len() as u64) as usize;
        let assignment = place(&brokers, current, total as usize - current, replication_factor, start, shift);
        let mut records = Vec::new();
        self.add_partitions(&mut records, id, assignment);
        Ok(Decision { reply: (), records })
    }

    /// Deletes a topic; returns its id.
    pub fn delete_topic(&mut self, name: &str) -> Result<Decision<TopicId>, Refusal> {
        let id = self.topic_named(name)?.id;
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::RemoveTopic { id });
        Ok(Decision { reply: id, records })
    }

    /// Sets and removes SCRAM credentials (AlterUserScramCredentials): see [`crate::scram`].
    /// The reply says what each named user got; the records are the accepted changes.
    pub fn alter_scram_credentials(
        &mut self,
        deletions: &[ScramDeletion],
        upsertions: &[ScramUpsertion],
    ) -> Decision<Vec<(String, Result<(), Refusal>)>> {
        let (results, accepted) = alter_scram_credentials(&self.image, deletions, upsertions);
        let mut records = Vec::new();
        for record in accepted {
            self.emit(&mut records, record);
        }
        Decision { reply: results, records }
    }

    /// Replaces a topic's configs (AlterConfigs). The controller checks only the configs it
    /// reads (`min.insync.replicas`, `unclean.leader.election.enable`); the caller checks the
    /// rest. Partitions follow: a lower min ISR the ISR now meets clears the ELR, and enabling
    /// unclean election elects leaders where nobody else can.
    pub fn alter_configs(&mut self, name: &str, configs: BTreeMap<String, String>) -> Result<Decision<()>, Refusal> {
        let topic = self.topic_named(name)?;
        let (id, replication_factor) = (topic.id, topic.replication_factor());
        let configs = self.topic_configs(name, configs, replication_factor)?;
        let mut records = Vec::new();
        self.emit(&mut records, MetadataRecord::TopicConfigs { id, configs });
        if self.config.mutation == Some(Mutation::IgnoreMinIsrChange) {
            return Ok(Decision { reply: (), records });
        }
        self.change_partitions(
            &mut records,
            |t, _| t.id == id,
            // Both rules apply (no short circuit).
            |p, e| p.handle_min_isr_change(e) | p.try_elect(e),
        );
        Ok(Decision { reply: (), records })
    }

    /// A partition leader's ISR change (AlterPartition): a compare-and-set on the partition
    /// epoch, from the current incarnation of the leader's broker. `added` names the replicas
    /// the change adds, each with the broker epoch of the process whose fetches vouch for it
    /// (KIP-903): each must be the broker registered now, or the change is refused with
    /// INELIGIBLE_REPLICA. Returns the partition as it now stands.
    pub fn alter_partition(
        &mut self,
        node: NodeId,
        broker_epoch: BrokerEpoch,
        topic_id: TopicId,
        index: i32,
        request: &AlterIsr,
        added: &[(NodeId, BrokerEpoch)],
    ) -> Result<Decision<PartitionRegistration>, Refusal> {
        self.registered(node, broker_epoch)?;
        if request.leader != node {
            let message = format!("broker {node} asked for an ISR change on behalf of broker {}", request.leader);
            return Err(Refusal::new(ErrorCode::InvalidRequest, message));
        }
        let Some(topic) = self.image.topic(topic_id) else {
            let message = format!("no topic has id {topic_id:032x}; it may have been deleted");
            return Err(Refusal::new(ErrorCode::UnknownTopicId, message));
        };
        let Some(current) = usize::try_from(index).ok().and_then(|i| topic.partitions.get(i)) else {
            let message = format!("topic {:?} has no partition {index}", topic.name);
            return Err(Refusal::new(ErrorCode::UnknownTopicOrPartition, message));
        };
        let active = self.image.active_brokers();
        let mut next = current.clone();
        if let Err(code) = next.alter_isr(request, &topic.eligibility(&active, self.config.mutation)) {
            let at = format!("{}-{index}", topic.name);
            let message = match code {
                ErrorCode::NotLeaderOrFollower => {
                    format!("broker {node} does not lead {at} (leader {:?})", current.leader)
                }
                ErrorCode::FencedLeaderEpoch => {
                    format!("leader epoch {} of {at} is not the current {}", request.leader_epoch, current.leader_epoch)
                }
                ErrorCode::InvalidUpdateVersion => format!(
                    "partition epoch {} of {at} is not the current {}; refresh the partition state and retry",
                    request.partition_epoch, current.partition_epoch
                ),
                ErrorCode::IneligibleReplica => format!(
                    "ISR {:?} for {at} adds a broker that is fenced or shutting down (active: {active:?})",
                    request.new_isr
                ),
                _ => format!(
                    "ISR {:?} for {at} must list distinct replicas of {:?}, the leader included",
                    request.new_isr, current.replicas
                ),
            };
            return Err(Refusal::new(code, message));
        }
        // Only once the request is known to come from the current leader, in the current
        // leader and partition epochs (Kafka's order): a zombie leader must hear that it is
        // fenced, not INELIGIBLE_REPLICA, which tells a leader to drop its change and go back
        // to the ISR it last saw committed, and so to count a follower it no longer waits for.
        if self.config.mutation != Some(Mutation::NoBrokerEpochCheck) {
            self.check_replica_epochs(added)?;
        }
        let mut records = Vec::new();
        if next != *current {
            let record = MetadataRecord::Partition { topic_id, index, registration: next.clone() };
            self.emit(&mut records, record);
        }
        Ok(Decision { reply: next, records })
    }

    /// KIP-903: the replicas an ISR change adds, each with the broker epoch of the process
    /// whose fetches vouch for it, must be the brokers registered now. A replica that crashed
    /// and registered again (possibly without its unflushed tail) is refused with
    /// INELIGIBLE_REPLICA until it has fetched as the new process.
    fn check_replica_epochs(&self, added: &[(NodeId, BrokerEpoch)]) -> Result<(), Refusal> {
        for &(node, epoch) in added {
            let registered = self.image.broker(node).map(|b| b.broker_epoch);
            if registered != Some(epoch) {
                let message = format!(
                    "broker {node} fetched with broker epoch {epoch} but is registered with {registered:?}: \
                     it cannot join the ISR on what an earlier process fetched"
                );
                return Err(Refusal::new(ErrorCode::IneligibleReplica, message));
            }
        }
        Ok(())
    }

    fn topic_named(&self, name: &str) -> Result<&TopicImage, Refusal> {
        self.image.topic_by_name(name).ok_or_else(|| {
            Refusal::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("topic {name:?} does not exist; create it with: keel topic create {name}"),
            )
        })
    }

    fn check_partition_count(&self, name: &str, partitions: i32) -> Result<(), Refusal> {
        if !(1..=self.config.topic_partitions_max).contains(&partitions) {
            let message = format!(
                "topic {name:?} cannot have {partitions} partitions: between 1 and {} are allowed",
                self.config.topic_partitions_max
            );
            return Err(Refusal::new(ErrorCode::InvalidPartitions, message));
        }
        Ok(())
    }

    /// Checks the configs the controller reads and writes in the default min ISR.
    fn topic_configs(
        &self,
        name: &str,
        mut configs: BTreeMap<String, String>,
        replication_factor: usize,
    ) -> Result<BTreeMap<String, String>, Refusal> {
        let invalid = |message: String| Refusal::new(ErrorCode::InvalidConfig, message);
        match configs.get(MIN_INSYNC_REPLICAS) {
            None => {
                let min_isr = self.config.default_min_isr.min(replication_factor);
                configs.insert(MIN_INSYNC_REPLICAS.to_string(), min_isr.to_string());
            }
            Some(value) => match image::parse_min_isr(value) {
                None => return Err(invalid(format!("min.insync.replicas must be a positive integer, not {value:?}"))),
                Some(min_isr) if min_isr > replication_factor => {
                    return Err(invalid(format!(
                        "min.insync.replicas {min_isr} is above the replication factor {replication_factor} of \
                         topic {name:?}: no write with acks=all could succeed"
                    )))
                }
                Some(_) => {}
            },
        }
        if let Some(value) = configs.get(UNCLEAN_LEADER_ELECTION_ENABLE) {
            if image::parse_bool(value).is_none() {
                return Err(invalid(format!("unclean.leader.election.enable must be true or false, not {value:?}")));
            }
        }
        Ok(configs)
    }

    /// A random version-4 UUID no topic has (never zero, so never Kafka's "no topic id").
    fn new_topic_id(&self, rng: &mut impl Entropy) -> TopicId {
        const RANDOM_LOW: u128 = (1 << 62) - 1;
        let mut id = 0u128;
        for _ in 0..4 {
            id = (id << 32) | u128::from(rng.below(1 << 32));
        }
        id = (id & !(0xf << 76)) | (0x4 << 76);
        id = (id & !(0b11 << 62)) | (0b10 << 62);
        // A collision moves to the next free id; each step passes an existing topic, so this
        // ends within as many steps as there are topics.
        while self.image.topic(TopicId(id)).is_some() {
            id = (id & !RANDOM_LOW) | (id.wrapping_add(1) & RANDOM_LOW);
        }
        TopicId(id)
    }

    /// Active brokers with their racks, ordered for placement: racks take turns (Kafka's rack
    /// alternated list), so consecutive positions fall on different racks.
    fn placement_order(&self) -> Vec<(NodeId, Option<String>)> {
        let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
        for (&node, broker) in self.image.brokers() {
            if broker.is_active() {
                by_rack.entry(broker.rack.as_deref()).or_default().push(node);
            }
        }
        let rounds = by_rack.values().map(Vec::len).max().unwrap_or(0);
        let mut order = Vec::new();
        for round in 0..rounds {
            for (rack, nodes) in &by_rack {
                if let Some(&node) = nodes.get(round) {
                    order.push((node, rack.map(str::to_string)));
                }
            }
        }
        order
    }

    /// Appends new partitions `first..` of a topic with these replica lists.
    fn add_partitions(&mut self, records: &mut Vec<MetadataRecord>, topic_id: TopicId, assignment: Vec<Vec<NodeId>>) {
        let topic = self.image.topic(topic_id).expect("the topic exists");
        let first = topic.partitions.len();
        let active = self.image.active_brokers();
        let eligibility = topic.eligibility(&active, self.config.mutation);
        let new: Vec<MetadataRecord> = assignment
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| MetadataRecord::Partition {
                topic_id,
                index: (first + i) as i32,
                registration: PartitionRegistration::new(replicas, &eligibility),
            })
            .collect();
        for record in new {
            self.emit(records, record);
        }
    }

    // ---- records ------------------------------------------------------------------------

    fn emit(&mut self, records: &mut Vec<MetadataRecord>, record: MetadataRecord) {
        self.image.apply(&record);
        records.push(record);
    }

    /// Runs `change` on every partition in `scope` (in topic name and partition order) with
    /// its topic's eligibility as of now, and records each partition that changed.
    fn change_partitions(
        &mut self,
        records: &mut Vec<MetadataRecord>,
        scope: impl Fn(&TopicImage, &PartitionRegistration) -> bool,
        mut change: impl FnMut(&mut PartitionRegistration, &Eligibility) -> bool,
    ) {
        let active = self.image.active_brokers();
        let mut changed = Vec::new();
        for topic in self.image.topics() {
            let eligibility = topic.eligibility(&active, self.config.mutation);
            for (index, partition) in topic.partitions.iter().enumerate() {
                if !scope(topic, partition) {
                    continue;
                }
                let mut next = partition.clone();
                if change(&mut next, &eligibility) {
                    changed.push(MetadataRecord::Partition {
                        topic_id: topic.id,
                        index: index as i32,
                        registration: next,
                    });
                }
            }
        }
        for record in changed {
            self.emit(records, record);
        }
    }

    // ---- invariants ---------------------------------------------------------------------

    /// Both images' invariants, plus: ISR members are active brokers (their broker leaves
    /// every ISR when it is fenced or shuts down; only under [`Mutation::NoElr`] may the last
    /// member stay), and heartbeats are remembered only for registered brokers.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.image.check_invariants().map_err(|e| format!("working image: {e}"))?;
        self.committed.check_invariants().map_err(|e| format!("committed image: {e}"))?;
        if self.config.mutation != Some(Mutation::NoElr) {
            let active = self.image.active_brokers();
            for topic in self.image.topics() {
                for (index, partition) in topic.partitions.iter().enumerate() {
                    if let Some(member) = partition.isr.iter().find(|r| !active.contains(r)) {
                        return Err(format!(
                            "{}-{index} has {member} in its ISR {:?}, but {member} is not active",
                            topic.name, partition.isr
                        ));
                    }
                }
            }
        }
        if let Some(node) = self.last_heartbeat.keys().find(|n| self.image.broker(**n).is_none()) {
            return Err(format!("a heartbeat time is kept for unregistered broker {node}"));
        }
        Ok(())
    }
}

fn check_replication_factor(replication_factor: usize, brokers: usize) -> Result<(), Refusal> {
    if replication_factor > brokers {
        let message = format!(
            "replication factor {replication_factor} cannot be reached: only {brokers} broker(s) are registered, \
             unfenced and not shutting down; start more brokers or lower the replication factor"
        );
        return Err(Refusal::new(ErrorCode::InvalidReplicationFactor, message));
    }
    Ok(())
}

/// Replica lists for partitions `first..first + count`, Kafka's way. The preferred leader of
/// partition `p` is at position `(start + p) % n` of `brokers` (placement order), so leaders
/// take turns. Followers are taken walking on from the leader with a rotation that grows by
/// one every `n` partitions, so they take turns too; a follower on a rack the partition does
/// not use yet is preferred while there is one.
fn place(
    brokers: &[(NodeId, Option<String>)],
    first: usize,
    count: usize,
    replication_factor: usize,
    start: usize,
    shift: usize,
) -> Vec<Vec<NodeId>> {
    let n = brokers.len();
    assert!((1..=n).contains(&replication_factor), "replication factor {replication_factor} with {n} brokers");
    (first..first + count)
        .map(|p| {
            let leader = (start + p) % n;
            let followers = n - 1;
            let rotation = if followers == 0 { 0 } else { (shift + p / n) % followers };
            let walk: Vec<usize> = (0..followers).map(|j| (leader + 1 + (rotation + j) % followers) % n).collect();
            let mut chosen = vec![leader];
            let mut racks: BTreeSet<&Option<String>> = BTreeSet::from([&brokers[leader].1]);
            while chosen.len() < replication_factor {
                let unused = || walk.iter().copied().filter(|c| !chosen.contains(c));
                let next = unused()
                    .find(|&c| !racks.contains(&brokers[c].1))
                    .or_else(|| unused().next())
                    .expect("replication factor is at most the broker count");
                racks.insert(&brokers[next].1);
                chosen.push(next);
            }
            chosen.into_iter().map(|c| brokers[c].0).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(racks: &[(i32, Option<&str>)]) -> Vec<(NodeId, Option<String>)> {
        racks.iter().map(|&(node, rack)| (NodeId(node), rack.map(str::to_string))).collect()
    }

    fn count_by_broker(lists: &[Vec<NodeId>], leaders_only: bool) -> BTreeMap<NodeId, usize> {
        let mut counts = BTreeMap::new();
        for replicas in lists {
            let take = if leaders_only { 1 } else { replicas.len() };
            for &r in &replicas[..take] {
                *counts.entry(r).or_insert(0) += 1;
            }
        }
        counts
    }

    #[test]
    fn placement_spreads_leaders_and_followers_evenly() {
        let three = brokers(&[(1, None), (2, None), (3, None)]);
        let four = brokers(&[(1, None), (2, None), (3, None), (4, None)]);
        for start in 0..4 {
            for shift in 0..4 {
                let lists = place(&three, 0, 6, 3, start, shift);
                assert_eq!(count_by_broker(&lists, true).values().collect::<Vec<_>>(), [&2, &2, &2]);
                for replicas in &lists {
                    assert_eq!(replicas.iter().collect::<BTreeSet<_>>().len(), 3, "{replicas:?}");
                }
                let lists = place(&four, 0, 8, 2, start, shift);
                assert_eq!(count_by_broker(&lists, true).values().collect::<Vec<_>>(), [&2; 4]);
                assert_eq!(count_by_broker(&lists, false).values().collect::<Vec<_>>(), [&4; 4], "{lists:?}");
            }
        }
    }

    #[test]
    fn placement_puts_replicas_on_distinct_racks() {
        // Placement order alternates racks: a, b, c, a, b, c.
        let six =
            brokers(&[(1, Some("a")), (3, Some("b")), (5, Some("c")), (2, Some("a")), (4, Some("b")), (6, Some("c"))]);
        let rack = |node: NodeId| six.iter().find(|(n, _)| *n == node).unwrap().1.clone();
        for start in 0..6 {
            for shift in 0..6 {
                for replicas in place(&six, 0, 12, 3, start, shift) {
                    let racks: BTreeSet<_> = replicas.iter().map(|&r| rack(r)).collect();
                    assert_eq!(racks.len(), 3, "{replicas:?}");
                }
            }
        }
        // One broker alone on rack b: every partition with two replicas uses it.
        let uneven = brokers(&[(1, Some("a")), (4, Some("b")), (2, Some("a")), (3, Some("a"))]);
        for replicas in place(&uneven, 0, 8, 2, 1, 2) {
            assert!(replicas.contains(&NodeId(4)), "{replicas:?}");
        }
    }

    #[test]
    fn config_validation() {
        assert_eq!(ControllerConfig::default().validate(), Ok(()));
        let bad = [
            ControllerConfig { session_timeout: Duration::ZERO, ..ControllerConfig::default() },
            ControllerConfig { default_partitions: 0, ..ControllerConfig::default() },
            ControllerConfig { default_partitions: 11, topic_partitions_max: 10, ..ControllerConfig::default() },
            ControllerConfig { default_replication_factor: 0, ..ControllerConfig::default() },
            ControllerConfig { default_min_isr: 0, ..ControllerConfig::default() },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
    }
}
