//! The live progress line on stderr: a bar over warm-up plus measured time, the current rates
//! and p99 latencies. On a terminal it rewrites one line; otherwise it prints a line per
//! interval.

use std::io::Write;

use crate::driver::Progress;
use crate::results::{Phase, SeriesPoint};

const BAR_WIDTH: usize = 20;

#[derive(Debug)]
pub(crate) struct ProgressLine {
    in_place: bool,
    shown: bool,
}

impl ProgressLine {
    pub(crate) fn new(progress: Progress) -> Option<ProgressLine> {
        match progress {
            Progress::Off => None,
            Progress::Line => Some(ProgressLine { in_place: true, shown: false }),
            Progress::Lines => Some(ProgressLine { in_place: false, shown: false }),
        }
    }

    pub(crate) fn show(&mut self, point: &SeriesPoint, errors: u64, run_seconds: f64) {
        let line = render(point, errors, run_seconds);
        let mut err = std::io::stderr().lock();
        let _ = if self.in_place { write!(err, "\r{line}\x1b[K") } else { writeln!(err, "{line}") };
        let _ = err.flush();
        self.shown = true;
    }

    pub(crate) fn finish(&mut self) {
        if self.in_place && self.shown {
            let _ = writeln!(std::io::stderr());
        }
        self.shown = false;
    }
}

/// One progress line, e.g.
/// `measure  [#########-----------]  12.0s  pub  50.0 MiB/s  51200 msg/s  con  50.0 MiB/s  p99 pub 2.10 ms e2e 3.40 ms  backlog 120  errors 0`
pub(crate) fn render(point: &SeriesPoint, errors: u64, run_seconds: f64) -> String {
    let done = if run_seconds > 0.0 { (point.t_s / run_seconds).clamp(0.0, 1.0) } else { 1.0 };
    let filled = (done * BAR_WIDTH as f64).round() as usize;
    let phase = match point.phase {
        Phase::Warmup => "warm-up",
        Phase::Measure if point.consumers_paused => "backlog",
        Phase::Measure => "measure",
        Phase::Finish => "finish",
    };
    format!(
        "{phase:<8}[{}{}] {:>6.1}s  pub {:>7.1} MiB/s {:>8.0} msg/s  con {:>7.1} MiB/s  p99 pub {:>7.2} ms e2e {:>7.2} ms  backlog {}  errors {}",
        "#".repeat(filled),
        "-".repeat(BAR_WIDTH - filled),
        point.t_s,
        point.publish_mib_per_s,
        point.publish_messages_per_s,
        point.consume_mib_per_s,
        point.publish_latency.p99_ms,
        point.end_to_end_latency.p99_ms,
        point.backlog_messages,
        errors,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::LatencySummary;

    #[test]
    fn the_line_shows_phase_bar_rates_and_tail_latency() {
        let point = SeriesPoint {
            t_s: 5.0,
            phase: Phase::Measure,
            publish_messages_per_s: 51_200.0,
            publish_mib_per_s: 50.0,
            consume_messages_per_s: 51_200.0,
            consume_mib_per_s: 50.0,
            publish_errors: 0,
            backlog_messages: 12,
            consumers_paused: false,
            publish_latency: LatencySummary { p99_ms: 2.1, ..LatencySummary::default() },
            end_to_end_latency: LatencySummary { p99_ms: 3.4, ..LatencySummary::default() },
        };
        let line = render(&point, 0, 10.0);
        assert!(line.starts_with("measure [##########----------]"), "{line}");
        for part in ["50.0 MiB/s", "51200 msg/s", "pub    2.10 ms", "e2e    3.40 ms", "backlog 12", "errors 0"] {
            assert!(line.contains(part), "{part:?} missing from {line:?}");
        }
    }
}
