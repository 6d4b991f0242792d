//! `keel bench`: the command line. The binary only embeds [`BenchArgs`] and calls [`main`].

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::driver::{self, Progress, RunOptions};
use crate::results::BenchResults;
use crate::workload::{Compression, ConsumerMode, KeyDistributor, Workload};
use crate::{plot, report};

/// Drive any Kafka-compatible cluster with real clients and measure throughput and latency
/// (OpenMessaging Benchmark style). Flags override the workload file.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: Option<BenchCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// Print two `--json` result files side by side with ratios (B / A).
    Compare { a: PathBuf, b: PathBuf },
    /// Draw the plot of a `--json` result file again (.svg or .png).
    Plot { results: PathBuf, output: PathBuf },
}

#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Bootstrap servers of the cluster under test.
    #[arg(long, default_value = "127.0.0.1:9092", value_name = "HOST:PORT")]
    pub brokers: String,
    /// Workload file (TOML, see bench/README.md); flags below override it.
    #[arg(long, value_name = "FILE")]
    pub workload: Option<PathBuf>,
    /// Name of the run in tables, JSON and plots.
    #[arg(long)]
    pub name: Option<String>,
    /// Number of topics.
    #[arg(long)]
    pub topics: Option<u32>,
    /// Partitions per topic.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Replicas per partition.
    #[arg(long)]
    pub replication_factor: Option<i32>,
    /// Record value size in bytes (at least 32).
    #[arg(long, value_name = "BYTES")]
    pub message_size: Option<usize>,
    /// Producers per topic.
    #[arg(long)]
    pub producers: Option<u32>,
    /// Subscriptions (consumer groups) per topic; 0 produces only.
    #[arg(long)]
    pub subscriptions: Option<u32>,
    /// Consumers per subscription.
    #[arg(long)]
    pub consumers: Option<u32>,
    /// Target rate in messages per second, all producers together.
    #[arg(long, value_name = "MSGS_PER_S", conflicts_with_all = ["rate_mib", "max_rate"])]
    pub rate: Option<u64>,
    /// Target rate in MiB per second (converted with the message size).
    #[arg(long, value_name = "MIB_PER_S", conflicts_with = "max_rate")]
    pub rate_mib: Option<f64>,
    /// No target: produce as fast as the clients and the cluster allow.
    #[arg(long)]
    pub max_rate: bool,
    /// Record keys.
    #[arg(long, value_enum)]
    pub keys: Option<KeyDistributor>,
    /// 0, 1 or all.
    #[arg(long)]
    pub acks: Option<String>,
    /// Producer linger (librdkafka linger.ms).
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Producer batch size per partition (librdkafka batch.size).
    #[arg(long, value_name = "BYTES")]
    pub batch_size: Option<u64>,
    /// Producer compression codec.
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,
    /// Idempotent producers (needs InitProducerId on the broker).
    #[arg(long)]
    pub idempotence: bool,
    /// Warm-up before the measured phase (shown, not counted).
    #[arg(long, value_name = "SECONDS")]
    pub warmup: Option<f64>,
    /// Length of the measured phase.
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Backlog mode: pause consumers until this many MiB were published, then drain.
    #[arg(long, value_name = "MIB")]
    pub backlog_mib: Option<u64>,
    /// In backlog mode, stop producers once the backlog is built (the drain then measures
    /// reading alone).
    #[arg(long)]
    pub stop_producers_for_drain: bool,
    /// How a subscription's consumers get partitions: assign (no group coordinator needed) or
    /// group (subscribe as a consumer group).
    #[arg(long, value_enum)]
    pub consumer_mode: Option<ConsumerMode>,
    /// Topic config for the created topics, KEY=VALUE (Kafka names); repeatable.
    #[arg(long = "topic-config", value_name = "KEY=VALUE")]
    pub topic_config: Vec<String>,
    /// Extra librdkafka producer property, KEY=VALUE; repeatable.
    #[arg(long = "producer-config", value_name = "KEY=VALUE")]
    pub producer_config: Vec<String>,
    /// Extra librdkafka consumer property, KEY=VALUE; repeatable.
    #[arg(long = "consumer-config", value_name = "KEY=VALUE")]
    pub consumer_config: Vec<String>,
    /// Write the full results as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw throughput and latency over time (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Sampling interval of the time series.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    pub interval_ms: u64,
    /// Leave the created topics in place.
    #[arg(long)]
    pub keep_topics: bool,
    /// No progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `keel bench ...`.
pub fn main(args: BenchArgs) -> Result<(), String> {
    match args.command {
        Some(BenchCommand::Compare { a, b }) => {
            let (x, y) = (load(&a)?, load(&b)?);
            print!("{}", report::compare(&x, &y, &a.display().to_string(), &b.display().to_string()));
            Ok(())
        }
        Some(BenchCommand::Plot { results, output }) => plot::write(&load(&results)?, &output),
        None => run(args.run),
    }
}

fn load(path: &Path) -> Result<BenchResults, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a keel bench result file: {e}", path.display()))
}

fn pairs(flag: &str, values: &[String]) -> Result<Vec<(String, String)>, String> {
    values
        .iter()
        .map(|value| {
            value
                .split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("--{flag} {value:?} must be KEY=VALUE"))
        })
        .collect()
}

/// The workload the flags describe: the file (or the defaults), then each flag given.
pub fn workload(args: &RunArgs) -> Result<Workload, String> {
    let mut w = match &args.workload {
        Some(path) => Workload::from_file(path)?,
        None => Workload::default(),
    };
    macro_rules! set {
        ($($flag:ident => $field:expr),* $(,)?) => {
            $(if let Some(value) = args.$flag.clone() { $field = value; })*
        };
    }
    set!(
        name => w.name,
        topics => w.topics,
        partitions => w.partitions_per_topic,
        replication_factor => w.replication_factor,
        message_size => w.message_size,
        producers => w.producers_per_topic,
        subscriptions => w.subscriptions_per_topic,
        consumers => w.consumers_per_subscription,
        rate => w.producer_rate,
        keys => w.key_distributor,
        acks => w.producer.acks,
        linger_ms => w.producer.linger_ms,
        batch_size => w.producer.batch_size,
        compression => w.producer.compression,
        warmup => w.warmup_seconds,
        duration => w.test_duration_seconds,
        backlog_mib => w.consumer_backlog_size_mib,
        consumer_mode => w.consumer_mode,
    );
    if let Some(mib) = args.rate_mib {
        if !(mib.is_finite() && mib > 0.0) {
            return Err("--rate-mib must be a positive number".to_string());
        }
        w.producer_rate = ((mib * 1024.0 * 1024.0 / w.message_size as f64).round() as u64).max(1);
    }
    if args.max_rate {
        w.producer_rate = 0;
    }
    w.producer.idempotence |= args.idempotence;
    w.stop_producers_for_drain |= args.stop_producers_for_drain;
    w.topic_config.extend(pairs("topic-config", &args.topic_config)?);
    w.producer_config.extend(pairs("producer-config", &args.producer_config)?);
    w.consumer_config.extend(pairs("consumer-config", &args.consumer_config)?);
    w.validate()?;
    Ok(w)
}

fn run(args: RunArgs) -> Result<(), String> {
    let workload = workload(&args)?;
    if let Some(plot) = &args.plot {
        // Fail before the run, not after it.
        let extension = plot.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(extension.as_deref(), Some("svg" | "png")) {
            return Err(format!("--plot {}: the file name must end in .svg or .png", plot.display()));
        }
    }
    let options = RunOptions {
        progress: match (args.quiet, std::io::stderr().is_terminal()) {
            (true, _) => Progress::Off,
            (false, true) => Progress::Line,
            (false, false) => Progress::Lines,
        },
        keep_topics: args.keep_topics,
        interval: Duration::from_millis(args.interval_ms.max(50)),
        ..RunOptions::new(&args.brokers)
    };
    let results = driver::run(&workload, &options)?;
    print!("{}", report::summary(&results));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| format!("cannot encode the results: {e}"))?;
        std::fs::write(path, text + "\n").map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        eprintln!("results written to {}", path.display());
    }
    if let Some(path) = &args.plot {
        plot::write(&results, path)?;
        eprintln!("plot written to {}", path.display());
    }
    if results.verification.passed() {
        Ok(())
    } else {
        Err("verification failed: consumers did not read every acknowledged record intact (details above)".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied())).expect("parses").bench
    }

    #[test]
    fn flags_override_the_defaults() {
        let args = parse(&[
            "--brokers",
            "10.0.0.1:9092",
            "--partitions",
            "8",
            "--rate-mib",
            "100",
            "--acks",
            "1",
            "--keys",
            "round-robin",
            "--topic-config",
            "flush.policy=never",
            "--subscriptions",
            "0",
        ]);
        assert!(args.command.is_none());
        let w = workload(&args.run).unwrap();
        assert_eq!(args.run.brokers, "10.0.0.1:9092");
        assert_eq!((w.partitions_per_topic, w.producer_rate, w.subscriptions_per_topic), (8, 102_400, 0));
        assert_eq!(w.producer.acks, "1");
        assert_eq!(w.key_distributor, KeyDistributor::RoundRobin);
        assert_eq!(w.topic_config["flush.policy"], "never");
        let w = workload(&parse(&["--max-rate"]).run).unwrap();
        assert_eq!(w.producer_rate, 0);
    }

    #[test]
    fn compare_is_a_subcommand_and_bad_flags_are_errors() {
        let args = parse(&["compare", "a.json", "b.json"]);
        assert!(matches!(args.command, Some(BenchCommand::Compare { .. })));
        assert!(Cli::try_parse_from(["bench", "--rate", "5", "--max-rate"]).is_err());
        let error = workload(&parse(&["--topic-config", "flush.policy"]).run).unwrap_err();
        assert!(error.contains("KEY=VALUE"), "{error}");
        let error = workload(&parse(&["--message-size", "10"]).run).unwrap_err();
        assert!(error.contains("message_size"), "{error}");
    }

    #[test]
    fn every_workload_file_in_the_repository_is_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/workloads");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/workloads exists") {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let w = Workload::from_file(&path).unwrap();
                w.validate().map_err(|e| format!("{}: {e}", path.display())).unwrap();
                count += 1;
            }
        }
        assert!(count >= 7, "expected the published workloads, found {count}");
    }
}
