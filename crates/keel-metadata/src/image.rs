//! The metadata image: the cluster state the metadata log describes, built by replaying its
//! records in order with [`MetadataImage::apply`]. Every broker and every controller replays
//! the same records into the same image; the active controller also applies the records it has
//! just decided, before they commit (see [`Controller`](crate::Controller)).

use std::collections::BTreeMap;

use keel_auth::{ScramCredential, ScramMechanism};
use keel_types::{BrokerEpoch, NodeId, TopicId};
use serde::{Deserialize, Serialize};

use crate::partition::{Eligibility, Mutation, PartitionRegistration};
use crate::records::{self, Endpoint, MetadataRecord};

/// The topic config that sets a topic's minimum ISR. The controller writes it into every
/// topic's configs (its default when a request leaves it out), so brokers, which hold the high
/// watermark back while |ISR| < min ISR, and the controller, whose ELR rule relies on exactly
/// that, read the same value from the log.
pub const MIN_INSYNC_REPLICAS: &str = "min.insync.replicas";
/// The topic config that allows electing a replica outside the ISR and ELR (losing data).
pub const UNCLEAN_LEADER_ELECTION_ENABLE: &str = "unclean.leader.election.enable";

/// Kafka's default `min.insync.replicas`, for a topic whose configs lack it (the controller
/// never writes one).
const MIN_INSYNC_REPLICAS_DEFAULT: usize = 1;

/// Kafka's limit on a topic name's length.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

/// Kafka's topic name rule: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name \"\" is empty".to_string());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!("topic name {name:?} is longer than 249 characters"));
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!("topic name {name:?} may contain only ASCII letters, digits, '.', '_' and '-'"));
    }
    Ok(())
}

/// Parses a `min.insync.replicas` value: a positive integer.
pub(crate) fn parse_min_isr(value: &str) -> Option<usize> {
    value.parse::<usize>().ok().filter(|&v| v >= 1)
}

/// Parses a boolean topic config the way Kafka does (case-insensitive `true` / `false`).
pub(crate) fn parse_bool(value: &str) -> Option<bool> {
    if value.eq_ignore_ascii_case("true") {
        Some(true)
    } else if value.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A registered broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub broker_epoch: BrokerEpoch,
    pub listeners: Vec<Endpoint>,
    pub rack: Option<String>,
    /// Fenced brokers may not lead or join an ISR. Every registration starts fenced.
    pub fenced: bool,
    /// In controlled shutdown: may not lead or join an ISR either.
    pub shutting_down: bool,
    /// Whether the controller counted this registration as following a clean shutdown: the
    /// broker's clean-shutdown marker named the broker epoch of the registration it replaced.
    pub clean_shutdown: bool,
    /// Random, drawn once by the broker process that registered (Kafka's incarnation id).
    pub process_id: u128,
    pub incarnation: u64,
}

impl BrokerRegistration {
    /// May lead and join ISRs.
    pub fn is_active(&self) -> bool {
        !self.fenced && !self.shutting_down
    }
}

/// A topic: its configs and partitions (partition `i` at index `i`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicImage {
    pub id: TopicId,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionRegistration>,
}

impl TopicImage {
    /// The topic's `min.insync.replicas` (1, Kafka's default, if it is missing or unreadable;
    /// the controller never writes either).
    pub fn min_isr(&self) -> usize {
        self.configs.get(MIN_INSYNC_REPLICAS).and_then(|v| parse_min_isr(v)).unwrap_or(MIN_INSYNC_REPLICAS_DEFAULT)
    }

    /// The topic's `unclean.leader.election.enable` (default false).
    pub fn unclean_leader_election(&self) -> bool {
        self.configs.get(UNCLEAN_LEADER_ELECTION_ENABLE).and_then(|v| parse_bool(v)).unwrap_or(false)
    }

    /// The replica count of the topic's partitions (of its first; they all have the same).
    pub fn replication_factor(&self) -> usize {
        self.partitions.first().map_or(0, |p| p.replicas.len())
    }

    /// What the partition rules need to know for this topic, given the active brokers.
    pub fn eligibility<'a>(&self, active: &'a [NodeId], mutation: Option<Mutation>) -> Eligibility<'a> {
        Eligibility {
            min_isr: self.min_isr(),
            unclean_leader_election: self.unclean_leader_election(),
            active,
            mutation,
        }
    }
}

/// The cluster's metadata as of some point in the metadata log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MetadataImage {
    brokers: BTreeMap<NodeId, BrokerRegistration>,
    topics: BTreeMap<TopicId, TopicImage>,
    /// Topic ids by name; derived from `topics`, so not encoded.
    #[serde(skip)]
    topic_ids: BTreeMap<String, TopicId>,
    /// The highest broker epoch ever registered: the next registration gets a greater one.
    broker_epoch_last: BrokerEpoch,
    /// The first producer id no block has held: the next block starts here (KIP-730).
    next_producer_id: i64,
    /// SCRAM credentials by user, one per mechanism (format version 4).
    scram: BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>>,
}

/// A version-3 image: [`MetadataImage`] before SCRAM credentials.
#[derive(Deserialize)]
struct MetadataImageV3 {
    brokers: BTreeMap<NodeId, BrokerRegistration>,
    topics: BTreeMap<TopicId, TopicImage>,
    broker_epoch_last: BrokerEpoch,
    next_producer_id: i64,
}

impl MetadataImage {
    /// Applies one record. This is the only way the image changes, on every node.
    ///
    /// A record that does not fit the image (a broker epoch that is not the registered one, an
    /// unknown topic, a partition index beyond the next) changes nothing: the controller never
    /// writes such a record, and replay stays total. Tests compare replayed images with the
    /// controller's, so a record the controller wrote but replay ignored would show.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::RegisterBroker {
                node,
                broker_epoch,
                listeners,
                rack,
                clean_shutdown,
                process_id,
                incarnation,
            } => {
                self.broker_epoch_last = self.broker_epoch_last.max(*broker_epoch);
                let registration = BrokerRegistration {
                    broker_epoch: *broker_epoch,
                    listeners: listeners.clone(),
                    rack: rack.clone(),
                    fenced: true,
                    shutting_down: false,
                    clean_shutdown: *clean_shutdown,
                    process_id: *process_id,
                    incarnation: *incarnation,
                };
                self.brokers.insert(*node, registration);
            }
            MetadataRecord::FenceBroker { node, broker_epoch } => {
                if let Some(broker) = self.broker_at_epoch(*node, *broker_epoch) {
                    broker.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { node, broker_epoch } => {
                if let Some(broker) = self.broker_at_epoch(*node, *broker_epoch) {
                    broker.fenced = false;
                }
            }
            MetadataRecord::BeginControlledShutdown { node, broker_epoch } => {
                if let Some(broker) = self.broker_at_epoch(*node, *broker_epoch) {
                    broker.shutting_down = true;
                }
            }
            MetadataRecord::Topic { name, id, configs } => {
                if !self.topics.contains_key(id) && !self.topic_ids.contains_key(name) {
                    let topic =
                        TopicImage { id: *id, name: name.clone(), configs: configs.clone(), partitions: vec![] };
                    self.topics.insert(*id, topic);
                    self.topic_ids.insert(name.clone(), *id);
                }
            }
            MetadataRecord::TopicConfigs { id, configs } => {
                if let Some(topic) = self.topics.get_mut(id) {
                    topic.configs = configs.clone();
                }
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(topic) = self.topics.remove(id) {
                    self.topic_ids.remove(&topic.name);
                }
            }
            MetadataRecord::Partition { topic_id, index, registration } => {
                let Some(topic) = self.topics.get_mut(topic_id) else { return };
                let Ok(index) = usize::try_from(*index) else { return };
                if index < topic.partitions.len() {
                    topic.partitions[index] = registration.clone();
                } else if index == topic.partitions.len() {
                    topic.partitions.push(registration.clone());
                }
            }
            MetadataRecord::ProducerIds { next_producer_id, .. } => {
                // Blocks only move forward; an id once handed out is never handed out again.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::ScramCredential { user, credential } => {
                self.scram.entry(user.clone()).or_default().insert(credential.mechanism, credential.clone());
            }
            MetadataRecord::RemoveScramCredential { user, mechanism } => {
                if let Some(credentials) = self.scram.get_mut(user) {
                    credentials.remove(mechanism);
                    if credentials.is_empty() {
                        self.scram.remove(user);
                    }
                }
            }
        }
    }

    fn broker_at_epoch(&mut self, node: NodeId, broker_epoch: BrokerEpoch) -> Option<&mut BrokerRegistration> {
        self.brokers.get_mut(&node).filter(|b| b.broker_epoch == broker_epoch)
    }

    // ---- lookups ------------------------------------------------------------------------

    pub fn brokers(&self) -> &BTreeMap<NodeId, BrokerRegistration> {
        &self.brokers
    }

    pub fn broker(&self, node: NodeId) -> Option<&BrokerRegistration> {
        self.brokers.get(&node)
    }

    /// Brokers that are registered, unfenced and not shutting down, in id order: the only
    /// ones that may lead, join an ISR or get new replicas.
    pub fn active_brokers(&self) -> Vec<NodeId> {
        self.brokers.iter().filter(|(_, b)| b.is_active()).map(|(&node, _)| node).collect()
    }

    /// `user`'s SCRAM credential for `mechanism`.
    pub fn scram_credential(&self, user: &str, mechanism: ScramMechanism) -> Option<&ScramCredential> {
        self.scram.get(user)?.get(&mechanism)
    }

    /// Every user with a SCRAM credential, in name order, with its credentials by mechanism.
    pub fn scram_users(&self) -> &BTreeMap<String, BTreeMap<ScramMechanism, ScramCredential>> {
        &self.scram
    }

    /// The highest broker epoch handed out so far (0 before the first registration).
    pub fn broker_epoch_last(&self) -> BrokerEpoch {
        self.broker_epoch_last
    }

    /// The first producer id of the next block the controller hands out (0 before the first).
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Every topic, in name order.
    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> + '_ {
        self.topic_ids.values().map(|id| &self.topics[id])
    }

    pub fn topic(&self, id: TopicId) -> Option<&TopicImage> {
        self.topics.get(&id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids.get(name).map(|id| &self.topics[id])
    }

    pub fn partition(&self, topic_id: TopicId, index: i32) -> Option<&PartitionRegistration> {
        let index = usize::try_from(index).ok()?;
        self.topics.get(&topic_id)?.partitions.get(index)
    }

    /// How many partitions `node` leads.
    pub fn leader_count(&self, node: NodeId) -> usize {
        self.topics.values().flat_map(|t| &t.partitions).filter(|p| p.leader == Some(node)).count()
    }

    // ---- snapshots ----------------------------------------------------------------------

    /// The whole image, for a Raft snapshot of the metadata log.
    pub fn encode(&self) -> Vec<u8> {
        records::encode(self)
    }

    /// Parses what [`MetadataImage::encode`] wrote; `Err` says why the bytes are not an image.
    pub fn decode(bytes: &[u8]) -> Result<MetadataImage, String> {
        let mut image: MetadataImage = if bytes.first() == Some(&3) {
            let v3: MetadataImageV3 = records::decode(bytes, "metadata image")?;
            MetadataImage {
                brokers: v3.brokers,
                topics: v3.topics,
                topic_ids: BTreeMap::new(),
                broker_epoch_last: v3.broker_epoch_last,
                next_producer_id: v3.next_producer_id,
                scram: BTreeMap::new(),
            }
        } else {
            records::decode(bytes, "metadata image")?
        };
        for (&id, topic) in &image.topics {
            if id != topic.id {
                return Err(format!("metadata image lists topic {:?} under id {id:x}, not {:x}", topic.name, topic.id));
            }
            if image.topic_ids.insert(topic.name.clone(), id).is_some() {
                return Err(format!("metadata image has two topics named {:?}", topic.name));
            }
        }
        Ok(image)
    }

    // ---- invariants ---------------------------------------------------------------------

    /// What must hold after every committed batch of records (and after every decision of the
    /// controller): consistent topic indexes, valid names, every partition's own invariants,
    /// replicas on registered brokers, and leaders that are active brokers.
    pub fn check_invariants(&self) -> Result<(), String> {
        if self.topic_ids.len() != self.topics.len() {
            return Err(format!("{} topic names for {} topics", self.topic_ids.len(), self.topics.len()));
        }
        for (name, id) in &self.topic_ids {
            match self.topics.get(id) {
                Some(topic) if topic.name == *name => {}
                _ => return Err(format!("topic name {name:?} points to id {id:x}, which is not that topic")),
            }
        }
        if self.next_producer_id < 0 {
            return Err(format!("the next producer id {} is negative", self.next_producer_id));
        }
        for (user, credentials) in &self.scram {
            if user.is_empty() || credentials.is_empty() {
                return Err(format!("SCRAM user {user:?} has {} credentials", credentials.len()));
            }
            if let Some((mechanism, _)) = credentials.iter().find(|(&m, c)| m != c.mechanism) {
                return Err(format!("SCRAM user {user:?} has a credential under {mechanism} for another mechanism"));
            }
        }
        for (node, broker) in &self.brokers {
            if broker.broker_epoch < BrokerEpoch(1) || broker.broker_epoch > self.broker_epoch_last {
                return Err(format!(
                    "broker {node} has epoch {}, outside 1..={}",
                    broker.broker_epoch, self.broker_epoch_last
                ));
            }
        }
        let active = self.active_brokers();
        for (&id, topic) in &self.topics {
            let name = &topic.name;
            if id != topic.id {
                return Err(format!("topic {name:?} is stored under id {id:x}, not {:x}", topic.id));
            }
            validate_topic_name(name)?;
            if let Some(value) = topic.configs.get(MIN_INSYNC_REPLICAS) {
                if parse_min_isr(value).is_none() {
                    return Err(format!("topic {name:?} has min.insync.replicas {value:?}"));
                }
            }
            let eligibility = topic.eligibility(&active, None);
            for (index, partition) in topic.partitions.iter().enumerate() {
                let at = || format!("{name}-{index}");
                if partition.replicas.is_empty() {
                    return Err(format!("{} has no replicas", at()));
                }
                for (i, replica) in partition.replicas.iter().enumerate() {
                    if partition.replicas[..i].contains(replica) {
                        return Err(format!("{} lists replica {replica} twice", at()));
                    }
                    if !self.brokers.contains_key(replica) {
                        return Err(format!("{} has a replica on unregistered broker {replica}", at()));
                    }
                }
                if topic.min_isr() > partition.replicas.len() {
                    return Err(format!(
                        "{} has min ISR {} above its {} replicas",
                        at(),
                        topic.min_isr(),
                        partition.replicas.len()
                    ));
                }
                partition.check_invariants(&eligibility).map_err(|e| format!("{}: {e}", at()))?;
                if let Some(leader) = partition.leader {
                    if !active.contains(&leader) {
                        return Err(format!("{} is led by {leader}, which is not an active broker", at()));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use keel_types::{LeaderEpoch, PartitionEpoch};

    use super::*;

    fn register(node: i32, broker_epoch: i64) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            node: NodeId(node),
            broker_epoch: BrokerEpoch(broker_epoch),
            listeners: vec![Endpoint { name: "PLAINTEXT".into(), host: format!("b{node}"), port: 9092 }],
            rack: None,
            clean_shutdown: true,
            process_id: node as u128,
            incarnation: 1,
        }
    }

    fn unfence(node: i32, broker_epoch: i64) -> MetadataRecord {
        MetadataRecord::UnfenceBroker { node: NodeId(node), broker_epoch: BrokerEpoch(broker_epoch) }
    }

    fn partition(topic_id: u128, index: i32, leader: i32, replicas: &[i32]) -> MetadataRecord {
        let replicas: Vec<NodeId> = replicas.iter().map(|&r| NodeId(r)).collect();
        let registration = PartitionRegistration {
            leader: Some(NodeId(leader)),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            isr: replicas.clone(),
            replicas,
            elr: vec![],
            last_known_elr: vec![],
        };
        MetadataRecord::Partition { topic_id: TopicId(topic_id), index, registration }
    }

    fn sample() -> MetadataImage {
        let mut image = MetadataImage::default();
        let configs = BTreeMap::from([(MIN_INSYNC_REPLICAS.to_string(), "2".to_string())]);
        for record in [
            register(1, 1),
            register(2, 2),
            unfence(1, 1),
            unfence(2, 2),
            MetadataRecord::Topic { name: "orders".into(), id: TopicId(7), configs },
            partition(7, 0, 1, &[1, 2]),
            partition(7, 1, 2, &[2, 1]),
            MetadataRecord::ProducerIds { node: NodeId(2), broker_epoch: BrokerEpoch(2), next_producer_id: 2000 },
        ] {
            image.apply(&record);
        }
        image.check_invariants().unwrap();
        image
    }

    #[test]
    fn a_version_3_image_decodes_without_scram_credentials() {
        #[derive(Serialize)]
        struct V3<'a> {
            brokers: &'a BTreeMap<NodeId, BrokerRegistration>,
            topics: &'a BTreeMap<TopicId, TopicImage>,
            broker_epoch_last: BrokerEpoch,
            next_producer_id: i64,
        }
        let image = sample();
        let v3 = V3 {
            brokers: &image.brokers,
            topics: &image.topics,
            broker_epoch_last: image.broker_epoch_last,
            next_producer_id: image.next_producer_id,
        };
        let bytes = postcard::to_extend(&v3, vec![3]).unwrap();
        assert_eq!(MetadataImage::decode(&bytes).unwrap(), image);
        let mut older = bytes.clone();
        older[0] = 2;
        assert!(MetadataImage::decode(&older).unwrap_err().contains("older keel"));
    }

    #[test]
    fn brokers_register_fenced_and_stale_epochs_change_nothing() {
        let mut image = MetadataImage::default();
        image.apply(&register(1, 5));
        assert!(image.broker(NodeId(1)).unwrap().fenced);
        assert_eq!(image.active_brokers(), vec![]);
        image.apply(&unfence(1, 4));
        assert!(image.broker(NodeId(1)).unwrap().fenced, "a stale epoch is ignored");
        image.apply(&unfence(1, 5));
        assert_eq!(image.active_brokers(), vec![NodeId(1)]);
        image.apply(&MetadataRecord::BeginControlledShutdown { node: NodeId(1), broker_epoch: BrokerEpoch(5) });
        assert_eq!(image.active_brokers(), vec![], "shutting down is not active");
        image.apply(&register(1, 6));
        let broker = image.broker(NodeId(1)).unwrap();
        assert!(broker.fenced && !broker.shutting_down, "a new registration replaces the old one");
        assert_eq!(image.broker_epoch_last(), BrokerEpoch(6));
        image.apply(&register(2, 3));
        assert_eq!(image.broker_epoch_last(), BrokerEpoch(6), "the counter never goes back");
    }

    #[test]
    fn topics_are_found_by_name_and_id_until_removed() {
        let mut image = sample();
        let topic = image.topic_by_name("orders").unwrap();
        assert_eq!((topic.id, topic.partitions.len(), topic.min_isr()), (TopicId(7), 2, 2));
        assert!(!topic.unclean_leader_election());
        assert_eq!(image.partition(TopicId(7), 1).unwrap().leader, Some(NodeId(2)));
        assert_eq!(image.partition(TopicId(7), 2), None);
        assert_eq!(image.partition(TopicId(7), -1), None);
        assert_eq!(image.leader_count(NodeId(1)), 1);
        // A partition index that skips ahead and a second topic with a taken name are ignored.
        image.apply(&partition(7, 5, 1, &[1, 2]));
        image.apply(&MetadataRecord::Topic { name: "orders".into(), id: TopicId(8), configs: BTreeMap::new() });
        assert_eq!((image.topic(TopicId(7)).unwrap().partitions.len(), image.topic(TopicId(8))), (2, None));
        image.apply(&MetadataRecord::TopicConfigs {
            id: TopicId(7),
            configs: BTreeMap::from([(UNCLEAN_LEADER_ELECTION_ENABLE.to_string(), "TRUE".to_string())]),
        });
        let topic = image.topic(TopicId(7)).unwrap();
        assert_eq!((topic.min_isr(), topic.unclean_leader_election()), (1, true));
        image.apply(&MetadataRecord::RemoveTopic { id: TopicId(7) });
        assert_eq!((image.topic(TopicId(7)), image.topic_by_name("orders")), (None, None));
        image.check_invariants().unwrap();
    }

    #[test]
    fn producer_id_blocks_only_move_forward() {
        let mut image = MetadataImage::default();
        assert_eq!(image.next_producer_id(), 0);
        image.apply(&MetadataRecord::ProducerIds {
            node: NodeId(1),
            broker_epoch: BrokerEpoch(1),
            next_producer_id: 1000,
        });
        image.apply(&MetadataRecord::ProducerIds {
            node: NodeId(2),
            broker_epoch: BrokerEpoch(2),
            next_producer_id: 2000,
        });
        assert_eq!(image.next_producer_id(), 2000);
        image.apply(&MetadataRecord::ProducerIds {
            node: NodeId(1),
            broker_epoch: BrokerEpoch(1),
            next_producer_id: 1000,
        });
        assert_eq!(image.next_producer_id(), 2000, "a replayed older record changes nothing");
    }

    #[test]
    fn snapshot_round_trip_keeps_everything_and_rebuilds_the_name_index() {
        let image = sample();
        assert_eq!(image.next_producer_id(), 2000);
        let decoded = MetadataImage::decode(&image.encode()).unwrap();
        assert_eq!(decoded, image);
        assert_eq!(decoded.next_producer_id(), 2000, "the snapshot carries the next producer id");
        assert_eq!(decoded.topic_by_name("orders").map(|t| t.id), Some(TopicId(7)));
        assert_eq!(MetadataImage::decode(&MetadataImage::default().encode()), Ok(MetadataImage::default()));
        let bytes = image.encode();
        assert!(MetadataImage::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(MetadataImage::decode(&[]).is_err());
    }

    #[test]
    fn invariants_catch_a_fenced_leader_and_an_unregistered_replica() {
        let mut image = sample();
        image.apply(&MetadataRecord::FenceBroker { node: NodeId(2), broker_epoch: BrokerEpoch(2) });
        let error = image.check_invariants().unwrap_err();
        assert!(error.contains("orders-1 is led by 2"), "{error}");
        let mut image = sample();
        image.apply(&partition(7, 1, 1, &[1, 3]));
        let error = image.check_invariants().unwrap_err();
        assert!(error.contains("unregistered broker 3"), "{error}");
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        for good in ["a", "orders.v2", "A-b_c", &"x".repeat(249)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", "a b", "é", "a/b", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad}");
        }
    }
}
