//! Group coordinator benchmarks against an in-process keel, with librdkafka consumers:
//! `cargo bench -p keel --bench groups`. Prints measurements; results go in
//! docs/benchmarks.md.
//!
//! - rebalance: a stable group of 9 consumers over 100 partitions; a 10th joins; time from its
//!   subscribe until every member holds its new assignment (all 100 partitions assigned once);
//! - commits: threads each committing offsets synchronously (one group per thread);
//! - raw: the same load from keel's minimal Kafka client on many connections, which measures
//!   the broker rather than librdkafka (`cargo bench -p keel --bench groups -- raw`).
#![allow(clippy::disallowed_methods, clippy::print_stdout)] // a benchmark reads the clock and prints

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_broker::cluster::kafka_client::KafkaConnection;
use keel_broker::{BrokerConfig, RunningNode};
use keel_kafka::kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use keel_kafka::kafka_protocol::messages::{GroupId, OffsetCommitRequest, TopicName};
use keel_kafka::kafka_protocol::protocol::StrBytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers).set("log_level", "3");
    c
}

fn consumer(brokers: &str, group: &str, heartbeat_ms: u32) -> BaseConsumer {
    client_config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", heartbeat_ms.to_string())
        .set("partition.assignment.strategy", "range")
        .create()
        .expect("consumer")
}

fn assigned(consumers: &[BaseConsumer]) -> usize {
    consumers.iter().map(|c| c.assignment().map(|a| a.count()).unwrap_or(0)).sum()
}

fn rebalance(broker: &keel_broker::Broker, brokers: &str, heartbeat_ms: u32) {
    let group = format!("rebalance-{heartbeat_ms}");
    let mut consumers: Vec<BaseConsumer> = (0..9).map(|_| consumer(brokers, &group, heartbeat_ms)).collect();
    for c in &consumers {
        c.subscribe(&["wide"]).unwrap();
    }
    let settle = |consumers: &[BaseConsumer], members: usize| {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            for c in consumers {
                let _ = c.poll(Duration::from_millis(1));
            }
            let every_member_has_some =
                consumers.iter().all(|c| c.assignment().map(|a| a.count() > 0).unwrap_or(false));
            if consumers.len() == members && every_member_has_some && assigned(consumers) == 100 {
                return start.elapsed();
            }
        }
        panic!("the group did not settle");
    };
    settle(&consumers, 9);
    let last = consumer(brokers, &group, heartbeat_ms);
    last.subscribe(&["wide"]).unwrap();
    consumers.push(last);
    let took = settle(&consumers, 10);
    println!(
        "rebalance: 10th consumer joins a group of 9 over 100 partitions, heartbeat.interval.ms={heartbeat_ms}: {:.0} ms until all 10 hold their new assignment",
        took.as_secs_f64() * 1000.0
    );
    let r = broker.last_rebalance(&group).expect("the coordinator timed the rebalance");
    assert_eq!(r.members, 10);
    println!(
        "  coordinator: generation {} stable {} ms after the rebalance started, {} ms after its last member joined",
        r.generation_id,
        r.stable.saturating_since(r.started).as_millis(),
        r.stable.saturating_since(r.last_joined).as_millis()
    );
}

fn commits(brokers: &str, threads: usize, seconds: f64) {
    let done = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (done, count, brokers) = (done.clone(), count.clone(), brokers.to_string());
            std::thread::spawn(move || {
                let c = consumer(&brokers, &format!("committer-{t}"), 3000);
                let mut offset = 0;
                while !done.load(Ordering::Relaxed) {
                    offset += 1;
                    let mut tpl = TopicPartitionList::new();
                    tpl.add_partition_offset("wide", (t % 100) as i32, Offset::Offset(offset)).unwrap();
                    c.commit(&tpl, CommitMode::Sync).expect("commit");
                    count.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    done.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    let n = count.load(Ordering::Relaxed);
    println!("offset commits: {threads:>2} committing threads: {:.0} commits/s", n as f64 / seconds);
}

/// The broker's side alone: `connections` connections, each committing one offset per
/// OffsetCommit (v8, a group per connection, as a consumer outside any generation commits) and
/// waiting for the answer before the next, through keel's own minimal Kafka client, so that
/// librdkafka's costs on the same two cores do not set the ceiling.
fn raw_commits(runtime: &tokio::runtime::Runtime, brokers: &str, connections: usize, seconds: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let brokers = brokers.to_string();
            runtime.spawn(async move {
                let timeout = Duration::from_secs(10);
                let mut connection =
                    KafkaConnection::connect(&brokers, format!("raw-committer-{c}"), timeout).await.expect("connect");
                let mut commits = 0u64;
                while tokio::time::Instant::now() < deadline {
                    let partition = OffsetCommitRequestPartition::default()
                        .with_partition_index((c % 100) as i32)
                        .with_committed_offset(commits as i64 + 1)
                        .with_committed_leader_epoch(-1);
                    let request = OffsetCommitRequest::default()
                        .with_group_id(GroupId(StrBytes::from_string(format!("raw-{c}"))))
                        .with_generation_id_or_member_epoch(-1)
                        .with_topics(vec![OffsetCommitRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_static_str("wide")))
                            .with_partitions(vec![partition])]);
                    let response = connection.call(&request, 8, timeout).await.expect("offset commit");
                    let error = response.topics[0].partitions[0].error_code;
                    assert_eq!(error, 0, "offset commit refused");
                    commits += 1;
                }
                commits
            })
        })
        .collect();
    let total: u64 = runtime.block_on(async {
        let mut total = 0;
        for task in tasks {
            total += task.await.expect("committer task");
        }
        total
    });
    println!(
        "offset commits, keel's minimal client: {connections:>3} connections: {:.0} commits/s",
        total as f64 / seconds
    );
}

fn main() {
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::Builder::new().prefix("keel-bench-groups-").tempdir_in(".").unwrap();
    // KEEL_BENCH_OFFSETS_FLUSH=never measures commits without fsync.
    let flush = std::env::var("KEEL_BENCH_OFFSETS_FLUSH").unwrap_or_else(|_| "always".to_string());
    println!("__consumer_offsets flush policy: {flush}");
    let config = BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        controller_listen: "127.0.0.1:0".parse().unwrap(),
        offsets_topic_flush_policy: flush,
        ..BrokerConfig::default()
    };
    let running = runtime.block_on(RunningNode::start(config)).unwrap();
    assert!(runtime.block_on(running.wait_ready(Duration::from_secs(30))), "the broker is ready");
    let brokers = running.local_addr.to_string();
    let admin: AdminClient<DefaultClientContext> = client_config(&brokers).create().unwrap();
    runtime
        .block_on(admin.create_topics([&NewTopic::new("wide", 100, TopicReplication::Fixed(1))], &AdminOptions::new()))
        .unwrap();
    if wanted("rebalance") {
        rebalance(&running.broker, &brokers, 500);
        rebalance(&running.broker, &brokers, 3000);
    }
    if wanted("commit") {
        for threads in [1, 4, 8, 16] {
            commits(&brokers, threads, 3.0);
        }
    }
    if wanted("raw") {
        for connections in [1, 4, 16, 64] {
            raw_commits(&runtime, &brokers, connections, 3.0);
        }
    }
    runtime.block_on(running.shutdown()).unwrap();
}
