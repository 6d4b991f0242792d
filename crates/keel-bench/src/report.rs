//! Tables for people: the end-of-run summary and `keel bench compare`.

use std::fmt::Write;

use crate::histogram::LatencySummary;
use crate::results::{BenchResults, Throughput, MIB};

/// The end-of-run table.
pub fn summary(r: &BenchResults) -> String {
    let mut out = String::new();
    let w = &r.workload;
    let _ = writeln!(out, "keel bench: {}  (brokers {}, measured {:.1} s)", r.name, r.brokers, r.measured_seconds);
    let rate = if w.producer_rate == 0 { "max rate".to_string() } else { format!("{} msg/s target", w.producer_rate) };
    let _ = writeln!(
        out,
        "  {} topic(s) x {} partition(s), {} B messages, {} producer(s), {} subscription(s) x {} consumer(s), {rate}, keys {:?}, acks {}, linger {} ms, batch {} B, {}",
        w.topics,
        w.partitions_per_topic,
        w.message_size,
        w.producers(),
        w.subscriptions_per_topic,
        w.consumers_per_subscription,
        w.key_distributor,
        w.producer.acks,
        w.producer.linger_ms,
        w.producer.batch_size,
        w.producer.compression.name(),
    );
    out.push('\n');
    let _ = writeln!(out, "{:<20}{:>14}{:>12}{:>14}{:>10}", "throughput", "messages/s", "MiB/s", "messages", "errors");
    for (label, t) in [("publish", &r.publish), ("consume", &r.consume)] {
        let _ = writeln!(
            out,
            "{label:<20}{:>14.1}{:>12.3}{:>14}{:>10}",
            t.messages_per_s, t.mib_per_s, t.messages, t.errors
        );
    }
    out.push('\n');
    let _ = write!(out, "{:<20}", "latency (ms)");
    for (name, _) in LatencySummary::default().columns() {
        let _ = write!(out, "{name:>10}");
    }
    out.push('\n');
    for (label, s) in
        [("publish", &r.publish_latency), ("publish delay", &r.publish_delay), ("end-to-end", &r.end_to_end_latency)]
    {
        let _ = write!(out, "{label:<20}");
        for (_, value) in s.columns() {
            let _ = write!(out, "{value:>10.3}");
        }
        out.push('\n');
    }
    if let Some(b) = &r.backlog {
        out.push('\n');
        let built = format!("{:.1} MiB built in {:.1} s", b.built_bytes as f64 / MIB, b.build_seconds);
        let producers = if b.producers_stopped_for_drain { "producers stopped" } else { "producers kept writing" };
        match (b.drain_seconds, b.drain_mib_per_s) {
            (Some(seconds), Some(rate)) => {
                let _ = writeln!(
                    out,
                    "backlog: {built}; drained in {seconds:.2} s ({rate:.1} MiB/s read, {producers}, within {} messages)",
                    b.drained_threshold_messages
                );
            }
            _ => {
                let _ = writeln!(out, "backlog: {built}; NOT drained before the measured phase ended ({producers})");
            }
        }
    }
    let v = &r.verification;
    out.push('\n');
    let read: Vec<String> = v.consumed_per_subscription.iter().map(|n| n.to_string()).collect();
    let _ = writeln!(
        out,
        "verification: {} - {} acknowledged, read per subscription [{}], {} missing, {} duplicates, {} corrupt, {} out of order, {} publish failures, {} read though their delivery failed, {} consume errors",
        if v.passed() { "passed" } else { "FAILED" },
        v.acknowledged,
        read.join(", "),
        v.missing,
        v.duplicates,
        v.corrupt,
        v.out_of_order,
        v.publish_failed,
        v.consumed_unacknowledged,
        v.consume_errors,
    );
    for problem in &v.problems {
        let _ = writeln!(out, "  - {problem}");
    }
    out
}

fn ratio(a: f64, b: f64) -> String {
    if a == 0.0 {
        if b == 0.0 {
            "=".to_string()
        } else {
            "-".to_string()
        }
    } else {
        format!("{:.2}x", b / a)
    }
}

/// Two runs side by side; the ratio column is B / A.
pub fn compare(a: &BenchResults, b: &BenchResults, a_label: &str, b_label: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {a_label}  ({}, brokers {}, measured {:.1} s)", a.name, a.brokers, a.measured_seconds);
    let _ = writeln!(out, "B: {b_label}  ({}, brokers {}, measured {:.1} s)", b.name, b.brokers, b.measured_seconds);
    if a.workload != b.workload {
        let _ = writeln!(out, "note: the two runs used different workloads");
    }
    out.push('\n');
    let _ = writeln!(out, "{:<28}{:>14}{:>14}{:>10}", "metric", "A", "B", "B/A");
    let mut row = |name: &str, x: f64, y: f64, precision: usize| {
        let _ = writeln!(out, "{name:<28}{x:>14.precision$}{y:>14.precision$}{:>10}", ratio(x, y));
    };
    let throughput = |row: &mut dyn FnMut(&str, f64, f64, usize), label: &str, x: &Throughput, y: &Throughput| {
        row(&format!("{label} messages/s"), x.messages_per_s, y.messages_per_s, 1);
        row(&format!("{label} MiB/s"), x.mib_per_s, y.mib_per_s, 3);
        row(&format!("{label} errors"), x.errors as f64, y.errors as f64, 0);
    };
    throughput(&mut row, "publish", &a.publish, &b.publish);
    throughput(&mut row, "consume", &a.consume, &b.consume);
    for (label, x, y) in [
        ("publish latency", &a.publish_latency, &b.publish_latency),
        ("end-to-end latency", &a.end_to_end_latency, &b.end_to_end_latency),
    ] {
        for ((name, vx), (_, vy)) in x.columns().into_iter().zip(y.columns()) {
            row(&format!("{label} {name} ms"), vx, vy, 3);
        }
    }
    if let (Some(x), Some(y)) = (&a.backlog, &b.backlog) {
        let seconds = |d: Option<f64>| d.unwrap_or(f64::NAN);
        row("backlog drain s", seconds(x.drain_seconds), seconds(y.drain_seconds), 2);
        row("backlog drain MiB/s", seconds(x.drain_mib_per_s), seconds(y.drain_mib_per_s), 1);
    }
    let verdict = |r: &BenchResults| if r.verification.passed() { "passed" } else { "FAILED" };
    let _ = writeln!(out, "{:<28}{:>14}{:>14}", "verification", verdict(a), verdict(b));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::results::{ClientFacts, Verification, FORMAT_VERSION};
    use crate::workload::Workload;

    pub(crate) fn sample(publish_mib: f64, p99: f64) -> BenchResults {
        BenchResults {
            format_version: FORMAT_VERSION,
            name: "sample".into(),
            brokers: "127.0.0.1:9092".into(),
            started_unix_ms: 0,
            client: ClientFacts { keel_bench_version: "0".into(), cores: 2, librdkafka_version: "2".into() },
            workload: Workload::default(),
            topics: vec!["t".into()],
            measured_seconds: 10.0,
            publish: Throughput::over((publish_mib * 10240.0) as u64, (publish_mib * MIB * 10.0) as u64, 0, 10.0),
            consume: Throughput::over((publish_mib * 10240.0) as u64, (publish_mib * MIB * 10.0) as u64, 0, 10.0),
            publish_latency: LatencySummary { p99_ms: p99, ..LatencySummary::default() },
            publish_delay: LatencySummary::default(),
            end_to_end_latency: LatencySummary { p99_ms: p99 * 2.0, ..LatencySummary::default() },
            backlog: None,
            verification: Verification {
                acknowledged: 5,
                consumed_per_subscription: vec![5],
                ..Verification::default()
            },
            series: vec![],
        }
    }

    #[test]
    fn summary_names_rates_percentiles_and_the_verdict() {
        let text = summary(&sample(50.0, 2.5));
        assert!(text.contains("50.000"), "{text}");
        assert!(text.contains("p99.99"), "{text}");
        assert!(text.contains("verification: passed"), "{text}");
    }

    #[test]
    fn compare_prints_ratios_b_over_a() {
        let text = compare(&sample(50.0, 2.0), &sample(100.0, 1.0), "a.json", "b.json");
        let line = |prefix: &str| text.lines().find(|l| l.starts_with(prefix)).unwrap_or_default().to_string();
        assert!(line("publish MiB/s").ends_with("2.00x"), "{text}");
        assert!(line("publish latency p99 ms").ends_with("0.50x"), "{text}");
        assert!(line("publish latency p50 ms").ends_with("="), "{text}");
    }
}
