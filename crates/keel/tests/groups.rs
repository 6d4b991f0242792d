//! Consumer groups with a real client (librdkafka): shares, leaves, rebalances, committed
//! offsets across restarts.
#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;

fn create_topic(broker: &TestBroker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client_config(&broker.brokers()).create().unwrap();
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = broker.runtime.block_on(admin.create_topics([&topic], &AdminOptions::new())).unwrap();
    assert!(results[0].is_ok(), "{results:?}");
}

fn group_consumer(brokers: &str, group: &str, strategy: &str) -> BaseConsumer {
    group_consumer_config(brokers, group).set("partition.assignment.strategy", strategy).create().expect("consumer")
}

/// Polls every consumer in turn; each consumed record is committed synchronously before the
/// next poll, so committed work is never redone. Returns (consumer index, partition, offset)
/// for each record processed, until `want` records were processed or the deadline passes.
fn consume_committing(
    consumers: &[&BaseConsumer],
    processed: &mut Vec<(usize, i32, i64)>,
    want: usize,
    deadline: Duration,
) {
    let start = Instant::now();
    while processed.len() < want && start.elapsed() < deadline {
        for (i, consumer) in consumers.iter().enumerate() {
            if let Some(message) = consumer.poll(Duration::from_millis(20)) {
                let message = message.expect("consume");
                processed.push((i, message.partition(), message.offset()));
                // A commit can race a rebalance (another member's join bumps the generation
                // while this one's commit waits behind its own rejoin): Kafka answers
                // ILLEGAL_GENERATION or REBALANCE_IN_PROGRESS and the record counts as
                // uncommitted, so it may be processed again.
                if let Err(e) = consumer.commit_message(&message, CommitMode::Sync) {
                    let retriable = matches!(
                        e.rdkafka_error_code(),
                        Some(
                            rdkafka::types::RDKafkaErrorCode::IllegalGeneration
                                | rdkafka::types::RDKafkaErrorCode::RebalanceInProgress
                        )
                    );
                    assert!(retriable, "commit failed: {e}");
                    UNCOMMITTED.with(|u| u.borrow_mut().insert((message.partition(), message.offset())));
                }
                if processed.len() >= want {
                    return;
                }
            }
        }
    }
}

thread_local! {
    static UNCOMMITTED: std::cell::RefCell<BTreeSet<(i32, i64)>> = Default::default();
}

fn uncommitted(p: i32, o: i64) -> bool {
    UNCOMMITTED.with(|u| u.borrow().contains(&(p, o)))
}

fn assert_exactly_once(processed: &[(usize, i32, i64)], total: usize) {
    let mut seen: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for &(_, p, o) in processed {
        *seen.entry((p, o)).or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(&(p, o), &n)| n > 1 && !uncommitted(p, o)).collect();
    assert!(duplicates.is_empty(), "committed records were processed again: {duplicates:?}");
    assert_eq!(seen.len(), total, "every record processed");
}

fn produce_per_partition(broker: &TestBroker, topic: &str, count: u64) {
    let sent: Vec<Sent> = (0..count).map(record_for).collect();
    produce_all(&producer(&broker.brokers(), &[]), topic, &sent);
}

#[test]
fn three_consumers_share_twelve_partitions_and_take_over_from_a_leaver() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "shared", 12);
    produce_per_partition(&broker, "shared", 2_400); // keys spread over all 12 partitions
    let brokers = broker.brokers();
    let consumers: Vec<BaseConsumer> = (0..3).map(|_| group_consumer(&brokers, "workers", "range")).collect();
    for c in &consumers {
        c.subscribe(&["shared"]).unwrap();
    }
    let refs: Vec<&BaseConsumer> = consumers.iter().collect();
    let mut processed = Vec::new();
    consume_committing(&refs, &mut processed, 600, Duration::from_secs(60));
    assert_eq!(processed.len(), 600, "the group made progress");
    // Every member owns a share of the partitions.
    let shares: Vec<usize> = consumers.iter().map(|c| c.assignment().unwrap().count()).collect();
    assert_eq!(shares.iter().sum::<usize>(), 12, "shares {shares:?}");
    assert!(shares.iter().all(|&n| n == 4), "range assignment over 3 members: {shares:?}");
    let first_share: BTreeSet<usize> = processed.iter().map(|&(i, _, _)| i).collect();
    assert_eq!(first_share.len(), 3, "all three consumed");

    // One member leaves; the others take over its partitions from its committed offsets.
    let mut consumers = consumers;
    let leaver = consumers.pop().unwrap();
    leaver.unsubscribe();
    drop(leaver);
    let refs: Vec<&BaseConsumer> = consumers.iter().collect();
    consume_committing(&refs, &mut processed, 2_400, Duration::from_secs(60));
    assert_exactly_once(&processed, 2_400);
    let shares: Vec<usize> = consumers.iter().map(|c| c.assignment().unwrap().count()).collect();
    assert_eq!(shares.iter().sum::<usize>(), 12, "the leaver's partitions were reassigned: {shares:?}");
    drop(consumers);
    broker.stop();
}

#[test]
fn cooperative_sticky_rebalances_incrementally_without_losing_work() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "sticky", 6);
    produce_per_partition(&broker, "sticky", 1_200);
    let brokers = broker.brokers();
    let a = group_consumer(&brokers, "cooperative", "cooperative-sticky");
    let b = group_consumer(&brokers, "cooperative", "cooperative-sticky");
    a.subscribe(&["sticky"]).unwrap();
    b.subscribe(&["sticky"]).unwrap();
    let mut processed = Vec::new();
    consume_committing(&[&a, &b], &mut processed, 300, Duration::from_secs(60));
    assert_eq!(processed.len(), 300);
    // A third member joins mid-stream: partitions move incrementally.
    let c = group_consumer(&brokers, "cooperative", "cooperative-sticky");
    c.subscribe(&["sticky"]).unwrap();
    let redone = |processed: &Vec<(usize, i32, i64)>| {
        processed.len() - processed.iter().map(|&(_, p, o)| (p, o)).collect::<BTreeSet<_>>().len()
    };
    consume_committing(&[&a, &b, &c], &mut processed, 1_200, Duration::from_secs(60));
    while processed.len() - redone(&processed) < 1_200 {
        let before = processed.len();
        consume_committing(&[&a, &b, &c], &mut processed, before + 1, Duration::from_secs(10));
        assert!(processed.len() > before, "stalled with {} distinct records", before - redone(&processed));
    }
    let counts: Vec<usize> = [&a, &b, &c].iter().map(|x| x.assignment().unwrap().count()).collect();
    assert_eq!(counts.iter().sum::<usize>(), 6, "{counts:?}");
    let mut seen = BTreeSet::new();
    for &(_, p, o) in &processed {
        assert!(seen.insert((p, o)) || uncommitted(p, o), "committed record {p}/{o} processed twice");
    }
    drop((a, b, c));
    broker.stop();
}

#[test]
fn committed_offsets_survive_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "resume", 2);
    produce_per_partition(&broker, "resume", 400);
    let mut processed = Vec::new();
    {
        let consumer = group_consumer(&broker.brokers(), "resumers", "range");
        consumer.subscribe(&["resume"]).unwrap();
        consume_committing(&[&consumer], &mut processed, 150, Duration::from_secs(60));
        consumer.unsubscribe();
    }
    assert_eq!(processed.len(), 150);
    broker.stop();

    // Clean restart: the group resumes after its committed offsets.
    let broker = TestBroker::start(dir.path());
    {
        let consumer = group_consumer(&broker.brokers(), "resumers", "range");
        consumer.subscribe(&["resume"]).unwrap();
        consume_committing(&[&consumer], &mut processed, 300, Duration::from_secs(60));
        consumer.unsubscribe();
    }
    broker.runtime.shutdown_background(); // an unclean stop: no close, no clean checkpoint

    let broker = TestBroker::start(dir.path());
    {
        let consumer = group_consumer(&broker.brokers(), "resumers", "range");
        consumer.subscribe(&["resume"]).unwrap();
        consume_committing(&[&consumer], &mut processed, 400, Duration::from_secs(60));
    }
    let mut seen = BTreeSet::new();
    for &(_, p, o) in &processed {
        assert!(seen.insert((p, o)), "record {p}/{o} processed again after a restart");
    }
    assert_eq!(seen.len(), 400);
    broker.stop();
}

/// `keel consume --group` commits exactly what it printed: the next run in the group starts
/// right after it (librdkafka's automatic offset store committed records it had fetched but
/// the command never showed).
#[test]
fn the_cli_consumer_commits_what_it_printed() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start(dir.path());
    create_topic(&broker, "printed", 3);
    let brokers = broker.brokers();
    let keel = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(args)
            .args(["--brokers", &brokers])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run keel");
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap()
    };
    let lines: String = (1..=300).map(|i| format!("{i}\n")).collect();
    keel(&["produce", "printed"], &lines);
    let consume = |count: &str| -> Vec<(i32, i64)> {
        keel(
            &["consume", "printed", "--group", "cli", "--from-beginning", "--count", count, "--timeout-ms", "10000"],
            "",
        )
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            (fields[0].parse().unwrap(), fields[1].parse().unwrap())
        })
        .collect()
    };
    let mut seen: Vec<(i32, i64)> = consume("10");
    assert_eq!(seen.len(), 10);
    seen.extend(consume("290"));
    let distinct: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 300, "every record printed once across the two runs ({} printed)", seen.len());
    broker.stop();
}
