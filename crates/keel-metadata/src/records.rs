//! The records of the metadata log: what the active controller appends to the Raft log and
//! every broker replays into its [`MetadataImage`](crate::MetadataImage).
//!
//! A record states a fact in full (a partition record carries the whole new registration), so
//! replaying one twice changes nothing. The encoding is postcard (its stable 1.0 wire format)
//! behind a leading format-version byte; decoding is bounded by the input's length, so
//! malformed bytes from a peer give an `Err`, never a huge allocation or a panic.

use std::collections::BTreeMap;

use keel_auth::{ScramCredential, ScramMechanism};
use keel_types::{BrokerEpoch, NodeId, TopicId};
use serde::{Deserialize, Serialize};

use crate::partition::PartitionRegistration;

/// The version byte in front of every encoded record, batch and image. Version 2: broker
/// registrations carry the process id, and the image the next producer id (KIP-730).
/// Version 3: postcard instead of bincode (unmaintained, RUSTSEC-2025-0141). Version 4: SCRAM
/// credentials (records and an image field); version 3 records and images still decode.
pub(crate) const FORMAT_VERSION: u8 = 4;

/// The oldest format this keel reads: a version-3 record is a version-4 record (version 4
/// only added record kinds at the end), and a version-3 image decodes into an image without
/// SCRAM credentials ([`crate::MetadataImage::decode`]).
pub(crate) const FORMAT_VERSION_OLDEST: u8 = 3;

/// A listener a broker registers: clients reach it at `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name, as in Kafka's `listeners` (`PLAINTEXT`, ...).
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// One record of the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker process started and registered. It replaces any earlier registration of the
    /// node (the old process is gone, so its registration is fenced by being replaced), and
    /// starts fenced: it may neither lead nor join an ISR until it has caught up with the
    /// metadata log.
    RegisterBroker {
        node: NodeId,
        /// Greater than every broker epoch handed out before, to any node.
        broker_epoch: BrokerEpoch,
        listeners: Vec<Endpoint>,
        rack: Option<String>,
        /// Whether the controller counted this start as following a clean shutdown (see
        /// [`Controller::register_broker`](crate::Controller::register_broker)): if not, the
        /// broker's replicas may have lost their unflushed tail.
        clean_shutdown: bool,
        /// Random, drawn once by each broker process (Kafka's incarnation id): a registration
        /// with the process id of the current one is that process registering again.
        process_id: u128,
        /// The membership layer's incarnation of this process (0 when not known).
        incarnation: u64,
    },
    /// The broker may no longer lead or join an ISR (missed session, or declared dead).
    FenceBroker { node: NodeId, broker_epoch: BrokerEpoch },
    /// The broker has caught up with the metadata log and may lead and join ISRs.
    UnfenceBroker { node: NodeId, broker_epoch: BrokerEpoch },
    /// The broker asked to shut down: it no longer leads or joins ISRs, until it registers
    /// again.
    BeginControlledShutdown { node: NodeId, broker_epoch: BrokerEpoch },
    /// A topic was created. Its partitions follow as [`MetadataRecord::Partition`] records.
    Topic {
        name: String,
        /// Random, chosen by the controller (a version-4 UUID as a `u128`).
        id: TopicId,
        configs: BTreeMap<String, String>,
    },
    /// Replaces a topic's configs.
    TopicConfigs { id: TopicId, configs: BTreeMap<String, String> },
    /// A topic and its partitions are gone.
    RemoveTopic { id: TopicId },
    /// A partition's whole state: a new partition (`index` equal to the topic's partition
    /// count) or the new state of an existing one.
    Partition { topic_id: TopicId, index: i32, registration: PartitionRegistration },
    /// A block of producer ids went to broker `node` (at `broker_epoch`), and the next block
    /// starts at `next_producer_id` (KIP-730's ProducerIdsRecord). Only ever grows.
    ProducerIds { node: NodeId, broker_epoch: BrokerEpoch, next_producer_id: i64 },
    /// A user's SCRAM credential for one mechanism, new or replacing the one it had (Kafka's
    /// UserScramCredentialRecord). Only the salted keys: the password is never stored.
    ScramCredential { user: String, credential: ScramCredential },
    /// A user no longer has a credential for `mechanism` (RemoveUserScramCredentialRecord).
    RemoveScramCredential { user: String, mechanism: ScramMechanism },
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        encode(self)
    }

    /// Parses an encoded record; `Err` says why the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, String> {
        decode(bytes, "metadata record")
    }

    /// Encodes the records of one decision, which go into the log as one entry so that they
    /// commit (and are replayed) together.
    pub fn encode_batch(records: &[MetadataRecord]) -> Vec<u8> {
        encode(&records)
    }

    /// Parses what [`MetadataRecord::encode_batch`] wrote.
    pub fn decode_batch(bytes: &[u8]) -> Result<Vec<MetadataRecord>, String> {
        decode(bytes, "metadata record batch")
    }
}

/// Version byte, then postcard.
pub(crate) fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_extend(value, vec![FORMAT_VERSION]).expect("serializing metadata into memory cannot fail")
}

/// The inverse of [`encode`]. Allocation is bounded by the input's length, and trailing bytes
/// are an error.
pub(crate) fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, String> {
    let Some((&version, body)) = bytes.split_first() else {
        return Err(format!("{what} is empty"));
    };
    if version > FORMAT_VERSION {
        return Err(format!(
            "{what} has format version {version}, this keel reads version {FORMAT_VERSION}; \
             upgrade keel on this node"
        ));
    }
    if version < FORMAT_VERSION_OLDEST {
        return Err(format!(
            "{what} has format version {version}, written by an older keel; this keel reads versions {FORMAT_VERSION_OLDEST} to \
             {FORMAT_VERSION} and cannot upgrade a cluster's metadata in place: start the cluster on empty \
             data directories"
        ));
    }
    match postcard::take_from_bytes(body) {
        Ok((value, [])) => Ok(value),
        Ok((_, trailing)) => Err(format!("{what} has {} bytes after its end", trailing.len())),
        Err(e) => Err(format!("{what} cannot be decoded: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use keel_types::{LeaderEpoch, PartitionEpoch};

    use super::*;

    fn samples() -> Vec<MetadataRecord> {
        let registration = PartitionRegistration {
            replicas: vec![NodeId(1), NodeId(2), NodeId(3)],
            leader: Some(NodeId(2)),
            leader_epoch: LeaderEpoch(4),
            partition_epoch: PartitionEpoch(9),
            isr: vec![NodeId(2)],
            elr: vec![NodeId(3)],
            last_known_elr: vec![NodeId(1)],
        };
        let configs = BTreeMap::from([("min.insync.replicas".to_string(), "2".to_string())]);
        vec![
            MetadataRecord::RegisterBroker {
                node: NodeId(7),
                broker_epoch: BrokerEpoch(12),
                listeners: vec![Endpoint { name: "PLAINTEXT".into(), host: "10.0.0.7".into(), port: 9092 }],
                rack: Some("eu-west-1a".into()),
                clean_shutdown: false,
                process_id: u128::MAX,
                incarnation: u64::MAX,
            },
            MetadataRecord::RegisterBroker {
                node: NodeId(0),
                broker_epoch: BrokerEpoch(1),
                listeners: vec![],
                rack: None,
                clean_shutdown: true,
                process_id: 0,
                incarnation: 0,
            },
            MetadataRecord::FenceBroker { node: NodeId(7), broker_epoch: BrokerEpoch(12) },
            MetadataRecord::UnfenceBroker { node: NodeId(7), broker_epoch: BrokerEpoch(12) },
            MetadataRecord::BeginControlledShutdown { node: NodeId(7), broker_epoch: BrokerEpoch(12) },
            MetadataRecord::Topic { name: "orders".into(), id: TopicId(u128::MAX - 5), configs: configs.clone() },
            MetadataRecord::TopicConfigs { id: TopicId(3), configs },
            MetadataRecord::RemoveTopic { id: TopicId(1 << 100) },
            MetadataRecord::Partition { topic_id: TopicId(42), index: 17, registration },
            MetadataRecord::ProducerIds {
                node: NodeId(7),
                broker_epoch: BrokerEpoch(12),
                next_producer_id: i64::MAX - 7,
            },
        ]
    }

    #[test]
    fn every_record_survives_an_encode_decode_round_trip() {
        for record in samples() {
            let bytes = record.encode();
            assert_eq!(bytes[0], FORMAT_VERSION);
            assert_eq!(MetadataRecord::decode(&bytes), Ok(record));
        }
        let batch = samples();
        assert_eq!(MetadataRecord::decode_batch(&MetadataRecord::encode_batch(&batch)), Ok(batch));
    }

    #[test]
    fn malformed_bytes_are_errors() {
        let good = samples()[0].encode();
        assert!(MetadataRecord::decode(&[]).unwrap_err().contains("empty"));
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        assert!(MetadataRecord::decode(&wrong_version).unwrap_err().contains("format version 9"));
        for older in [1, 2] {
            wrong_version[0] = older;
            assert!(MetadataRecord::decode(&wrong_version).unwrap_err().contains("written by an older keel"));
        }
        for cut in 1..good.len() {
            assert!(MetadataRecord::decode(&good[..cut]).is_err(), "truncated at {cut}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(MetadataRecord::decode(&trailing).is_err(), "trailing bytes are refused");
        // A huge length prefix must not allocate: variant 7 (Partition), topic 42, index 17
        // (zigzag 34), then a replica count of about 2^62 (a LEB128 varint).
        let hostile = [FORMAT_VERSION, 7, 42, 34, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
        assert!(MetadataRecord::decode(&hostile).unwrap_err().contains("cannot be decoded"));
        let mut unknown_variant = hostile;
        unknown_variant[1] = 99;
        assert!(MetadataRecord::decode(&unknown_variant).is_err());
        assert!(MetadataRecord::decode(&hostile).is_err());
        assert!(MetadataRecord::decode_batch(&[FORMAT_VERSION, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f])
            .is_err());
    }
}
