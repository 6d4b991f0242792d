//! Latency histograms: HdrHistogram in microseconds, summarised in milliseconds the way the
//! OpenMessaging Benchmark reports (p50, p75, p95, p99, p99.9, p99.99, max).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The largest latency kept exactly: one hour. Larger values are recorded as one hour and
/// counted in `clamped`, so a stuck record still shows up in the maximum.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Three significant digits: a reported value is within 0.1% of the recorded one.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The percentiles every summary reports, with the names used in tables and JSON.
pub const PERCENTILES: [(&str, f64); 6] =
    [("p50", 0.50), ("p75", 0.75), ("p95", 0.95), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)];

#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
    clamped: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        let inner = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS).expect("valid histogram bounds");
        LatencyHistogram { inner, clamped: 0 }
    }

    pub fn record_us(&mut self, latency_us: u64) {
        if latency_us > LATENCY_US_MAX {
            self.clamped += 1;
        }
        self.inner.saturating_record(latency_us.min(LATENCY_US_MAX));
    }

    pub fn count(&self) -> u64 {
        self.inner.len()
    }

    /// Adds every sample of `other`.
    pub fn add(&mut self, other: &LatencyHistogram) {
        self.inner.add(&other.inner).expect("histograms with the same bounds add");
        self.clamped += other.clamped;
    }

    pub fn reset(&mut self) {
        self.inner.reset();
        self.clamped = 0;
    }

    /// The value at `quantile` (0..=1), in microseconds; 0 when empty.
    pub fn quantile_us(&self, quantile: f64) -> u64 {
        if self.inner.is_empty() {
            return 0;
        }
        self.inner.value_at_quantile(quantile)
    }

    pub fn summary(&self) -> LatencySummary {
        if self.inner.is_empty() {
            return LatencySummary::default();
        }
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let q = |quantile: f64| ms(self.inner.value_at_quantile(quantile));
        LatencySummary {
            count: self.inner.len(),
            mean_ms: round3(self.inner.mean() / 1000.0),
            p50_ms: q(0.50),
            p75_ms: q(0.75),
            p95_ms: q(0.95),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            p9999_ms: q(0.9999),
            max_ms: ms(self.inner.max()),
            clamped: self.clamped,
        }
    }
}

fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

/// A latency distribution in milliseconds. All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
    /// Samples above one hour, recorded as one hour.
    #[serde(default)]
    pub clamped: u64,
}

impl LatencySummary {
    /// The values in table order: p50, p75, p95, p99, p99.9, p99.99, max.
    pub fn columns(&self) -> [(&'static str, f64); 7] {
        [
            ("p50", self.p50_ms),
            ("p75", self.p75_ms),
            ("p95", self.p95_ms),
            ("p99", self.p99_ms),
            ("p99.9", self.p999_ms),
            ("p99.99", self.p9999_ms),
            ("max", self.max_ms),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: f64, expected: f64, relative: f64) -> bool {
        (actual - expected).abs() <= expected * relative
    }

    #[test]
    fn percentiles_of_a_uniform_distribution() {
        let mut h = LatencyHistogram::new();
        for us in 1..=100_000 {
            h.record_us(us);
        }
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        for (name, actual, expected) in [
            ("p50", s.p50_ms, 50.0),
            ("p75", s.p75_ms, 75.0),
            ("p95", s.p95_ms, 95.0),
            ("p99", s.p99_ms, 99.0),
            ("p99.9", s.p999_ms, 99.9),
            ("p99.99", s.p9999_ms, 99.99),
            ("max", s.max_ms, 100.0),
            ("mean", s.mean_ms, 50.0),
        ] {
            assert!(within(actual, expected, 0.002), "{name}: {actual} ms, expected {expected} ms");
        }
        assert_eq!(s.clamped, 0);
    }

    #[test]
    fn tail_percentiles_see_rare_outliers() {
        let mut h = LatencyHistogram::new();
        for _ in 0..9_990 {
            h.record_us(1_000);
        }
        for _ in 0..10 {
            h.record_us(250_000);
        }
        let s = h.summary();
        assert!(within(s.p99_ms, 1.0, 0.002), "p99 {}", s.p99_ms);
        assert!(within(s.p9999_ms, 250.0, 0.002), "p99.99 {}", s.p9999_ms);
        assert!(within(s.max_ms, 250.0, 0.002), "max {}", s.max_ms);
    }

    #[test]
    fn values_beyond_the_range_are_clamped_and_counted() {
        let mut h = LatencyHistogram::new();
        h.record_us(0);
        h.record_us(u64::MAX);
        let s = h.summary();
        assert_eq!((s.count, s.clamped), (2, 1));
        assert!(within(s.max_ms, LATENCY_US_MAX as f64 / 1000.0, 0.002));
        assert_eq!(s.p50_ms, 0.0);
    }

    #[test]
    fn add_merges_counts_and_reset_empties() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        (0..100).for_each(|_| a.record_us(2_000));
        (0..300).for_each(|_| b.record_us(8_000));
        b.record_us(LATENCY_US_MAX + 1);
        a.add(&b);
        let s = a.summary();
        assert_eq!((s.count, s.clamped), (401, 1));
        assert!(within(s.p50_ms, 8.0, 0.002));
        assert!(within(a.quantile_us(0.2) as f64, 2_000.0, 0.002));
        a.reset();
        assert_eq!(a.count(), 0);
        assert_eq!(a.summary(), LatencySummary::default());
        assert_eq!(a.quantile_us(0.99), 0);
    }
}
