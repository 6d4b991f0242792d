//! Writes the seed corpora under `fuzz/corpus/<target>/` from the crates' own encoders:
//! `cargo run --example seeds` (from `fuzz/`, without run.sh's coverage flags). Seeds are
//! starting points; run.sh never writes to the committed corpus.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use bytes::{BufMut, BytesMut};
use keel_auth::ScramMechanism;
use keel_broker::cluster::protocol::{Frame, Request, Response};
use keel_broker::cluster::transport::encode_frame;
use keel_gossip::{Address, Body, Incarnation, Member, Message, Sender, Status};
use keel_groups::{CommittedOffset, GroupRecord, MemberRecord, Record};
use keel_kafka::kafka_protocol::messages::{self, RequestKind};
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_metadata::{Endpoint, MetadataImage, MetadataRecord, PartitionRegistration};
use keel_storage::batch::BatchBuilder;
use keel_types::{BrokerEpoch, NodeId, TopicId};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus").join(target);
    std::fs::create_dir_all(&dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn kafka_request(api_key: i16, version: i16, header_version: i16, body: &RequestKind) -> Option<Vec<u8>> {
    let mut out = BytesMut::new();
    out.put_i16(api_key);
    out.put_i16(version);
    out.put_i32(7);
    if header_version >= 1 {
        out.put_i16(4);
        out.put_slice(b"fuzz");
    }
    if header_version >= 2 {
        out.put_u8(0);
    }
    body.encode(&mut out, version).ok()?;
    Some(out.to_vec())
}

fn decode_request() {
    use keel_kafka::kafka_protocol::messages::ApiKey;
    let mut metadata = messages::MetadataRequest::default();
    metadata.topics = Some(vec![messages::metadata_request::MetadataRequestTopic::default()
        .with_name(Some(messages::TopicName(StrBytes::from_static_str("orders"))))]);
    let bodies = [
        RequestKind::ApiVersions(
            messages::ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("fuzz"))
                .with_client_software_version(StrBytes::from_static_str("1")),
        ),
        RequestKind::Metadata(metadata),
        RequestKind::Produce(messages::ProduceRequest::default().with_acks(-1).with_timeout_ms(1000)),
        RequestKind::Fetch(messages::FetchRequest::default().with_max_wait_ms(100)),
        RequestKind::ListOffsets(messages::ListOffsetsRequest::default()),
        RequestKind::FindCoordinator(messages::FindCoordinatorRequest::default()),
        RequestKind::JoinGroup(messages::JoinGroupRequest::default()),
        RequestKind::OffsetCommit(messages::OffsetCommitRequest::default()),
        RequestKind::CreateTopics(messages::CreateTopicsRequest::default()),
        RequestKind::SaslHandshake(
            messages::SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("SCRAM-SHA-256")),
        ),
        RequestKind::SaslAuthenticate(
            messages::SaslAuthenticateRequest::default().with_auth_bytes(bytes::Bytes::from_static(b"\0alice\0pw")),
        ),
    ];
    for body in &bodies {
        let api_key = ApiKey::try_from(body_api_key(body)).expect("a known API");
        let supported = keel_kafka::supported(api_key).expect("keel serves it");
        let mut versions = vec![supported.min, supported.max];
        versions.dedup();
        for version in versions {
            let header_version = api_key.request_header_version(version);
            if let Some(bytes) = kafka_request(api_key as i16, version, header_version, body) {
                write("decode_request", &format!("{api_key:?}-v{version}"), &bytes);
            }
        }
    }
}

fn body_api_key(body: &RequestKind) -> i16 {
    use keel_kafka::kafka_protocol::messages::ApiKey;
    (match body {
        RequestKind::ApiVersions(_) => ApiKey::ApiVersions,
        RequestKind::Metadata(_) => ApiKey::Metadata,
        RequestKind::Produce(_) => ApiKey::Produce,
        RequestKind::Fetch(_) => ApiKey::Fetch,
        RequestKind::ListOffsets(_) => ApiKey::ListOffsets,
        RequestKind::FindCoordinator(_) => ApiKey::FindCoordinator,
        RequestKind::JoinGroup(_) => ApiKey::JoinGroup,
        RequestKind::OffsetCommit(_) => ApiKey::OffsetCommit,
        RequestKind::CreateTopics(_) => ApiKey::CreateTopics,
        RequestKind::SaslHandshake(_) => ApiKey::SaslHandshake,
        RequestKind::SaslAuthenticate(_) => ApiKey::SaslAuthenticate,
        _ => unreachable!("only the seeds above"),
    }) as i16
}

/// The fuzz target's fixed server nonce and alice's password and salt (see sasl.rs).
const SERVER_NONCE: &str = "fuzzservernonce01234";

fn scram_messages(mechanism: ScramMechanism, user: &str, password: &str) -> (String, String) {
    let client_nonce = "clientnonce";
    let bare = format!("n={user},r={client_nonce}");
    let nonce = format!("{client_nonce}{SERVER_NONCE}");
    let salt = b"salt-of-alice";
    let iterations = ScramMechanism::ITERATIONS_MIN;
    let engine = base64::engine::general_purpose::STANDARD;
    let server_first = format!("r={nonce},s={},i={iterations}", engine.encode(salt));
    let salted = mechanism.salted_password(password.as_bytes(), salt, iterations);
    let client_key = mechanism.hmac(&salted, b"Client Key");
    let stored_key = mechanism.hash(&client_key);
    let without_proof = format!("c=biws,r={nonce}");
    let auth_message = format!("{bare},{server_first},{without_proof}");
    let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
    let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
    (format!("n,,{bare}"), format!("{without_proof},p={}", engine.encode(proof)))
}

fn sasl() {
    let seed = |name: &str, mode: u8, parts: &[&[u8]]| {
        let mut bytes = vec![mode];
        for (i, part) in parts.iter().enumerate() {
            if i > 0 {
                bytes.push(0xff);
            }
            bytes.extend_from_slice(part);
        }
        write("sasl", name, &bytes);
    };
    seed("plain-valid", 0, &[b"\0alice\0wonderland"]);
    seed("plain-authzid", 0, &[b"alice\0alice\0wrong"]);
    for (selector, mechanism) in [(0u8, ScramMechanism::Sha256), (1, ScramMechanism::Sha512)] {
        let (first, last) = scram_messages(mechanism, "alice", "wonderland");
        seed(&format!("scram-{}-valid", mechanism.name()), 1 + 3 * selector, &[first.as_bytes(), last.as_bytes()]);
        let (first, last) = scram_messages(mechanism, "bob", "builder");
        seed(
            &format!("scram-{}-unknown-user", mechanism.name()),
            1 + 3 * selector,
            &[first.as_bytes(), last.as_bytes()],
        );
    }
    // Session mode: the selector picks "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512".
    seed("session-plain", 2, &[b"\0alice\0wonderland"]);
    let (first, last) = scram_messages(ScramMechanism::Sha256, "alice", "wonderland");
    seed("session-scram-sha-256", 2 + 3, &[first.as_bytes(), last.as_bytes(), b"again"]);
    let (first, last) = scram_messages(ScramMechanism::Sha512, "alice", "wonderland");
    seed("session-scram-sha-512", 2 + 6, &[first.as_bytes(), last.as_bytes()]);
}

fn record_batch() {
    let plain = BatchBuilder::new(1_700_000_000_000).record(Some(b"key"), Some(b"value")).record(None, None).build();
    write("record_batch", "plain", &plain);
    let idempotent = BatchBuilder::new(0).idempotent(1000, 0, 5).record(None, Some(b"v")).build();
    write("record_batch", "idempotent", &idempotent);
    let mut two = plain.clone();
    two.extend_from_slice(&idempotent);
    write("record_batch", "two-batches", &two);
    let mut many = BatchBuilder::new(5);
    for i in 0..20u8 {
        many.record(Some(&[i]), Some(&[i; 8]));
    }
    write("record_batch", "twenty-records", &many.build());
}

fn gossip_datagram() {
    let sender = Sender { id: NodeId(2), address: Address::from("10.0.0.2:9093"), incarnation: Incarnation(300) };
    let update = |id, status| Member {
        id: NodeId(id),
        address: Address::from("10.0.0.9:9093"),
        incarnation: Incarnation(7),
        status,
    };
    let bodies = [
        ("ping", Body::Ping { sequence: 5, prober: NodeId(2) }),
        ("ack", Body::Ack { sequence: 5, prober: NodeId(2), target: NodeId(3) }),
        ("ping-req", Body::PingReq { sequence: 9, target: NodeId(3), target_address: Address::from("10.0.0.3:9093") }),
        ("join", Body::Join),
        ("join-ack", Body::JoinAck),
        ("leave", Body::Leave),
    ];
    for (name, body) in bodies {
        let message = Message {
            sender: sender.clone(),
            body,
            updates: vec![
                update(3, Status::Alive),
                update(4, Status::Suspect),
                update(5, Status::Dead),
                update(6, Status::Left),
            ],
        };
        write("gossip_datagram", name, &message.encode());
    }
}

fn frame_body<T: serde::Serialize>(value: &T) -> Vec<u8> {
    encode_frame(value).expect("encodes")[4..].to_vec()
}

fn endpoint() -> Endpoint {
    Endpoint { name: "PLAINTEXT".into(), host: "localhost".into(), port: 9092 }
}

fn cluster_frame() {
    let requests = [
        (
            "register-broker",
            Request::RegisterBroker {
                node: NodeId(1),
                listeners: vec![endpoint()],
                rack: Some("a".into()),
                previous_broker_epoch: Some(BrokerEpoch(4)),
                process_id: 0x1234,
                incarnation: 2,
            },
        ),
        (
            "create-topic",
            Request::CreateTopic {
                name: "orders".into(),
                partitions: 2,
                replication_factor: 2,
                configs: BTreeMap::from([("min.insync.replicas".into(), "2".into())]),
                assignment: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(2), NodeId(1)]],
            },
        ),
        ("delete-topic", Request::DeleteTopic { name: "orders".into() }),
        ("fetch-metadata", Request::FetchMetadata { after: 10, max_wait_ms: 500 }),
        ("status", Request::Status),
        ("allocate-producer-ids", Request::AllocateProducerIds { node: NodeId(1), broker_epoch: BrokerEpoch(3) }),
    ];
    for (name, request) in requests {
        write("cluster_frame", &format!("request-{name}"), &frame_body(&Frame::Request(request)));
    }
    let responses = [
        ("not-controller", Response::NotController { leader: Some(NodeId(2)) }),
        ("error", Response::Error { code: 7, message: "timed out".into() }),
        ("registered", Response::Registered { broker_epoch: BrokerEpoch(9), metadata_index: 40 }),
        ("topic-created", Response::TopicCreated { topic_id: TopicId(0xabcdef) }),
        ("done", Response::Done),
        (
            "metadata",
            Response::Metadata {
                snapshot: Some((3, metadata_image().encode())),
                records: vec![(4, sample_records()[0].encode())],
            },
        ),
    ];
    for (name, response) in responses {
        write("cluster_frame", &format!("response-{name}"), &frame_body(&response));
    }
}

fn sample_records() -> Vec<MetadataRecord> {
    let topic_id = TopicId(0x1111_2222);
    let mut registration_source = MetadataImage::default();
    let mut records = vec![
        MetadataRecord::RegisterBroker {
            node: NodeId(1),
            broker_epoch: BrokerEpoch(1),
            listeners: vec![endpoint()],
            rack: None,
            clean_shutdown: true,
            process_id: 1,
            incarnation: 1,
        },
        MetadataRecord::RegisterBroker {
            node: NodeId(2),
            broker_epoch: BrokerEpoch(2),
            listeners: vec![endpoint()],
            rack: Some("b".into()),
            clean_shutdown: false,
            process_id: 2,
            incarnation: 1,
        },
        MetadataRecord::UnfenceBroker { node: NodeId(1), broker_epoch: BrokerEpoch(1) },
        MetadataRecord::UnfenceBroker { node: NodeId(2), broker_epoch: BrokerEpoch(2) },
        MetadataRecord::Topic { name: "orders".into(), id: topic_id, configs: BTreeMap::new() },
    ];
    for record in &records {
        registration_source.apply(record);
    }
    let active = registration_source.active_brokers();
    let topic = registration_source.topic(topic_id).expect("the topic record applied");
    let registration = PartitionRegistration::new(vec![NodeId(1), NodeId(2)], &topic.eligibility(&active, None));
    records.push(MetadataRecord::Partition { topic_id, index: 0, registration });
    records.push(MetadataRecord::ProducerIds { node: NodeId(1), broker_epoch: BrokerEpoch(1), next_producer_id: 1000 });
    records.push(MetadataRecord::FenceBroker { node: NodeId(2), broker_epoch: BrokerEpoch(2) });
    records
}

fn metadata_image() -> MetadataImage {
    let mut image = MetadataImage::default();
    for record in sample_records() {
        image.apply(&record);
    }
    image
}

fn metadata_record() {
    let records = sample_records();
    for (i, record) in records.iter().enumerate() {
        write("metadata_record", &format!("record-{i}"), &record.encode());
    }
    write("metadata_record", "batch", &MetadataRecord::encode_batch(&records));
    write("metadata_record", "image", &metadata_image().encode());
    write("metadata_record", "image-empty", &MetadataImage::default().encode());
}

fn group_record() {
    let seed = |name: &str, record: Record| {
        let (key, value) = record.encode();
        let mut bytes = vec![u8::from(value.is_none())];
        bytes.extend_from_slice(&u16::try_from(key.len()).expect("a short key").to_be_bytes());
        bytes.extend_from_slice(&key);
        bytes.extend_from_slice(value.as_deref().unwrap_or_default());
        write("group_record", name, &bytes);
    };
    let offset =
        CommittedOffset { offset: 42, leader_epoch: 3, metadata: "m".into(), commit_timestamp_ms: 1_700_000_000_000 };
    seed("offset", Record::Offset { group_id: "g".into(), topic: "orders".into(), partition: 1, value: Some(offset) });
    seed(
        "offset-tombstone",
        Record::Offset { group_id: "g".into(), topic: "orders".into(), partition: 1, value: None },
    );
    let member = MemberRecord {
        member_id: "consumer-1".into(),
        group_instance_id: Some("instance-1".into()),
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: 45_000,
        rebalance_timeout_ms: 300_000,
        metadata: bytes::Bytes::from_static(b"\0\x01meta"),
        assignment: bytes::Bytes::from_static(b"\0\x01assign"),
    };
    let group = GroupRecord {
        protocol_type: "consumer".into(),
        generation_id: 4,
        protocol_name: Some("range".into()),
        leader: Some("consumer-1".into()),
        state_timestamp_ms: 1_700_000_000_000,
        members: vec![member],
    };
    seed("group", Record::Group { group_id: "g".into(), value: Some(group) });
    seed("group-tombstone", Record::Group { group_id: "g".into(), value: None });
}

fn main() {
    decode_request();
    sasl();
    record_batch();
    gossip_datagram();
    cluster_frame();
    metadata_record();
    group_record();
}
