//! The broker's one reading of the wall clock. Storage takes time as a parameter; the shell
//! reads it here.

/// Milliseconds since the Unix epoch (Kafka timestamps use the same scale).
#[allow(clippy::disallowed_methods)] // the shell is where the clock is read
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Monotonic time for the protocol cores (Raft, replication): nanoseconds since the process's
/// first reading, never going back when the wall clock is adjusted.
#[allow(clippy::disallowed_methods)] // the shell is where the clock is read
pub fn monotonic() -> keel_types::Instant {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let start = *START.get_or_init(std::time::Instant::now);
    // Start at one second so that "zero" never looks like a real reading.
    keel_types::Instant(1_000_000_000 + start.elapsed().as_nanos() as u64)
}
