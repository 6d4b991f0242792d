//! Rate control: the n-th send of a producer is due at `n / rate` after it started, as in the
//! OpenMessaging Benchmark's uniform rate limiter.
//!
//! The pacer is pure: the caller passes the time (nanoseconds since the pacer's start) and
//! sends while [`Pacer::is_due`]. A sender that falls behind (a stall, a full client queue)
//! sends without waiting until it is back on schedule, so the average rate holds and the
//! lateness shows up as publish delay instead of silently lowering the rate.

/// Rates are kept in millimessages per second so a total rate split across producers loses
/// nothing to rounding that matters (at most 0.001 message per second per producer).
const MILLI: u128 = 1000;
const NANOS_PER_SECOND: u128 = 1_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacer {
    /// `None`: no target, send as fast as the client accepts.
    rate_milli_per_s: Option<u64>,
    sent: u64,
}

impl Pacer {
    /// `rate_per_s` messages per second; 0 means unlimited.
    pub fn new(rate_per_s: f64) -> Pacer {
        assert!(rate_per_s.is_finite() && rate_per_s >= 0.0, "rate must be a finite non-negative number");
        let milli = (rate_per_s * MILLI as f64).round() as u64;
        Pacer { rate_milli_per_s: (milli > 0).then_some(milli), sent: 0 }
    }

    /// The pacer for producer `index` of `producers` sharing `total_rate_per_s`.
    pub fn share(total_rate_per_s: u64, producers: u32) -> Pacer {
        assert!(producers > 0, "at least one producer");
        Pacer::new(total_rate_per_s as f64 / f64::from(producers))
    }

    pub fn is_unlimited(&self) -> bool {
        self.rate_milli_per_s.is_none()
    }

    /// How many sends so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// When the next send is due, in nanoseconds since the start (0 when unlimited).
    pub fn due_ns(&self) -> u64 {
        match self.rate_milli_per_s {
            None => 0,
            Some(rate) => (u128::from(self.sent) * NANOS_PER_SECOND * MILLI / u128::from(rate)) as u64,
        }
    }

    pub fn is_due(&self, now_ns: u64) -> bool {
        self.due_ns() <= now_ns
    }

    /// How long until the next send is due; 0 if it already is.
    pub fn wait_ns(&self, now_ns: u64) -> u64 {
        self.due_ns().saturating_sub(now_ns)
    }

    /// How late a send at `now_ns` is against its due time; always 0 without a target rate.
    pub fn lateness_ns(&self, now_ns: u64) -> u64 {
        match self.rate_milli_per_s {
            None => 0,
            Some(_) => now_ns.saturating_sub(self.due_ns()),
        }
    }

    /// Records one send.
    pub fn advance(&mut self) {
        self.sent += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const SECOND: u64 = 1_000 * MS;

    /// A sender that wakes every `tick_ns` and sends what is due before `duration_ns`; returns
    /// the number of sends per whole second of the run.
    fn drive(pacer: &mut Pacer, tick_ns: u64, duration_ns: u64, stall: Option<(u64, u64)>) -> Vec<u64> {
        let mut per_second = vec![0u64; duration_ns.div_ceil(SECOND) as usize];
        let mut now = 0;
        while now < duration_ns {
            let stalled = stall.is_some_and(|(from, to)| now >= from && now < to);
            while !stalled && pacer.is_due(now) {
                per_second[(now / SECOND) as usize] += 1;
                pacer.advance();
            }
            now += tick_ns;
        }
        // A last wake-up just before the end sends what fell due since the last tick.
        while pacer.is_due(duration_ns - 1) {
            *per_second.last_mut().expect("at least one second") += 1;
            pacer.advance();
        }
        per_second
    }

    #[test]
    fn holds_the_target_rate_over_ten_seconds() {
        for (rate, tick) in [(1_000.0, MS), (50_000.0, MS), (123_457.0, 3 * MS), (7.5, 10 * MS)] {
            let mut pacer = Pacer::new(rate);
            let per_second = drive(&mut pacer, tick, 10 * SECOND, None);
            let total: u64 = per_second.iter().sum();
            let expected = rate * 10.0;
            assert!((total as f64 - expected).abs() <= 1.0, "rate {rate}: {total} sends in 10 s, expected {expected}");
            for (s, &n) in per_second.iter().enumerate() {
                assert!((n as f64 - rate).abs() <= rate * 0.01 + 1.0, "rate {rate}: second {s} had {n} sends");
            }
        }
    }

    #[test]
    fn a_stalled_sender_catches_up_and_keeps_the_average() {
        let mut pacer = Pacer::new(10_000.0);
        let per_second = drive(&mut pacer, MS, 10 * SECOND, Some((2 * SECOND, 3 * SECOND + 500 * MS)));
        assert_eq!(per_second[2], 0, "nothing is sent while stalled");
        assert_eq!(per_second[3], 20_000, "the second after the stall sends what was missed plus its own share");
        assert!((per_second.iter().sum::<u64>() as i64 - 100_000).abs() <= 1);
    }

    #[test]
    fn due_time_wait_and_lateness() {
        let mut pacer = Pacer::new(4.0);
        assert_eq!((pacer.due_ns(), pacer.wait_ns(0)), (0, 0));
        pacer.advance();
        assert_eq!(pacer.due_ns(), 250 * MS);
        assert_eq!(pacer.wait_ns(100 * MS), 150 * MS);
        assert!(!pacer.is_due(100 * MS) && pacer.is_due(250 * MS));
        assert_eq!(pacer.lateness_ns(400 * MS), 150 * MS);
        assert_eq!(pacer.sent(), 1);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let mut pacer = Pacer::new(0.0);
        assert!(pacer.is_unlimited());
        for _ in 0..1_000_000 {
            assert!(pacer.is_due(0));
            pacer.advance();
        }
        assert_eq!(pacer.wait_ns(0), 0);
        assert_eq!(pacer.lateness_ns(5 * SECOND), 0, "nothing is late without a schedule");
    }

    #[test]
    fn shares_add_up_to_the_total() {
        for (total, producers) in [(100_000u64, 3u32), (1_024_000, 50), (7, 4), (51_200, 288)] {
            let shares: Vec<Pacer> = (0..producers).map(|_| Pacer::share(total, producers)).collect();
            let mut sent = 0u64;
            for mut pacer in shares {
                sent += drive(&mut pacer, 10 * MS, 10 * SECOND, None).iter().sum::<u64>();
            }
            let expected = total as f64 * 10.0;
            let slack = f64::from(producers) + 1.0;
            assert!((sent as f64 - expected).abs() <= slack, "{total}/s over {producers} producers: {sent} in 10 s");
        }
    }
}
