//! keel bench against a keel broker running in-process: real librdkafka clients, a real
//! workload, and the run's own verification that every record produced was read back intact.
#![allow(clippy::disallowed_methods)] // the broker shell and the benchmark read clocks

use std::collections::BTreeMap;
use std::time::Duration;

use keel_bench::workload::{KeyDistributor, ProducerSettings};
use keel_bench::{run, RunOptions, Workload};
use keel_broker::{BrokerConfig, RunningNode};

struct Broker {
    runtime: tokio::runtime::Runtime,
    running: Option<RunningNode>,
    brokers: String,
}

impl Broker {
    fn start(data_dir: &std::path::Path) -> Broker {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let config = BrokerConfig {
            data_dir: data_dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            controller_listen: "127.0.0.1:0".parse().unwrap(),
            ..BrokerConfig::default()
        };
        let running = runtime.block_on(RunningNode::start(config)).expect("broker starts");
        assert!(runtime.block_on(running.wait_ready(std::time::Duration::from_secs(30))), "the broker is ready");
        let brokers = running.local_addr.to_string();
        Broker { runtime, running: Some(running), brokers }
    }

    fn stop(mut self) {
        let running = self.running.take().expect("running");
        self.runtime.block_on(running.shutdown()).expect("clean shutdown");
    }
}

#[test]
fn a_five_second_workload_reads_back_every_record_it_produced() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let workload = Workload {
        name: "integration".to_string(),
        topics: 2,
        partitions_per_topic: 4,
        producers_per_topic: 2,
        subscriptions_per_topic: 2,
        consumers_per_subscription: 2,
        producer_rate: 2_000,
        message_size: 512,
        key_distributor: KeyDistributor::RoundRobin,
        warmup_seconds: 1.0,
        test_duration_seconds: 4.0,
        producer: ProducerSettings { linger_ms: 5, ..ProducerSettings::default() },
        ..Workload::default()
    };
    let results = run(&workload, &RunOptions::new(&broker.brokers)).expect("the run completes");
    let v = &results.verification;
    assert!(v.passed(), "verification failed: {v:?}");
    assert_eq!(v.publish_failed, 0, "{v:?}");
    assert!(v.acknowledged >= 5_000, "only {} records acknowledged in 5 s at 2000/s", v.acknowledged);
    assert_eq!(v.consumed_per_subscription, vec![v.acknowledged; 2], "every subscription read every record");
    assert_eq!((v.missing, v.corrupt, v.duplicates, v.consume_errors), (0, 0, 0, 0), "{v:?}");
    assert!(results.publish.messages > 0 && results.consume.messages > 0);
    assert!(results.publish_latency.count > 0 && results.end_to_end_latency.count > 0);
    assert!(results.end_to_end_latency.p50_ms > 0.0);
    assert!(results.series.len() >= 5, "one point per second: {:?}", results.series.len());
    // The JSON the CLI writes reads back to the same results.
    let json = serde_json::to_string(&results).unwrap();
    assert_eq!(serde_json::from_str::<keel_bench::BenchResults>(&json).unwrap(), results);
    broker.stop();
}

#[test]
fn backlog_mode_pauses_consumers_then_drains_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let workload = Workload {
        name: "backlog".to_string(),
        topics: 1,
        partitions_per_topic: 4,
        producers_per_topic: 1,
        subscriptions_per_topic: 1,
        consumers_per_subscription: 2,
        producer_rate: 4_000,
        message_size: 1024,
        warmup_seconds: 0.0,
        test_duration_seconds: 10.0,
        consumer_backlog_size_mib: 2,
        stop_producers_for_drain: true,
        topic_config: BTreeMap::from([("flush.policy".to_string(), "never".to_string())]),
        ..Workload::default()
    };
    let options = RunOptions { interval: Duration::from_millis(200), ..RunOptions::new(&broker.brokers) };
    let results = run(&workload, &options).expect("the run completes");
    let backlog = results.backlog.expect("backlog mode reports the backlog");
    assert!(backlog.built_bytes >= 2 << 20, "{backlog:?}");
    assert!(backlog.drain_seconds.is_some(), "the backlog drained: {backlog:?}");
    assert!(results.measured_seconds < 10.0, "the run ends once drained when producers stop");
    assert!(results.series.iter().any(|p| p.consumers_paused), "consumers were paused while the backlog built");
    let v = &results.verification;
    assert!(v.passed(), "verification failed: {v:?}");
    assert_eq!(v.consumed_per_subscription, vec![v.acknowledged], "{v:?}");
    broker.stop();
}
