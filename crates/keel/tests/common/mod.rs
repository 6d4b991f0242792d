//! Shared helpers for tests that drive keel with real Kafka clients (librdkafka via rdkafka).
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use keel_broker::{BrokerConfig, RunningNode};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

/// The configuration tests start brokers with: a cluster of one on ephemeral loopback ports.
pub fn test_config(data_dir: &Path) -> BrokerConfig {
    BrokerConfig {
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        controller_listen: "127.0.0.1:0".parse().unwrap(),
        ..BrokerConfig::default()
    }
}

/// A broker (a cluster of one) running in-process on ephemeral loopback ports, on its own
/// runtime, ready to serve.
#[derive(Debug)]
pub struct TestBroker {
    pub runtime: tokio::runtime::Runtime,
    pub running: Option<RunningNode>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
}

impl TestBroker {
    pub fn start(data_dir: &Path) -> TestBroker {
        TestBroker::start_with(test_config(data_dir))
    }

    pub fn start_with(config: BrokerConfig) -> TestBroker {
        let config = BrokerConfig { offsets_topic_num_partitions: 4, group_initial_rebalance_delay_ms: 0, ..config };
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let data_dir = config.data_dir.clone();
        let running = runtime.block_on(RunningNode::start(config)).expect("broker starts");
        assert!(runtime.block_on(running.wait_ready(Duration::from_secs(30))), "the broker registers with itself");
        let addr = running.local_addr;
        TestBroker { runtime, running: Some(running), addr, data_dir }
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Clean shutdown: drain, flush, clean checkpoints.
    pub fn stop(mut self) {
        let running = self.running.take().expect("running");
        self.runtime.block_on(running.shutdown()).expect("clean shutdown");
    }
}

pub fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("log_level", "3").set("enable.idempotence", "false");
    config
}

/// Counts delivery reports, so a test knows every record was acknowledged.
#[derive(Debug, Default)]
pub struct Deliveries {
    pub delivered: std::sync::atomic::AtomicUsize,
    pub failed: std::sync::atomic::AtomicUsize,
    pub first_error: std::sync::Mutex<Option<String>>,
}

impl rdkafka::client::ClientContext for Deliveries {}

impl rdkafka::producer::ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, _: ()) {
        use std::sync::atomic::Ordering;
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err((e, _)) => {
                self.first_error.lock().unwrap().get_or_insert_with(|| e.to_string());
                self.failed.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

pub type TestProducer = BaseProducer<Deliveries>;

pub fn producer(brokers: &str, settings: &[(&str, &str)]) -> TestProducer {
    let mut config = client_config(brokers);
    config.set("linger.ms", "5").set("message.timeout.ms", "30000");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create_with_context(Deliveries::default()).expect("producer")
}

pub fn consumer(brokers: &str) -> BaseConsumer {
    client_config(brokers)
        .set("group.id", "unused-no-groups-yet")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// A member of consumer group `group` that commits by hand, reads from the earliest offset and
/// heartbeats often (settings a test may add to before `create`).
pub fn group_consumer_config(brokers: &str, group: &str) -> ClientConfig {
    let mut config = client_config(brokers);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "300")
        .set("fetch.wait.max.ms", "50");
    config
}

/// A record as the tests compare it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sent {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp: i64,
    pub headers: Vec<(String, Vec<u8>)>,
}

fn production_index(value: &[u8]) -> u64 {
    let text = std::str::from_utf8(value).expect("utf-8 value");
    text.split('-').nth(1).and_then(|i| i.parse().ok()).expect("value-INDEX-...")
}

/// An hour ago: recent enough that the default 7-day retention keeps the records.
pub fn base_timestamp() -> i64 {
    static BASE: std::sync::LazyLock<i64> = std::sync::LazyLock::new(|| keel_broker::clock::now_ms() - 3_600_000);
    *BASE
}

pub fn record_for(i: u64) -> Sent {
    Sent {
        key: (i % 5 != 0).then(|| format!("key-{}", i % 97).into_bytes()),
        value: format!("value-{i}-{}", "x".repeat((i % 50) as usize)).into_bytes(),
        timestamp: base_timestamp() + i as i64,
        headers: if i % 3 == 0 {
            vec![("h1".into(), i.to_be_bytes().to_vec()), ("h2".into(), b"".to_vec())]
        } else {
            vec![]
        },
    }
}

/// Produces `records` to `topic` (librdkafka picks partitions: by key hash, or sticky for
/// keyless records) and waits until every one is acknowledged.
pub fn produce_all(producer: &TestProducer, topic: &str, records: &[Sent]) {
    use std::sync::atomic::Ordering;
    let context = producer.context();
    let before = context.delivered.load(Ordering::Relaxed);
    for (i, r) in records.iter().enumerate() {
        let mut headers = rdkafka::message::OwnedHeaders::new();
        for (k, v) in &r.headers {
            headers = headers.insert(rdkafka::message::Header { key: k, value: Some(v) });
        }
        let mut record: BaseRecord<'_, [u8], [u8]> =
            BaseRecord::to(topic).payload(&r.value[..]).timestamp(r.timestamp).headers(headers);
        if let Some(key) = &r.key {
            record = record.key(&key[..]);
        }
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(10));
                    record = back;
                }
                Err((e, _)) => panic!("send {i}: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("all records delivered");
    let failed = context.failed.load(Ordering::Relaxed);
    assert_eq!(failed, 0, "{failed} records failed; first error: {:?}", context.first_error.lock().unwrap());
    let delivered = context.delivered.load(Ordering::Relaxed) - before;
    assert_eq!(delivered, records.len(), "acknowledged records");
}

/// Reads every partition of `topic` from the beginning until `expected` records arrived (or
/// the deadline passes) and returns them by (partition, offset).
pub fn consume_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    deadline: Duration,
) -> BTreeMap<(i32, i64), Sent> {
    let consumer = consumer(brokers);
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut got = BTreeMap::new();
    let start = Instant::now();
    while got.len() < expected && start.elapsed() < deadline {
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message.expect("consume");
            got.insert((message.partition(), message.offset()), to_sent(&message));
        }
    }
    got
}

pub fn to_sent(message: &BorrowedMessage<'_>) -> Sent {
    let headers = message
        .headers()
        .map(|h| h.iter().map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec())).collect())
        .unwrap_or_default();
    Sent {
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().unwrap_or_default().to_vec(),
        timestamp: message.timestamp().to_millis().unwrap_or(-1),
        headers,
    }
}

/// Checks that what was consumed is exactly what was sent: same multiset of records, every
/// partition dense from 0, and per key the order of production kept (keys map to one
/// partition).
pub fn assert_same(sent: &[Sent], got: &BTreeMap<(i32, i64), Sent>) {
    assert_eq!(got.len(), sent.len(), "record count");
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for &(p, o) in got.keys() {
        by_partition.entry(p).or_default().push(o);
    }
    for (p, offsets) in &by_partition {
        assert!(offsets.iter().enumerate().all(|(i, &o)| o == i as i64), "partition {p} offsets not dense");
    }
    let mut expected: Vec<&Sent> = sent.iter().collect();
    let mut actual: Vec<&Sent> = got.values().collect();
    expected.sort();
    actual.sort();
    assert!(expected == actual, "consumed records differ from produced ones");
    // Order per partition: values carry their production index, which must grow with the
    // offset inside every partition.
    let mut last: BTreeMap<i32, u64> = BTreeMap::new();
    for (&(p, o), r) in got {
        let index = production_index(&r.value);
        if let Some(&previous) = last.get(&p) {
            assert!(previous < index, "partition {p} offset {o}: record {index} after {previous}");
        }
        last.insert(p, index);
    }
}

/// A free loopback port (bind, read, release).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `done` holds, at most `timeout`; panics naming `what` after that.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn wait_for_port(addr: &str, timeout: Duration) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on {addr} after {timeout:?}");
}
