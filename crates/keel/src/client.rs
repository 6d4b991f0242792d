//! The client commands, built on librdkafka (the rdkafka crate) so they are real Kafka clients.

use std::io::BufRead;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

pub(crate) const DEFAULT_BROKERS: &str = "127.0.0.1:9092";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, clap::Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        partitions: i32,
        /// Replicas per partition (default: the broker's default.replication.factor).
        #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
        replication_factor: i32,
        /// Topic config as KEY=VALUE (Kafka names: retention.ms, flush.policy, ...); repeatable.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        configs: Vec<String>,
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// List topics.
    List {
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Show a topic's partitions and configs.
    Describe {
        name: String,
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
    /// Delete a topic and its data.
    Delete {
        name: String,
        #[arg(long, default_value = DEFAULT_BROKERS)]
        brokers: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct ProduceArgs {
    topic: String,
    /// Split each line at the first SEP into key and value.
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// 0, 1 or all.
    #[arg(long, default_value = "all")]
    acks: String,
    #[arg(long, default_value = DEFAULT_BROKERS)]
    brokers: String,
}

#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    topic: String,
    /// Start at the earliest offset instead of the end.
    #[arg(long)]
    from_beginning: bool,
    /// Join this consumer group (committed offsets decide where to start).
    #[arg(long)]
    group: Option<String>,
    /// Exit after this many records.
    #[arg(long)]
    count: Option<u64>,
    /// Exit when no record arrives for this long.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Print only values.
    #[arg(long)]
    value_only: bool,
    #[arg(long, default_value = DEFAULT_BROKERS)]
    brokers: String,
}

pub(crate) fn base_config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers).set("client.id", "keel-cli").set("log_level", "3");
    config
}

pub(crate) fn unreachable(brokers: &str, error: &KafkaError) -> String {
    format!(
        "cannot reach a Kafka broker at {brokers} ({error}); start one with: keel serve (or pass --brokers HOST:PORT)"
    )
}

/// Fails fast, with a message for people, when no broker answers.
pub(crate) fn check_reachable(consumer: &BaseConsumer, brokers: &str) -> Result<rdkafka::metadata::Metadata, String> {
    consumer.fetch_metadata(None, CONNECT_TIMEOUT).map_err(|e| unreachable(brokers, &e))
}

fn metadata_consumer(brokers: &str) -> Result<BaseConsumer, String> {
    base_config(brokers)
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| format!("cannot create a Kafka client: {e}"))
}

fn admin(brokers: &str) -> Result<AdminClient<DefaultClientContext>, String> {
    base_config(brokers).create().map_err(|e| format!("cannot create a Kafka admin client: {e}"))
}

fn missing_topic(name: &str) -> String {
    format!("topic {name:?} does not exist; create it with: keel topic create {name}")
}

pub async fn topic(command: TopicCommand) -> Result<(), String> {
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    match command {
        TopicCommand::Create { name, partitions, replication_factor, configs, brokers } => {
            check_reachable(&metadata_consumer(&brokers)?, &brokers)?;
            let pairs: Vec<(String, String)> = configs
                .iter()
                .map(|c| {
                    c.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| format!("--config {c:?} must be KEY=VALUE, e.g. --config retention.ms=86400000"))
                })
                .collect::<Result<_, _>>()?;
            let mut new_topic = NewTopic::new(&name, partitions, TopicReplication::Fixed(replication_factor));
            for (k, v) in &pairs {
                new_topic = new_topic.set(k, v);
            }
            let results =
                admin(&brokers)?.create_topics([&new_topic], &options).await.map_err(|e| unreachable(&brokers, &e))?;
            for result in results {
                match result {
                    Ok(topic) if partitions > 0 => println!("created topic {topic} with {partitions} partition(s)"),
                    Ok(topic) => println!("created topic {topic}"),
                    Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                        return Err(format!("topic {topic:?} already exists"))
                    }
                    Err((topic, code)) => return Err(format!("cannot create topic {topic:?}: {code}")),
                }
            }
            Ok(())
        }
        TopicCommand::List { brokers } => {
            let metadata = check_reachable(&metadata_consumer(&brokers)?, &brokers)?;
            let mut names: Vec<&str> = metadata.topics().iter().map(|t| t.name()).collect();
            names.sort_unstable();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        TopicCommand::Describe { name, brokers } => {
            let consumer = metadata_consumer(&brokers)?;
            check_reachable(&consumer, &brokers)?;
            let metadata =
                consumer.fetch_metadata(Some(&name), CONNECT_TIMEOUT).map_err(|e| unreachable(&brokers, &e))?;
            let topic = metadata.topics().first().ok_or_else(|| missing_topic(&name))?;
            if topic.error().is_some() || topic.partitions().is_empty() {
                return Err(missing_topic(&name));
            }
            println!("topic {}  partitions {}", topic.name(), topic.partitions().len());
            for p in topic.partitions() {
                println!(
                    "  partition {:>4}  leader {}  replicas {:?}  isr {:?}",
                    p.id(),
                    p.leader(),
                    p.replicas(),
                    p.isr()
                );
            }
            let configs = admin(&brokers)?
                .describe_configs([&ResourceSpecifier::Topic(&name)], &options)
                .await
                .map_err(|e| unreachable(&brokers, &e))?;
            for resource in configs.into_iter().flatten() {
                println!("configs:");
                for entry in resource.entries {
                    println!(
                        "  {} = {}{}",
                        entry.name,
                        entry.value.unwrap_or_default(),
                        if entry.is_default { "" } else { "  (set for this topic)" }
                    );
                }
            }
            Ok(())
        }
        TopicCommand::Delete { name, brokers } => {
            check_reachable(&metadata_consumer(&brokers)?, &brokers)?;
            let results =
                admin(&brokers)?.delete_topics(&[&name], &options).await.map_err(|e| unreachable(&brokers, &e))?;
            for result in results {
                match result {
                    Ok(topic) => println!("deleted topic {topic}"),
                    Err((topic, RDKafkaErrorCode::UnknownTopicOrPartition)) => return Err(missing_topic(&topic)),
                    Err((topic, code)) => return Err(format!("cannot delete topic {topic:?}: {code}")),
                }
            }
            Ok(())
        }
    }
}

pub async fn produce(args: ProduceArgs) -> Result<(), String> {
    let acks = match args.acks.as_str() {
        "0" | "1" => args.acks.as_str(),
        "all" | "-1" => "all",
        other => return Err(format!("--acks {other:?} must be 0, 1 or all")),
    };
    check_reachable(&metadata_consumer(&args.brokers)?, &args.brokers)?;
    let producer: FutureProducer = base_config(&args.brokers)
        .set("acks", acks)
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .create()
        .map_err(|e| format!("cannot create a producer: {e}"))?;
    let stdin = std::io::stdin();
    let mut deliveries = Vec::new();
    let mut lines = 0u64;
    for line in stdin.lock().lines() {
        let line = line.map_err(|e| format!("cannot read standard input: {e}"))?;
        let (key, value) = match &args.key_separator {
            Some(sep) => match line.split_once(sep.as_str()) {
                Some((k, v)) => (Some(k.to_string()), v.to_string()),
                None => (None, line.clone()),
            },
            None => (None, line.clone()),
        };
        let mut record = FutureRecord::to(&args.topic).payload(&value);
        if let Some(key) = &key {
            record = record.key(key);
        }
        match producer.send_result(record) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => return Err(format!("cannot queue record {lines}: {e}")),
        }
        lines += 1;
        // Keep memory bounded for large inputs.
        if deliveries.len() >= 10_000 {
            settle(&mut deliveries, &args.topic).await?;
        }
    }
    settle(&mut deliveries, &args.topic).await?;
    eprintln!("produced {lines} record(s) to {}", args.topic);
    Ok(())
}

async fn settle(deliveries: &mut Vec<rdkafka::producer::DeliveryFuture>, topic: &str) -> Result<(), String> {
    for delivery in deliveries.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownTopicOrPartition), _))) => {
                return Err(missing_topic(topic))
            }
            Ok(Err((e, _))) => return Err(format!("a record was not delivered: {e}")),
            Err(_) => return Err("the producer stopped before delivering every record".to_string()),
        }
    }
    Ok(())
}

pub async fn consume(args: ConsumeArgs) -> Result<(), String> {
    let metadata_client = metadata_consumer(&args.brokers)?;
    check_reachable(&metadata_client, &args.brokers)?;
    let metadata = metadata_client
        .fetch_metadata(Some(&args.topic), CONNECT_TIMEOUT)
        .map_err(|e| unreachable(&args.brokers, &e))?;
    let partitions: Vec<i32> = match metadata.topics().first() {
        Some(t) if t.error().is_none() && !t.partitions().is_empty() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => return Err(missing_topic(&args.topic)),
    };
    let mut config = base_config(&args.brokers);
    config
        .set("enable.partition.eof", "false")
        .set("auto.offset.reset", if args.from_beginning { "earliest" } else { "latest" });
    let consumer: StreamConsumer = match &args.group {
        Some(group) => {
            // Offsets are stored for the records printed, and only those: librdkafka would
            // otherwise commit past records it fetched but this command never showed.
            let consumer: StreamConsumer = config
                .set("group.id", group)
                .set("enable.auto.offset.store", "false")
                .create()
                .map_err(|e| format!("cannot create a consumer: {e}"))?;
            consumer.subscribe(&[&args.topic]).map_err(|e| format!("cannot subscribe to {}: {e}", args.topic))?;
            consumer
        }
        None => {
            let consumer: StreamConsumer = config
                .set("group.id", "keel-cli-unused")
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| format!("cannot create a consumer: {e}"))?;
            let mut assignment = TopicPartitionList::new();
            let start = if args.from_beginning { Offset::Beginning } else { Offset::End };
            for p in partitions {
                assignment.add_partition_offset(&args.topic, p, start).map_err(|e| e.to_string())?;
            }
            consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions: {e}"))?;
            consumer
        }
    };
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c) {
        let next = consumer.recv();
        let message = match args.timeout_ms {
            Some(ms) => match tokio::time::timeout(Duration::from_millis(ms), next).await {
                Ok(m) => m,
                Err(_) => break,
            },
            None => next.await,
        };
        let message = message.map_err(|e| format!("consume failed: {e}"))?;
        let value = message.payload().map(String::from_utf8_lossy).unwrap_or_default();
        if args.value_only {
            println!("{value}");
        } else {
            let key = message.key().map(String::from_utf8_lossy).unwrap_or_default();
            println!("{}\t{}\t{}\t{}", message.partition(), message.offset(), key, value);
        }
        if args.group.is_some() {
            consumer.store_offset_from_message(&message).map_err(|e| format!("cannot store the offset: {e}"))?;
        }
        seen += 1;
    }
    if args.group.is_some() && seen > 0 {
        // What was printed is committed before the command ends.
        consumer.commit_consumer_state(CommitMode::Sync).map_err(|e| format!("cannot commit offsets: {e}"))?;
    }
    Ok(())
}
