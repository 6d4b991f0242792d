//! The benchmark payload: a 32-byte header that lets a consumer check what it read and measure
//! end-to-end latency, then filler up to the message size.
//!
//! | bytes  | field                                                              |
//! | ------ | ------------------------------------------------------------------ |
//! | 0..4   | magic `KBP1`                                                       |
//! | 4..8   | run id (u32, little endian): a record of another run is foreign    |
//! | 8..12  | producer id (u32)                                                  |
//! | 12..16 | CRC-32C of the whole payload with these four bytes left out        |
//! | 16..24 | sequence (u64), per producer, from 0                               |
//! | 24..32 | send time, microseconds since the Unix epoch (u64)                 |
//! | 32..   | filler: incompressible bytes from a seeded pool                    |
//!
//! The send time is wall-clock time so producers and consumers on different machines can
//! measure end-to-end latency, as the OpenMessaging Benchmark does (with the same caveat: the
//! machines' clocks must agree).

use keel_types::Rng;

pub const HEADER_LEN: usize = 32;
pub const MAGIC: [u8; 4] = *b"KBP1";
const CRC_RANGE: std::ops::Range<usize> = 12..16;

/// What the header says about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub run_id: u32,
    pub producer_id: u32,
    pub sequence: u64,
    pub send_time_us: u64,
}

/// Why a payload failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The payload is not the size every record of the run has.
    Length { expected: usize, actual: usize },
    /// The first four bytes are not `KBP1`: not a benchmark record at all.
    Magic,
    /// A benchmark record, but written by another run.
    ForeignRun(u32),
    /// The bytes changed between producer and consumer.
    Checksum { stored: u32, computed: u32 },
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Invalid::Length { expected, actual } => write!(f, "payload is {actual} bytes, expected {expected}"),
            Invalid::Magic => write!(f, "payload does not start with the benchmark magic"),
            Invalid::ForeignRun(run) => write!(f, "record of another run ({run:#010x})"),
            Invalid::Checksum { stored, computed } => {
                write!(f, "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")
            }
        }
    }
}

/// Incompressible filler shared by every producer of a run. Records take different windows of
/// it so consecutive payloads differ.
#[derive(Debug, Clone)]
pub struct Filler {
    pool: Vec<u8>,
}

impl Filler {
    pub fn new(message_size: usize, seed: u64) -> Filler {
        let mut pool = vec![0u8; (2 * message_size).max(64 * 1024)];
        Rng::new(seed).fill(&mut pool);
        Filler { pool }
    }

    fn window(&self, sequence: u64, len: usize) -> &[u8] {
        let starts = (self.pool.len() - len + 1) as u64;
        let start = (sequence.wrapping_mul(4099) % starts) as usize;
        &self.pool[start..start + len]
    }
}

/// Writes the payload of one record into `buf` (cleared first).
pub fn encode(buf: &mut Vec<u8>, header: &Header, message_size: usize, filler: &Filler) {
    assert!(message_size >= HEADER_LEN, "message size {message_size} is below the {HEADER_LEN}-byte header");
    buf.clear();
    buf.extend_from_slice(&MAGIC);
    buf.extend_from_slice(&header.run_id.to_le_bytes());
    buf.extend_from_slice(&header.producer_id.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&header.sequence.to_le_bytes());
    buf.extend_from_slice(&header.send_time_us.to_le_bytes());
    buf.extend_from_slice(filler.window(header.sequence, message_size - HEADER_LEN));
    let crc = checksum(buf);
    buf[CRC_RANGE].copy_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(buf.len(), message_size);
}

fn checksum(payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&payload[..CRC_RANGE.start]), &payload[CRC_RANGE.end..])
}

fn u32_at(payload: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(payload[at..at + 4].try_into().expect("four bytes"))
}

fn u64_at(payload: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(payload[at..at + 8].try_into().expect("eight bytes"))
}

/// Reads the sequence number without verifying anything (for delivery reports of records this
/// process just wrote).
pub fn sequence_of(payload: &[u8]) -> Option<u64> {
    (payload.len() >= HEADER_LEN).then(|| u64_at(payload, 16))
}

/// Checks a consumed payload: size, magic, run and checksum, and returns its header.
pub fn verify(payload: &[u8], run_id: u32, message_size: usize) -> Result<Header, Invalid> {
    if payload.len() != message_size {
        return Err(Invalid::Length { expected: message_size, actual: payload.len() });
    }
    if payload[..4] != MAGIC {
        return Err(Invalid::Magic);
    }
    let header = Header {
        run_id: u32_at(payload, 4),
        producer_id: u32_at(payload, 8),
        sequence: u64_at(payload, 16),
        send_time_us: u64_at(payload, 24),
    };
    if header.run_id != run_id {
        return Err(Invalid::ForeignRun(header.run_id));
    }
    let stored = u32_at(payload, CRC_RANGE.start);
    let computed = checksum(payload);
    if stored != computed {
        return Err(Invalid::Checksum { stored, computed });
    }
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(sequence: u64) -> Header {
        Header { run_id: 0xABCD_0123, producer_id: 7, sequence, send_time_us: 1_700_000_000_000_000 + sequence }
    }

    #[test]
    fn round_trip_and_every_single_byte_flip_is_caught() {
        let filler = Filler::new(100, 1);
        let mut buf = Vec::new();
        encode(&mut buf, &header(42), 100, &filler);
        assert_eq!(buf.len(), 100);
        assert_eq!(verify(&buf, 0xABCD_0123, 100), Ok(header(42)));
        assert_eq!(sequence_of(&buf), Some(42));
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x01;
            assert!(verify(&bad, 0xABCD_0123, 100).is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn wrong_size_magic_and_run_are_reported_as_such() {
        let filler = Filler::new(64, 1);
        let mut buf = Vec::new();
        encode(&mut buf, &header(1), 64, &filler);
        assert_eq!(verify(&buf[..63], 0xABCD_0123, 64), Err(Invalid::Length { expected: 64, actual: 63 }));
        assert_eq!(verify(&buf, 0xABCD_0123, 65), Err(Invalid::Length { expected: 65, actual: 64 }));
        assert_eq!(verify(&buf, 5, 64), Err(Invalid::ForeignRun(0xABCD_0123)));
        let mut bad = buf.clone();
        bad[0] = b'X';
        assert_eq!(verify(&bad, 0xABCD_0123, 64), Err(Invalid::Magic));
    }

    #[test]
    fn header_only_payloads_and_consecutive_records_differ() {
        let filler = Filler::new(HEADER_LEN, 3);
        let mut a = Vec::new();
        encode(&mut a, &header(0), HEADER_LEN, &filler);
        assert_eq!(verify(&a, 0xABCD_0123, HEADER_LEN), Ok(header(0)));
        let filler = Filler::new(1024, 3);
        let mut b = Vec::new();
        encode(&mut a, &header(10), 1024, &filler);
        encode(&mut b, &header(11), 1024, &filler);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..], "filler windows should differ between records");
    }
}
