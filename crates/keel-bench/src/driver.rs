//! Runs a workload: creates fresh topics, starts one thread per producer and per consumer (each
//! its own librdkafka client, as OMB gives each its own Kafka client), samples their meters every
//! interval, and checks at the end that every subscription read every acknowledged record.
//!
//! Phases: warm-up (measured but not counted), the measured phase (with the backlog build and
//! drain in backlog mode), then finish: producers stop and flush, consumers read what is left,
//! and the run ends when every subscription has caught up (or stopped making progress).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use keel_types::Rng;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::histogram::LatencyHistogram;
use crate::pacer::Pacer;
use crate::payload::{self, Filler, Header};
use crate::progress::ProgressLine;
use crate::results::{BacklogResult, BenchResults, ClientFacts, Phase, SeriesPoint, Throughput, Verification, MIB};
use crate::seqset::{SeqSet, SEQUENCE_MAX};
use crate::workload::{ConsumerMode, KeyDistributor, Workload};

/// How many distinct keys the keyed distributors draw from (OMB uses 10,000).
const KEY_COUNT: usize = 10_000;
/// Most records a producer sends before it checks the clock and the stop flag again.
const BURST_MAX: usize = 256;
/// How many problems the results list by example.
const PROBLEMS_MAX: usize = 10;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);
const TOPIC_READY_TIMEOUT: Duration = Duration::from_secs(60);
const PRODUCER_FLUSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often, at the end of a run, the read records are compared with the acknowledged ones.
const EXACT_CHECK_INTERVAL_S: f64 = 0.25;

/// How the run reports progress on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Off,
    /// One line rewritten in place (a terminal).
    Line,
    /// A line per interval (a log file).
    Lines,
}

/// Settings of a run that are not part of the workload.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `HOST:PORT[,HOST:PORT...]` of any Kafka-compatible cluster.
    pub brokers: String,
    pub progress: Progress,
    /// Leave the benchmark's topics in place afterwards.
    pub keep_topics: bool,
    /// Topics are named `PREFIX-RUNID-NNNN`.
    pub topic_prefix: String,
    /// Sampling interval of the time series (and the progress line).
    pub interval: Duration,
    /// After producers stop, how long consumers may go without reading anything before the run
    /// stops waiting for them (what they did not read is then reported missing).
    pub finish_idle_timeout: Duration,
}

impl RunOptions {
    pub fn new(brokers: &str) -> RunOptions {
        RunOptions {
            brokers: brokers.to_string(),
            progress: Progress::Off,
            keep_topics: false,
            topic_prefix: "keel-bench".to_string(),
            interval: Duration::from_secs(1),
            finish_idle_timeout: Duration::from_secs(15),
        }
    }
}

/// Runs `workload` against the cluster at `options.brokers` and returns what it measured.
/// Topics are created for the run and deleted afterwards (unless `keep_topics`).
pub fn run(workload: &Workload, options: &RunOptions) -> Result<BenchResults, String> {
    workload.validate()?;
    let started_unix_ms = unix_us() / 1000;
    let seed = unix_us() ^ (u64::from(std::process::id()) << 32);
    let run_id = Rng::new(seed).next_u64() as u32;
    let topics: Vec<String> =
        (0..workload.topics).map(|i| format!("{}-{run_id:08x}-{i:04}", options.topic_prefix)).collect();
    let admin = Admin::connect(&options.brokers)?;
    admin.create_topics(&topics, workload)?;
    let result = Run::start(workload, options, run_id, &topics).and_then(|run| run.monitor());
    if !options.keep_topics {
        if let Err(e) = admin.delete_topics(&topics) {
            eprintln!("warning: the benchmark topics were not deleted: {e}");
        }
    }
    let outcome = result?;
    Ok(outcome.into_results(workload, options, started_unix_ms, topics))
}

pub(crate) fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking client thread is reported through its join handle; its meters stay usable.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn client_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("client.id", "keel-bench").set("log_level", "3");
    config
}

fn unreachable(brokers: &str, error: &KafkaError) -> String {
    format!("cannot reach a Kafka broker at {brokers} ({error}); start one (keel serve) or pass --brokers HOST:PORT")
}

/// Topic administration through the Kafka admin API.
struct Admin {
    runtime: tokio::runtime::Runtime,
    client: AdminClient<DefaultClientContext>,
    brokers: String,
}

impl Admin {
    fn connect(brokers: &str) -> Result<Admin, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start a runtime for the admin client: {e}"))?;
        let client: AdminClient<DefaultClientContext> =
            client_config(brokers).create().map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
        client.inner().fetch_metadata(None, METADATA_TIMEOUT).map_err(|e| unreachable(brokers, &e))?;
        Ok(Admin { runtime, client, brokers: brokers.to_string() })
    }

    fn options() -> AdminOptions {
        AdminOptions::new().operation_timeout(Some(Duration::from_secs(60)))
    }

    fn create_topics(&self, topics: &[String], workload: &Workload) -> Result<(), String> {
        let partitions = workload.partitions_per_topic as i32;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|name| {
                workload.topic_config.iter().fold(
                    NewTopic::new(name, partitions, TopicReplication::Fixed(workload.replication_factor)),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let results = self
            .runtime
            .block_on(self.client.create_topics(&new_topics, &Admin::options()))
            .map_err(|e| unreachable(&self.brokers, &e))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(format!("cannot create topic {topic:?}: {code}"));
            }
        }
        self.wait_for_leaders(topics, partitions)
    }

    /// Waits until metadata shows every partition of every topic with a leader.
    fn wait_for_leaders(&self, topics: &[String], partitions: i32) -> Result<(), String> {
        let start = Instant::now();
        for topic in topics {
            loop {
                let ready = match self.client.inner().fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                    Ok(metadata) => metadata.topics().first().is_some_and(|t| {
                        t.error().is_none()
                            && t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    }),
                    Err(_) => false,
                };
                if ready {
                    break;
                }
                if start.elapsed() > TOPIC_READY_TIMEOUT {
                    return Err(format!(
                        "topic {topic:?} has no leader for all {partitions} partitions after {TOPIC_READY_TIMEOUT:?}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn delete_topics(&self, topics: &[String]) -> Result<(), String> {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let results = self
            .runtime
            .block_on(self.client.delete_topics(&names, &Admin::options()))
            .map_err(|e| unreachable(&self.brokers, &e))?;
        for result in results {
            if let Err((topic, code)) = result {
                return Err(format!("cannot delete topic {topic:?}: {code}"));
            }
        }
        Ok(())
    }
}

/// The start/stop switches every client thread watches.
#[derive(Debug, Default)]
struct Control {
    stop_producers: AtomicBool,
    stop_consumers: AtomicBool,
    pause_consumers: AtomicBool,
}

/// What one producer publishes; written by its delivery callback and its sending thread, read
/// by the monitor.
#[derive(Debug, Default)]
struct ProducerMeter {
    acknowledged: AtomicU64,
    acknowledged_bytes: AtomicU64,
    failed: AtomicU64,
    delivered: Mutex<Delivered>,
    /// How late sends were against the pacer (this interval).
    delay: Mutex<LatencyHistogram>,
    first_error: Mutex<Option<String>>,
}

#[derive(Debug, Default)]
struct Delivered {
    /// Send to acknowledgement (this interval).
    latency: LatencyHistogram,
    sequences: SeqSet,
}

impl ProducerMeter {
    fn remember(&self, error: String) {
        let mut first = lock(&self.first_error);
        if first.is_none() {
            *first = Some(error);
        }
    }
}

/// The producer's librdkafka context: delivery reports land here.
struct DeliveryMeter {
    meter: Arc<ProducerMeter>,
    epoch: Instant,
    topic: String,
}

impl ClientContext for DeliveryMeter {}

impl ProducerContext for DeliveryMeter {
    /// When the record was handed to the client, in microseconds since the run's epoch.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_us: usize) {
        let latency_us = (self.epoch.elapsed().as_micros() as u64).saturating_sub(sent_at_us as u64);
        match result {
            Ok(message) => {
                let payload = message.payload().unwrap_or_default();
                self.meter.acknowledged.fetch_add(1, Ordering::Relaxed);
                self.meter.acknowledged_bytes.fetch_add(payload.len() as u64, Ordering::Relaxed);
                let mut delivered = lock(&self.meter.delivered);
                delivered.latency.record_us(latency_us);
                if let Some(sequence) = payload::sequence_of(payload) {
                    delivered.sequences.insert(sequence);
                }
            }
            Err((error, _)) => {
                self.meter.failed.fetch_add(1, Ordering::Relaxed);
                self.meter.remember(format!("delivery to {} failed: {error}", self.topic));
            }
        }
    }
}

/// What one consumer reads.
#[derive(Debug, Default)]
struct ConsumerMeter {
    subscription: usize,
    /// Every record read, valid or not (for rates).
    consumed: AtomicU64,
    consumed_bytes: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    /// Taken once per record by the consumer thread; read by the monitor.
    reads: Mutex<Reads>,
    first_problem: Mutex<Option<String>>,
}

/// The valid records a consumer read.
#[derive(Debug, Default)]
struct Reads {
    /// Send time to read (this interval).
    latency: LatencyHistogram,
    /// By producer id: the sequences read.
    sequences: Vec<SeqSet>,
    duplicates: u64,
    out_of_order: u64,
    /// Per (partition, producer): the next sequence expected, to see reordering.
    next_expected: Vec<u64>,
}

impl ConsumerMeter {
    fn new(subscription: usize, producers: usize, partitions: usize) -> ConsumerMeter {
        let reads = Reads {
            sequences: vec![SeqSet::new(); producers],
            next_expected: vec![0; partitions * producers],
            ..Reads::default()
        };
        ConsumerMeter { subscription, reads: Mutex::new(reads), ..ConsumerMeter::default() }
    }

    fn remember(&self, problem: String) {
        let mut first = lock(&self.first_problem);
        if first.is_none() {
            *first = Some(problem);
        }
    }
}

/// Everything a producer thread needs.
struct ProducerJob {
    id: u32,
    topic: String,
    brokers: String,
    properties: Vec<(String, String)>,
    pacer: Pacer,
    message_size: usize,
    key_distributor: KeyDistributor,
    keys: Arc<Vec<String>>,
    filler: Arc<Filler>,
    run_id: u32,
    epoch: Instant,
    control: Arc<Control>,
    meter: Arc<ProducerMeter>,
}

fn produce(job: ProducerJob) -> Result<(), String> {
    let context = DeliveryMeter { meter: job.meter.clone(), epoch: job.epoch, topic: job.topic.clone() };
    let mut config = client_config(&job.brokers);
    for (key, value) in &job.properties {
        config.set(key, value);
    }
    let producer: ThreadedProducer<DeliveryMeter> =
        config.create_with_context(context).map_err(|e| format!("cannot create producer {}: {e}", job.id))?;
    let mut pacer = job.pacer;
    let mut rng = Rng::new(u64::from(job.run_id) << 32 | u64::from(job.id));
    let mut round_robin = (job.id as usize * 997) % KEY_COUNT;
    let mut buf = Vec::with_capacity(job.message_size);
    let mut sequence = 0u64;
    let start = Instant::now();
    'run: while !job.control.stop_producers.load(Ordering::Relaxed) {
        let now_ns = start.elapsed().as_nanos() as u64;
        if !pacer.is_due(now_ns) {
            std::thread::sleep(Duration::from_nanos(pacer.wait_ns(now_ns).min(1_000_000)));
            continue;
        }
        for _ in 0..BURST_MAX {
            if !pacer.is_due(now_ns) {
                break;
            }
            let lateness_us = pacer.lateness_ns(now_ns) / 1000;
            let header = Header { run_id: job.run_id, producer_id: job.id, sequence, send_time_us: unix_us() };
            payload::encode(&mut buf, &header, job.message_size, &job.filler);
            let key = match job.key_distributor {
                KeyDistributor::None => None,
                KeyDistributor::RoundRobin => {
                    round_robin = (round_robin + 1) % KEY_COUNT;
                    Some(job.keys[round_robin].as_str())
                }
                KeyDistributor::Random => Some(job.keys[rng.below(KEY_COUNT as u64) as usize].as_str()),
            };
            let sent_at_us = job.epoch.elapsed().as_micros() as usize;
            let mut record: BaseRecord<'_, str, [u8], usize> =
                BaseRecord::with_opaque_to(&job.topic, sent_at_us).payload(&buf[..]);
            if let Some(key) = key {
                record = record.key(key);
            }
            loop {
                match producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // The client's queue is full: the cluster is slower than the target.
                        if job.control.stop_producers.load(Ordering::Relaxed) {
                            break 'run;
                        }
                        std::thread::sleep(Duration::from_micros(200));
                        record = back;
                    }
                    Err((error, _)) => {
                        job.meter.failed.fetch_add(1, Ordering::Relaxed);
                        job.meter.remember(format!("send to {} failed: {error}", job.topic));
                        break;
                    }
                }
            }
            lock(&job.meter.delay).record_us(lateness_us);
            pacer.advance();
            sequence += 1;
        }
    }
    // Whatever is still queued is delivered or fails within message.timeout.ms; either way the
    // delivery callback counts it.
    if let Err(e) = producer.flush(PRODUCER_FLUSH_TIMEOUT) {
        job.meter.remember(format!("producer {} did not flush: {e}", job.id));
    }
    Ok(())
}

/// Everything a consumer thread needs.
struct ConsumerJob {
    topic: String,
    brokers: String,
    group_id: String,
    mode: ConsumerMode,
    /// For `assign` mode: this consumer's share of the topic's partitions.
    partitions: Vec<i32>,
    partitions_per_topic: usize,
    properties: Vec<(String, String)>,
    producers: usize,
    message_size: usize,
    run_id: u32,
    control: Arc<Control>,
    ready: Arc<AtomicUsize>,
    meter: Arc<ConsumerMeter>,
}

fn consume(job: ConsumerJob) -> Result<(), String> {
    let mut config = client_config(&job.brokers);
    config
        .set("group.id", &job.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", "earliest");
    for (key, value) in &job.properties {
        config.set(key, value);
    }
    let consumer: BaseConsumer = config.create().map_err(|e| format!("cannot create a consumer: {e}"))?;
    match job.mode {
        ConsumerMode::Assign => {
            // Topics are fresh, so the beginning is exactly what this run produces.
            let mut assignment = TopicPartitionList::new();
            for &partition in &job.partitions {
                assignment.add_partition_offset(&job.topic, partition, Offset::Beginning).map_err(|e| e.to_string())?;
            }
            consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions of {}: {e}", job.topic))?;
        }
        ConsumerMode::Group => {
            consumer.subscribe(&[&job.topic]).map_err(|e| format!("cannot subscribe to {}: {e}", job.topic))?;
        }
    }
    job.ready.fetch_add(1, Ordering::SeqCst);
    let mut paused = false;
    while !job.control.stop_consumers.load(Ordering::Relaxed) {
        let pause = job.control.pause_consumers.load(Ordering::Relaxed);
        if pause != paused {
            // In group mode this covers the partitions assigned at this moment.
            let assignment = consumer.assignment().map_err(|e| format!("cannot read the assignment: {e}"))?;
            let result = if pause { consumer.pause(&assignment) } else { consumer.resume(&assignment) };
            result.map_err(|e| format!("cannot pause or resume: {e}"))?;
            paused = pause;
        }
        let message = match consumer.poll(Duration::from_millis(50)) {
            None => continue,
            Some(Err(e)) => {
                job.meter.errors.fetch_add(1, Ordering::Relaxed);
                job.meter.remember(format!("consume from {} failed: {e}", job.topic));
                continue;
            }
            Some(Ok(message)) => message,
        };
        let read_us = unix_us();
        let value = message.payload().unwrap_or_default();
        job.meter.consumed.fetch_add(1, Ordering::Relaxed);
        job.meter.consumed_bytes.fetch_add(value.len() as u64, Ordering::Relaxed);
        let problem = match payload::verify(value, job.run_id, job.message_size) {
            Ok(header) if (header.producer_id as usize) < job.producers && header.sequence <= SEQUENCE_MAX => {
                let mut reads = lock(&job.meter.reads);
                reads.latency.record_us(read_us.saturating_sub(header.send_time_us));
                let producer = header.producer_id as usize;
                if !reads.sequences[producer].insert(header.sequence) {
                    reads.duplicates += 1;
                }
                if let Ok(partition) = usize::try_from(message.partition()) {
                    if partition < job.partitions_per_topic {
                        let next = &mut reads.next_expected[partition * job.producers + producer];
                        let reordered = header.sequence < *next;
                        *next = (*next).max(header.sequence + 1);
                        reads.out_of_order += u64::from(reordered);
                    }
                }
                None
            }
            Ok(header) => {
                Some(format!("producer id {} or sequence {} out of range", header.producer_id, header.sequence))
            }
            Err(invalid) => Some(invalid.to_string()),
        };
        if let Some(problem) = problem {
            job.meter.corrupt.fetch_add(1, Ordering::Relaxed);
            job.meter.remember(format!(
                "topic {} partition {} offset {}: {problem}",
                job.topic,
                message.partition(),
                message.offset()
            ));
        }
    }
    Ok(())
}

/// Running client threads and their meters.
struct Run<'a> {
    workload: &'a Workload,
    options: &'a RunOptions,
    epoch: Instant,
    control: Arc<Control>,
    producer_meters: Vec<Arc<ProducerMeter>>,
    producer_threads: Vec<Option<JoinHandle<Result<(), String>>>>,
    consumer_meters: Vec<Arc<ConsumerMeter>>,
    consumer_threads: Vec<Option<JoinHandle<Result<(), String>>>>,
}

impl<'a> Run<'a> {
    fn start(
        workload: &'a Workload,
        options: &'a RunOptions,
        run_id: u32,
        topics: &[String],
    ) -> Result<Run<'a>, String> {
        let epoch = Instant::now();
        let control = Arc::new(Control::default());
        let mut run = Run {
            workload,
            options,
            epoch,
            control: control.clone(),
            producer_meters: Vec::new(),
            producer_threads: Vec::new(),
            consumer_meters: Vec::new(),
            consumer_threads: Vec::new(),
        };
        let producers = workload.producers() as usize;
        // Consumers first, so they are connected when the first records arrive.
        let ready = Arc::new(AtomicUsize::new(0));
        let consumer_properties: Vec<(String, String)> =
            workload.consumer_config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for subscription in 0..workload.subscriptions_per_topic {
            for topic in topics {
                for index in 0..workload.consumers_per_subscription {
                    let meter = Arc::new(ConsumerMeter::new(
                        subscription as usize,
                        producers,
                        workload.partitions_per_topic as usize,
                    ));
                    let job = ConsumerJob {
                        topic: topic.clone(),
                        brokers: options.brokers.clone(),
                        group_id: format!("{}-{run_id:08x}-subscription-{subscription}", options.topic_prefix),
                        mode: workload.consumer_mode,
                        partitions: (0..workload.partitions_per_topic as i32)
                            .filter(|p| *p as u32 % workload.consumers_per_subscription == index)
                            .collect(),
                        partitions_per_topic: workload.partitions_per_topic as usize,
                        properties: consumer_properties.clone(),
                        producers,
                        message_size: workload.message_size,
                        run_id,
                        control: control.clone(),
                        ready: ready.clone(),
                        meter: meter.clone(),
                    };
                    let thread = std::thread::Builder::new()
                        .name(format!("bench-consumer-{subscription}-{index}"))
                        .spawn(move || consume(job))
                        .map_err(|e| format!("cannot start a consumer thread: {e}"))?;
                    run.consumer_meters.push(meter);
                    run.consumer_threads.push(Some(thread));
                }
            }
        }
        while ready.load(Ordering::SeqCst) < run.consumer_threads.len() {
            if let Some(error) = run.failed_thread() {
                run.stop_all();
                return Err(error);
            }
            if epoch.elapsed() > TOPIC_READY_TIMEOUT {
                run.stop_all();
                return Err("consumers did not start within a minute".to_string());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let filler = Arc::new(Filler::new(workload.message_size, u64::from(run_id)));
        let keys: Arc<Vec<String>> = Arc::new((0..KEY_COUNT).map(|k| format!("key-{k:05}")).collect());
        let properties: Vec<(String, String)> = workload.producer_properties().into_iter().collect();
        for (t, topic) in topics.iter().enumerate() {
            for index in 0..workload.producers_per_topic {
                let id = t as u32 * workload.producers_per_topic + index;
                let meter = Arc::new(ProducerMeter::default());
                let job = ProducerJob {
                    id,
                    topic: topic.clone(),
                    brokers: options.brokers.clone(),
                    properties: properties.clone(),
                    pacer: Pacer::share(workload.producer_rate, workload.producers()),
                    message_size: workload.message_size,
                    key_distributor: workload.key_distributor,
                    keys: keys.clone(),
                    filler: filler.clone(),
                    run_id,
                    epoch,
                    control: control.clone(),
                    meter: meter.clone(),
                };
                let thread = std::thread::Builder::new()
                    .name(format!("bench-producer-{id}"))
                    .spawn(move || produce(job))
                    .map_err(|e| format!("cannot start a producer thread: {e}"))?;
                run.producer_meters.push(meter);
                run.producer_threads.push(Some(thread));
            }
        }
        Ok(run)
    }

    /// The error of the first client thread that stopped before it was told to, if any.
    fn failed_thread(&mut self) -> Option<String> {
        fn early<T>(threads: &mut [Option<JoinHandle<Result<T, String>>>], what: &str) -> Option<String> {
            let thread = threads.iter_mut().find(|t| t.as_ref().is_some_and(JoinHandle::is_finished))?.take()?;
            Some(match thread.join() {
                Ok(Ok(_)) => format!("a {what} stopped early"),
                Ok(Err(e)) => e,
                Err(_) => format!("a {what} thread panicked"),
            })
        }
        if !self.control.stop_producers.load(Ordering::SeqCst) {
            if let Some(error) = early(&mut self.producer_threads, "producer") {
                return Some(error);
            }
        }
        if !self.control.stop_consumers.load(Ordering::SeqCst) {
            return early(&mut self.consumer_threads, "consumer");
        }
        None
    }

    fn stop_all(&mut self) {
        self.control.stop_producers.store(true, Ordering::SeqCst);
        self.control.stop_consumers.store(true, Ordering::SeqCst);
        self.join();
    }

    /// Joins every thread; returns the first thread error.
    fn join(&mut self) -> Option<String> {
        let mut first_error = None;
        let threads = self.producer_threads.drain(..).chain(self.consumer_threads.drain(..)).flatten();
        for thread in threads {
            let error = match thread.join() {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(_) => "a producer or consumer thread panicked".to_string(),
            };
            first_error.get_or_insert(error);
        }
        first_error
    }

    fn producers_finished(&self) -> bool {
        self.producer_threads.iter().flatten().all(JoinHandle::is_finished)
    }

    fn acknowledged(&self) -> (u64, u64) {
        self.producer_meters.iter().fold((0, 0), |(n, b), m| {
            (n + m.acknowledged.load(Ordering::Relaxed), b + m.acknowledged_bytes.load(Ordering::Relaxed))
        })
    }

    /// Records read per subscription (all of them, valid or not).
    fn consumed_per_subscription(&self) -> Vec<u64> {
        let mut per = vec![0u64; self.workload.subscriptions_per_topic as usize];
        for meter in &self.consumer_meters {
            per[meter.subscription] += meter.consumed.load(Ordering::Relaxed);
        }
        per
    }

    /// Acknowledged but not yet read, worst subscription.
    fn backlog_messages(&self) -> u64 {
        let (acknowledged, _) = self.acknowledged();
        self.consumed_per_subscription().iter().map(|&c| acknowledged.saturating_sub(c)).max().unwrap_or(0)
    }

    fn consumed_bytes(&self) -> u64 {
        self.consumer_meters.iter().map(|m| m.consumed_bytes.load(Ordering::Relaxed)).sum()
    }

    /// Samples the meters until the run is over, then stops the clients and verifies.
    fn monitor(mut self) -> Result<Outcome, String> {
        let workload = self.workload;
        let warmup = workload.warmup_seconds;
        let measure_end = warmup + workload.test_duration_seconds;
        let interval = self.options.interval.as_secs_f64().max(0.05);
        let drain_threshold = 1_000.max(workload.producer_rate / 10);
        let mut sampler = Sampler::new(self.options.progress, measure_end);
        let mut phase = if warmup > 0.0 { Phase::Warmup } else { Phase::Measure };
        let mut backlog = BacklogState::Off;
        if phase == Phase::Measure {
            backlog = self.start_measuring();
        }
        let mut next_sample = interval;
        let mut last_progress = (0u64, 0.0f64);
        let mut next_exact_check = 0.0;
        loop {
            let now = self.epoch.elapsed().as_secs_f64();
            let wake = next_sample.min(if phase == Phase::Warmup { warmup } else { f64::MAX });
            let sleep = (wake - now).clamp(0.0, 0.05);
            if sleep > 0.0 {
                std::thread::sleep(Duration::from_secs_f64(sleep));
            }
            let now = self.epoch.elapsed().as_secs_f64();
            if let Some(error) = self.failed_thread() {
                self.stop_all();
                sampler.finish_line();
                return Err(error);
            }
            match phase {
                Phase::Warmup if now >= warmup => {
                    sampler.sample(&self, now, Phase::Warmup, false);
                    phase = Phase::Measure;
                    backlog = self.start_measuring();
                }
                Phase::Warmup => {}
                Phase::Measure => {
                    backlog = self.step_backlog(backlog, now, drain_threshold);
                    let drained_alone = matches!(&backlog, BacklogState::Done(b) if b.producers_stopped_for_drain);
                    if now >= measure_end || drained_alone {
                        sampler.sample(
                            &self,
                            now,
                            Phase::Measure,
                            self.control.pause_consumers.load(Ordering::Relaxed),
                        );
                        let built = match &backlog {
                            BacklogState::Building { acknowledged_bytes_at_pause, .. } => {
                                self.acknowledged().1.saturating_sub(*acknowledged_bytes_at_pause)
                            }
                            _ => 0,
                        };
                        backlog = backlog.end(now, workload.consumer_backlog_size_mib * 1024 * 1024, built);
                        phase = Phase::Finish;
                        self.control.stop_producers.store(true, Ordering::SeqCst);
                        self.control.pause_consumers.store(false, Ordering::SeqCst);
                        last_progress = (self.consumed_per_subscription().iter().sum(), now);
                    }
                }
                Phase::Finish => {
                    let consumed: u64 = self.consumed_per_subscription().iter().sum();
                    if consumed != last_progress.0 {
                        last_progress = (consumed, now);
                    }
                    // Counts can reach the acknowledged total while records are still unread
                    // (duplicates; records whose delivery failed yet landed), so the end is
                    // decided by comparing the sets, a few times a second.
                    let idle = now - last_progress.1 > self.options.finish_idle_timeout.as_secs_f64();
                    let mut done = false;
                    if self.producers_finished() && (idle || now >= next_exact_check) {
                        next_exact_check = now + EXACT_CHECK_INTERVAL_S;
                        done = idle || self.all_read();
                    }
                    if done {
                        sampler.sample(&self, now, Phase::Finish, false);
                        break;
                    }
                }
            }
            if now >= next_sample {
                sampler.sample(&self, now, phase, self.control.pause_consumers.load(Ordering::Relaxed));
                while next_sample <= now {
                    next_sample += interval;
                }
            }
        }
        sampler.finish_line();
        self.control.stop_consumers.store(true, Ordering::SeqCst);
        if let Some(error) = self.join() {
            return Err(error);
        }
        let verification = self.verify();
        let backlog = match backlog {
            BacklogState::Done(result) => Some(result),
            _ => None,
        };
        Ok(Outcome { sampler, backlog, verification })
    }

    fn start_measuring(&self) -> BacklogState {
        if self.workload.consumer_backlog_size_mib == 0 {
            return BacklogState::Off;
        }
        self.control.pause_consumers.store(true, Ordering::SeqCst);
        BacklogState::Building {
            since: self.epoch.elapsed().as_secs_f64(),
            acknowledged_bytes_at_pause: self.acknowledged().1,
        }
    }

    fn step_backlog(&self, state: BacklogState, now: f64, threshold: u64) -> BacklogState {
        let target_bytes = self.workload.consumer_backlog_size_mib * 1024 * 1024;
        let stop_producers = self.workload.stop_producers_for_drain;
        match state {
            BacklogState::Building { since, acknowledged_bytes_at_pause } => {
                let built_bytes = self.acknowledged().1.saturating_sub(acknowledged_bytes_at_pause);
                if built_bytes < target_bytes {
                    return BacklogState::Building { since, acknowledged_bytes_at_pause };
                }
                if stop_producers {
                    self.control.stop_producers.store(true, Ordering::SeqCst);
                }
                self.control.pause_consumers.store(false, Ordering::SeqCst);
                BacklogState::Draining {
                    result: BacklogResult {
                        target_bytes,
                        built_bytes,
                        build_seconds: now - since,
                        drain_seconds: None,
                        drain_mib_per_s: None,
                        drained_threshold_messages: threshold,
                        producers_stopped_for_drain: stop_producers,
                    },
                    resumed: now,
                    consumed_bytes_at_resume: self.consumed_bytes(),
                }
            }
            BacklogState::Draining { mut result, resumed, consumed_bytes_at_resume } => {
                let producers_done = !stop_producers || self.producers_finished();
                if !(producers_done && self.backlog_messages() <= threshold) {
                    return BacklogState::Draining { result, resumed, consumed_bytes_at_resume };
                }
                let seconds = now - resumed;
                result.drain_seconds = Some(seconds);
                let drained_bytes = self.consumed_bytes().saturating_sub(consumed_bytes_at_resume);
                result.drain_mib_per_s = Some(crate::results::round3(drained_bytes as f64 / MIB / seconds.max(1e-9)));
                BacklogState::Done(result)
            }
            other => other,
        }
    }

    /// What the producers had acknowledged, by producer id.
    fn acknowledged_sequences(&self) -> Vec<SeqSet> {
        self.producer_meters.iter().map(|m| lock(&m.delivered).sequences.clone()).collect()
    }

    /// Per subscription and producer: the sequences read by any of the subscription's
    /// consumers; and how many reads repeated a record (within or across consumers).
    fn read_sequences(&self) -> (Vec<Vec<SeqSet>>, u64) {
        let producers = self.producer_meters.len();
        let mut read = vec![vec![SeqSet::new(); producers]; self.workload.subscriptions_per_topic as usize];
        let mut duplicates = 0;
        for meter in &self.consumer_meters {
            let reads = lock(&meter.reads);
            duplicates += reads.duplicates;
            for (union, sequences) in read[meter.subscription].iter_mut().zip(&reads.sequences) {
                duplicates += union.union_with(sequences);
            }
        }
        (read, duplicates)
    }

    /// Whether every subscription has read every acknowledged record; cheap while the counts
    /// alone show it has not.
    fn all_read(&self) -> bool {
        let (acknowledged, _) = self.acknowledged();
        if self.consumed_per_subscription().iter().any(|&c| c < acknowledged) {
            return false;
        }
        let acknowledged = self.acknowledged_sequences();
        let (read, _) = self.read_sequences();
        read.iter().all(|read| acknowledged.iter().zip(read).all(|(acked, read)| acked.count_not_in(read) == 0))
    }

    fn verify(&self) -> Verification {
        let acknowledged = self.acknowledged_sequences();
        let (read, duplicates) = self.read_sequences();
        let mut v = Verification {
            acknowledged: acknowledged.iter().map(SeqSet::len).sum(),
            publish_failed: self.producer_meters.iter().map(|m| m.failed.load(Ordering::Relaxed)).sum(),
            duplicates,
            out_of_order: self.consumer_meters.iter().map(|m| lock(&m.reads).out_of_order).sum(),
            corrupt: self.consumer_meters.iter().map(|m| m.corrupt.load(Ordering::Relaxed)).sum(),
            consume_errors: self.consumer_meters.iter().map(|m| m.errors.load(Ordering::Relaxed)).sum(),
            ..Verification::default()
        };
        let mut problems: Vec<String> = Vec::new();
        for (subscription, read) in read.iter().enumerate() {
            let mut consumed = 0;
            for (producer, (acked, read)) in acknowledged.iter().zip(read).enumerate() {
                let missing = acked.count_not_in(read);
                v.missing += missing;
                consumed += acked.len() - missing;
                v.consumed_unacknowledged += read.count_not_in(acked);
                if let Some(sequence) = acked.first_not_in(read) {
                    problems.push(format!(
                        "subscription {subscription} did not read {missing} acknowledged record(s) of producer {producer}, the first is sequence {sequence}"
                    ));
                }
            }
            v.consumed_per_subscription.push(consumed);
        }
        for meter in &self.producer_meters {
            problems.extend(lock(&meter.first_error).clone());
        }
        for meter in &self.consumer_meters {
            problems.extend(lock(&meter.first_problem).clone());
        }
        problems.truncate(PROBLEMS_MAX);
        v.problems = problems;
        v
    }
}

enum BacklogState {
    Off,
    Building { since: f64, acknowledged_bytes_at_pause: u64 },
    Draining { result: BacklogResult, resumed: f64, consumed_bytes_at_resume: u64 },
    Done(BacklogResult),
}

impl BacklogState {
    /// The measured phase is over: a backlog still building or draining is reported as not
    /// drained.
    fn end(self, now: f64, target_bytes: u64, built_bytes: u64) -> BacklogState {
        match self {
            BacklogState::Building { since, .. } => BacklogState::Done(BacklogResult {
                target_bytes,
                built_bytes,
                build_seconds: now - since,
                drain_seconds: None,
                drain_mib_per_s: None,
                drained_threshold_messages: 0,
                producers_stopped_for_drain: false,
            }),
            BacklogState::Draining { result, .. } => BacklogState::Done(result),
            other => other,
        }
    }
}

/// Turns meter readings into the time series, the measured totals and the progress line.
struct Sampler {
    progress: Option<ProgressLine>,
    run_seconds: f64,
    last_t: f64,
    last_published: (u64, u64, u64),
    last_consumed: (u64, u64, u64),
    series: Vec<SeriesPoint>,
    measured_seconds: f64,
    measured_publish: (u64, u64, u64),
    measured_consume: (u64, u64, u64),
    interval_publish: LatencyHistogram,
    interval_delay: LatencyHistogram,
    interval_e2e: LatencyHistogram,
    total_publish: LatencyHistogram,
    total_delay: LatencyHistogram,
    total_e2e: LatencyHistogram,
}

impl Sampler {
    fn new(progress: Progress, run_seconds: f64) -> Sampler {
        Sampler {
            progress: ProgressLine::new(progress),
            run_seconds,
            last_t: 0.0,
            last_published: (0, 0, 0),
            last_consumed: (0, 0, 0),
            series: Vec::new(),
            measured_seconds: 0.0,
            measured_publish: (0, 0, 0),
            measured_consume: (0, 0, 0),
            interval_publish: LatencyHistogram::new(),
            interval_delay: LatencyHistogram::new(),
            interval_e2e: LatencyHistogram::new(),
            total_publish: LatencyHistogram::new(),
            total_delay: LatencyHistogram::new(),
            total_e2e: LatencyHistogram::new(),
        }
    }

    /// Closes the interval ending at `t` (seconds since the epoch), which lay in `phase`.
    fn sample(&mut self, run: &Run<'_>, t: f64, phase: Phase, consumers_paused: bool) {
        let dt = t - self.last_t;
        if dt < 0.001 {
            return;
        }
        self.interval_publish.reset();
        self.interval_delay.reset();
        self.interval_e2e.reset();
        let mut published = (0, 0, 0);
        for meter in &run.producer_meters {
            published.0 += meter.acknowledged.load(Ordering::Relaxed);
            published.1 += meter.acknowledged_bytes.load(Ordering::Relaxed);
            published.2 += meter.failed.load(Ordering::Relaxed);
            let mut delivered = lock(&meter.delivered);
            self.interval_publish.add(&delivered.latency);
            delivered.latency.reset();
            drop(delivered);
            let mut delay = lock(&meter.delay);
            self.interval_delay.add(&delay);
            delay.reset();
        }
        let mut consumed = (0, 0, 0);
        for meter in &run.consumer_meters {
            consumed.0 += meter.consumed.load(Ordering::Relaxed);
            consumed.1 += meter.consumed_bytes.load(Ordering::Relaxed);
            consumed.2 += meter.errors.load(Ordering::Relaxed);
            let mut reads = lock(&meter.reads);
            self.interval_e2e.add(&reads.latency);
            reads.latency.reset();
        }
        let delta = |now: (u64, u64, u64), last: (u64, u64, u64)| (now.0 - last.0, now.1 - last.1, now.2 - last.2);
        let d_pub = delta(published, self.last_published);
        let d_con = delta(consumed, self.last_consumed);
        if phase == Phase::Measure {
            self.measured_seconds += dt;
            self.measured_publish = (
                self.measured_publish.0 + d_pub.0,
                self.measured_publish.1 + d_pub.1,
                self.measured_publish.2 + d_pub.2,
            );
            self.measured_consume = (
                self.measured_consume.0 + d_con.0,
                self.measured_consume.1 + d_con.1,
                self.measured_consume.2 + d_con.2,
            );
            self.total_publish.add(&self.interval_publish);
            self.total_delay.add(&self.interval_delay);
            self.total_e2e.add(&self.interval_e2e);
        }
        let publish = Throughput::over(d_pub.0, d_pub.1, d_pub.2, dt);
        let consume = Throughput::over(d_con.0, d_con.1, d_con.2, dt);
        let point = SeriesPoint {
            t_s: crate::results::round3(t),
            phase,
            publish_messages_per_s: publish.messages_per_s,
            publish_mib_per_s: publish.mib_per_s,
            consume_messages_per_s: consume.messages_per_s,
            consume_mib_per_s: consume.mib_per_s,
            publish_errors: d_pub.2,
            backlog_messages: run.backlog_messages(),
            consumers_paused,
            publish_latency: self.interval_publish.summary(),
            end_to_end_latency: self.interval_e2e.summary(),
        };
        if let Some(progress) = &mut self.progress {
            progress.show(&point, published.2 + consumed.2, self.run_seconds);
        }
        self.series.push(point);
        self.last_t = t;
        self.last_published = published;
        self.last_consumed = consumed;
    }

    fn finish_line(&mut self) {
        if let Some(progress) = &mut self.progress {
            progress.finish();
        }
    }
}

/// What the monitor hands back.
struct Outcome {
    sampler: Sampler,
    backlog: Option<BacklogResult>,
    verification: Verification,
}

impl Outcome {
    fn into_results(
        self,
        workload: &Workload,
        options: &RunOptions,
        started_unix_ms: u64,
        topics: Vec<String>,
    ) -> BenchResults {
        let s = self.sampler;
        let seconds = s.measured_seconds;
        BenchResults {
            format_version: crate::results::FORMAT_VERSION,
            name: workload.name.clone(),
            brokers: options.brokers.clone(),
            started_unix_ms,
            client: ClientFacts {
                keel_bench_version: env!("CARGO_PKG_VERSION").to_string(),
                cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
                librdkafka_version: rdkafka::util::get_rdkafka_version().1,
            },
            workload: workload.clone(),
            topics,
            measured_seconds: crate::results::round3(seconds),
            publish: Throughput::over(s.measured_publish.0, s.measured_publish.1, s.measured_publish.2, seconds),
            consume: Throughput::over(s.measured_consume.0, s.measured_consume.1, s.measured_consume.2, seconds),
            publish_latency: s.total_publish.summary(),
            publish_delay: s.total_delay.summary(),
            end_to_end_latency: s.total_e2e.summary(),
            backlog: self.backlog,
            verification: self.verification,
            series: s.series,
        }
    }
}
