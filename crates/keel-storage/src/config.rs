//! Per-log configuration, named after Kafka's topic configs.

/// When the log calls fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    /// Never fsync on the write path; the OS writes pages back when it likes. Data survives a
    /// process crash but not a power loss. (Kafka's default.)
    Never,
    /// fsync once `messages` records are unflushed, or once `ms` have passed since the last
    /// flush (the broker calls [`crate::Log::flush_if_due`] on a timer). Kafka's
    /// `flush.messages` / `flush.ms`.
    Interval { messages: u64, ms: u64 },
    /// Every append returns only after its data is fsynced. Appends that arrive while an fsync
    /// runs share the next one (group commit).
    Always,
}

impl FlushPolicy {
    /// Parses the names used in keel's config: `never`, `always`, `interval`.
    pub fn parse(name: &str, messages: u64, ms: u64) -> Option<FlushPolicy> {
        match name {
            "never" => Some(FlushPolicy::Never),
            "always" => Some(FlushPolicy::Always),
            "interval" => Some(FlushPolicy::Interval { messages, ms }),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            FlushPolicy::Never => "never",
            FlushPolicy::Interval { .. } => "interval",
            FlushPolicy::Always => "always",
        }
    }
}

/// Configuration of one partition log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment before one would grow past this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty segment this long after it was created.
    pub segment_ms: u64,
    /// `retention.ms`: delete segments whose newest record is older than this; `None` keeps
    /// them forever (Kafka's -1).
    pub retention_ms: Option<u64>,
    /// `retention.bytes`: delete the oldest segments while the log is larger than this.
    pub retention_bytes: Option<u64>,
    /// `index.interval.bytes`: bytes between sparse offset/time index entries.
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: the largest record set one append accepts.
    pub max_message_bytes: u64,
    pub flush: FlushPolicy,
    /// Rewrite the recovery checkpoint after this many bytes were flushed since the last one,
    /// which bounds how much an unclean open must scan.
    pub recovery_checkpoint_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            max_message_bytes: 1024 * 1024 + 12,
            flush: FlushPolicy::Always,
            recovery_checkpoint_bytes: 64 << 20,
        }
    }
}

impl LogConfig {
    /// Rejects configurations the log cannot honour, saying which key is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < 1024 {
            return Err(format!("segment.bytes is {}; it must be at least 1024", self.segment_bytes));
        }
        if self.segment_bytes > u32::MAX as u64 {
            return Err(format!("segment.bytes is {}; it must be at most {}", self.segment_bytes, u32::MAX));
        }
        if self.segment_ms == 0 {
            return Err("segment.ms must be positive".to_string());
        }
        if self.index_interval_bytes == 0 {
            return Err("index.interval.bytes must be positive".to_string());
        }
        if self.max_message_bytes == 0 {
            return Err("max.message.bytes must be positive".to_string());
        }
        if let FlushPolicy::Interval { messages, ms } = self.flush {
            if messages == 0 || ms == 0 {
                return Err("flush.messages and flush.ms must be positive for the interval policy".to_string());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_table() {
        let ok = LogConfig::default();
        assert!(ok.validate().is_ok());
        let cases: Vec<(LogConfig, &str)> = vec![
            (LogConfig { segment_bytes: 10, ..ok.clone() }, "segment.bytes"),
            (LogConfig { segment_bytes: 1 << 33, ..ok.clone() }, "segment.bytes"),
            (LogConfig { segment_ms: 0, ..ok.clone() }, "segment.ms"),
            (LogConfig { index_interval_bytes: 0, ..ok.clone() }, "index.interval.bytes"),
            (LogConfig { max_message_bytes: 0, ..ok.clone() }, "max.message.bytes"),
            (LogConfig { flush: FlushPolicy::Interval { messages: 0, ms: 5 }, ..ok.clone() }, "flush.messages"),
        ];
        for (config, key) in cases {
            let error = config.validate().unwrap_err();
            assert!(error.contains(key), "{error} should name {key}");
        }
    }

    #[test]
    fn policy_names_round_trip() {
        for p in [FlushPolicy::Never, FlushPolicy::Always, FlushPolicy::Interval { messages: 1, ms: 2 }] {
            assert_eq!(FlushPolicy::parse(p.name(), 1, 2), Some(p));
        }
        assert_eq!(FlushPolicy::parse("sometimes", 1, 1), None);
    }
}
