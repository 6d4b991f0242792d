//! The broker's one reading of the wall clock. Storage takes time as a parameter; the shell
//! reads it here.

/// Milliseconds since the Unix epoch (Kafka timestamps use the same scale).
#[allow(clippy::disallowed_methods)] // the shell is where the clock is read
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
