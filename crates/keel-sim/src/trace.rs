//! The trace of a run: one line per event, folded into a hash as it is written.
//!
//! The hash is a hand-written 64-bit FNV-1a rather than std's hasher, whose keys are randomized
//! per process: a trace hash must be the same in every process, on every platform and in every
//! version of Rust, or "same seed, same hash" would prove nothing.

use std::fmt::{self, Write as _};

use keel_types::Instant;

/// 64-bit FNV-1a.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a(u64);

impl Fnv1a {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub const fn new() -> Fnv1a {
        Fnv1a(Fnv1a::OFFSET_BASIS)
    }

    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(Fnv1a::PRIME);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a::new()
    }
}

/// The hash of a trace: FNV-1a over every line, each followed by a newline. A run's
/// `trace_hash` equals this over its recorded lines.
pub fn trace_hash(lines: &[String]) -> u64 {
    let mut hash = Fnv1a::new();
    for line in lines {
        hash.write(line.as_bytes());
        hash.write(b"\n");
    }
    hash.finish()
}

/// Most lines kept in memory; the hash keeps covering lines beyond it.
const LINES_MAX: usize = 10_000_000;

/// Hashes every line; keeps the lines only when asked to, because formatting is cheap but a
/// sweep of hundreds of seeds has no use for millions of stored lines.
#[derive(Debug)]
pub(crate) struct Trace {
    hash: Fnv1a,
    lines: Option<Vec<String>>,
    buffer: String,
}

impl Trace {
    pub(crate) fn new(record: bool) -> Trace {
        Trace { hash: Fnv1a::new(), lines: record.then(Vec::new), buffer: String::new() }
    }

    /// One line, stamped with simulated time in milliseconds with microsecond precision.
    pub(crate) fn line(&mut self, now: Instant, text: fmt::Arguments<'_>) {
        self.buffer.clear();
        let micros = now.0 / 1_000;
        // Writing into a String cannot fail.
        let _ = write!(self.buffer, "{:>6}.{:03} ", micros / 1_000, micros % 1_000);
        let _ = self.buffer.write_fmt(text);
        self.hash.write(self.buffer.as_bytes());
        self.hash.write(b"\n");
        if let Some(lines) = &mut self.lines {
            if lines.len() < LINES_MAX {
                lines.push(self.buffer.clone());
            }
        }
    }

    pub(crate) fn finish(self) -> (u64, Vec<String>) {
        (self.hash.finish(), self.lines.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        let hash = |bytes: &[u8]| {
            let mut h = Fnv1a::new();
            h.write(bytes);
            h.finish()
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn recorded_lines_hash_to_the_running_hash() {
        let mut trace = Trace::new(true);
        trace.line(Instant(1_234_567_000), format_args!("n{} hello", 1));
        trace.line(Instant(5), format_args!("bye"));
        let (hash, lines) = trace.finish();
        assert_eq!(lines, vec!["  1234.567 n1 hello".to_string(), "     0.000 bye".to_string()]);
        assert_eq!(hash, trace_hash(&lines));
    }
}
