//! Idempotent producers: per partition, for each producer id, its epoch and its last five
//! batches, so a retried batch is recognised (and answered with its original offsets) and a
//! gap in sequence numbers is refused.
//!
//! The state is snapshotted at every recovery checkpoint (`producer-snapshot`) and at every
//! segment roll (`<base offset>.snapshot`, the state as of the new segment's base). It is
//! rebuilt, as Kafka does, by replaying batch headers after a snapshot: on open, so it
//! survives restarts, and when a truncation cuts batches it remembers, so it is what the
//! kept log says.

use std::collections::{BTreeMap, VecDeque};

use thiserror::Error;

use crate::batch::BatchHeader;

/// Batches remembered per producer, as Kafka does.
pub const BATCHES_REMEMBERED: usize = 5;

pub(crate) const SNAPSHOT_FILE: &str = "producer-snapshot";
const SNAPSHOT_MAGIC: &[u8; 8] = b"KEELPROD";
const SNAPSHOT_VERSION: u16 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: i64,
    last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Producer {
    epoch: i16,
    /// Oldest first, at most [`BATCHES_REMEMBERED`].
    batches: VecDeque<BatchMeta>,
    /// Largest batch timestamp seen from this producer (for expiry).
    last_timestamp: i64,
}

/// Why an idempotent batch was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProducerError {
    #[error("sequence {got} out of order: expected {expected}")]
    OutOfOrderSequence { expected: i32, got: i32 },
    #[error("producer epoch {got} is older than the current epoch {current}")]
    StaleEpoch { current: i16, got: i16 },
    #[error("producer id is unknown here and the batch does not start at sequence 0 (sequence {got})")]
    UnknownProducer { got: i32 },
}

impl ProducerError {
    pub fn error_code(&self) -> keel_types::ErrorCode {
        use keel_types::ErrorCode;
        match self {
            ProducerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequenceNumber,
            ProducerError::StaleEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            ProducerError::UnknownProducer { .. } => ErrorCode::UnknownProducerId,
        }
    }
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    Append,
    /// A retry of a batch already in the log, at these offsets.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
    },
}

fn last_sequence(header: &BatchHeader) -> i32 {
    // Sequences wrap from i32::MAX to 0, as in Kafka.
    ((i64::from(header.base_sequence) + i64::from(header.last_offset_delta)) % (i64::from(i32::MAX) + 1)) as i32
}

fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerStates {
    producers: BTreeMap<i64, Producer>,
}

impl ProducerStates {
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks an idempotent batch (producer id >= 0) against the producer's state.
    pub(crate) fn check(&self, header: &BatchHeader) -> Result<SequenceCheck, ProducerError> {
        let first = header.base_sequence;
        let last = last_sequence(header);
        let Some(producer) = self.producers.get(&header.producer_id) else {
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ProducerError::UnknownProducer { got: first })
            };
        };
        if header.producer_epoch < producer.epoch {
            return Err(ProducerError::StaleEpoch { current: producer.epoch, got: header.producer_epoch });
        }
        if header.producer_epoch > producer.epoch {
            // A bumped epoch starts its sequences again at 0.
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(ProducerError::OutOfOrderSequence { expected: 0, got: first })
            };
        }
        if let Some(seen) = producer.batches.iter().find(|b| b.first_sequence == first && b.last_sequence == last) {
            return Ok(SequenceCheck::Duplicate { base_offset: seen.base_offset, last_offset: seen.last_offset });
        }
        let expected = producer.batches.back().map_or(0, |b| next_sequence(b.last_sequence));
        if first != expected {
            return Err(ProducerError::OutOfOrderSequence { expected, got: first });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch written at its (final) offsets. Non-idempotent batches are ignored.
    pub(crate) fn apply(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 {
            return;
        }
        let meta = BatchMeta {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        };
        let producer = self.producers.entry(header.producer_id).or_insert_with(|| Producer {
            epoch: header.producer_epoch,
            batches: VecDeque::new(),
            last_timestamp: header.max_timestamp,
        });
        if header.producer_epoch != producer.epoch {
            producer.epoch = header.producer_epoch;
            producer.batches.clear();
        }
        producer.batches.push_back(meta);
        if producer.batches.len() > BATCHES_REMEMBERED {
            producer.batches.pop_front();
        }
        producer.last_timestamp = producer.last_timestamp.max(header.max_timestamp);
    }

    /// Whether a remembered batch ends at or after `offset`. A producer's newest batch is
    /// always remembered, so if none does, no producer has a batch there and cutting the log
    /// at `offset` leaves the state as a replay of the kept log would give it.
    pub(crate) fn remembers_batches_from(&self, offset: i64) -> bool {
        self.producers.values().any(|p| p.batches.back().is_some_and(|b| b.last_offset >= offset))
    }

    /// Forgets producers idle (by batch timestamp) for longer than `max_idle_ms`.
    pub(crate) fn expire(&mut self, now_ms: i64, max_idle_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, p| now_ms.saturating_sub(p.last_timestamp) <= max_idle_ms);
        before - self.producers.len()
    }

    /// The snapshot file's bytes: the state as of `offset` (the log end when taken).
    pub(crate) fn encode(&self, offset: i64) -> Vec<u8> {
        let mut b = Vec::with_capacity(32 + self.producers.len() * 64);
        b.extend_from_slice(SNAPSHOT_MAGIC);
        b.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        for (id, p) in &self.producers {
            b.extend_from_slice(&id.to_be_bytes());
            b.extend_from_slice(&p.epoch.to_be_bytes());
            b.extend_from_slice(&p.last_timestamp.to_be_bytes());
            b.push(p.batches.len() as u8);
            for m in &p.batches {
                b.extend_from_slice(&m.first_sequence.to_be_bytes());
                b.extend_from_slice(&m.last_sequence.to_be_bytes());
                b.extend_from_slice(&m.base_offset.to_be_bytes());
                b.extend_from_slice(&m.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        b
    }

    /// Parses a snapshot: the state and the offset it covers, or why it is unusable.
    pub(crate) fn decode(bytes: &[u8]) -> Result<(ProducerStates, i64), String> {
        if bytes.len() < 26 {
            return Err("too short".to_string());
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err("checksum mismatch".to_string());
        }
        let mut r = Reader { bytes: body, at: 0 };
        if r.take(8)? != SNAPSHOT_MAGIC || r.u16()? != SNAPSHOT_VERSION {
            return Err("unknown format".to_string());
        }
        let offset = r.i64()?;
        let count = r.u32()?;
        let mut states = ProducerStates::default();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let batches = r.take(1)?[0];
            let mut producer = Producer { epoch, batches: VecDeque::new(), last_timestamp };
            for _ in 0..batches {
                producer.batches.push_back(BatchMeta {
                    first_sequence: r.i32()?,
                    last_sequence: r.i32()?,
                    base_offset: r.i64()?,
                    last_offset: r.i64()?,
                });
            }
            states.producers.insert(id, producer);
        }
        Ok((states, offset))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let slice = self.bytes.get(self.at..self.at + n).ok_or("truncated")?;
        self.at += n;
        Ok(slice)
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().expect("4 bytes")))
    }
    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 100,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 1000,
            max_timestamp: 1000 + base_offset,
            producer_id,
            producer_epoch: epoch,
            base_sequence,
            record_count: records,
        }
    }

    #[test]
    fn sequences_duplicates_gaps_and_epochs() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(&header(7, 0, 0, 3, 0)), Ok(SequenceCheck::Append));
        s.apply(&header(7, 0, 0, 3, 0)); // seq 0..=2 at offsets 0..=2
        assert_eq!(s.check(&header(7, 0, 3, 2, 3)), Ok(SequenceCheck::Append));
        s.apply(&header(7, 0, 3, 2, 3));
        // A retry of the first batch is a duplicate answered with its original offsets.
        assert_eq!(s.check(&header(7, 0, 0, 3, 99)), Ok(SequenceCheck::Duplicate { base_offset: 0, last_offset: 2 }));
        // A gap is refused.
        assert_eq!(s.check(&header(7, 0, 9, 1, 5)), Err(ProducerError::OutOfOrderSequence { expected: 5, got: 9 }));
        // An older epoch is fenced; a newer one must start at 0.
        s.apply(&header(7, 2, 0, 1, 5));
        assert_eq!(s.check(&header(7, 1, 1, 1, 6)), Err(ProducerError::StaleEpoch { current: 2, got: 1 }));
        assert_eq!(s.check(&header(7, 3, 4, 1, 6)), Err(ProducerError::OutOfOrderSequence { expected: 0, got: 4 }));
        // An unknown producer must start at sequence 0.
        assert_eq!(s.check(&header(8, 0, 5, 1, 6)), Err(ProducerError::UnknownProducer { got: 5 }));
    }

    #[test]
    fn only_five_batches_are_remembered_and_sequences_wrap() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.apply(&header(1, 0, i, 1, i64::from(i)));
        }
        assert!(matches!(s.check(&header(1, 0, 2, 1, 50)), Ok(SequenceCheck::Duplicate { .. })));
        assert!(matches!(s.check(&header(1, 0, 1, 1, 50)), Err(ProducerError::OutOfOrderSequence { .. })));
        let mut w = ProducerStates::default();
        w.apply(&header(2, 0, 0, i32::MAX - 1, 0)); // sequences 0..=MAX-2
        w.apply(&header(2, 0, i32::MAX - 1, 2, 1)); // MAX-1..=MAX
        assert_eq!(w.check(&header(2, 0, 0, 5, 3)), Ok(SequenceCheck::Append), "wraps to 0");
        assert!(matches!(w.check(&header(2, 0, 1, 1, 3)), Err(ProducerError::OutOfOrderSequence { expected: 0, .. })));
    }

    #[test]
    fn snapshot_round_trip_cut_check_and_expire() {
        let mut s = ProducerStates::default();
        s.apply(&header(1, 0, 0, 2, 0));
        s.apply(&header(1, 0, 2, 2, 2));
        s.apply(&header(2, 5, 0, 1, 4));
        let (back, offset) = ProducerStates::decode(&s.encode(5)).unwrap();
        assert_eq!((back.clone(), offset), (s.clone(), 5));
        let mut bytes = s.encode(5);
        bytes[12] ^= 1;
        assert!(ProducerStates::decode(&bytes).is_err());
        assert!(s.remembers_batches_from(4) && s.remembers_batches_from(3));
        assert!(!s.remembers_batches_from(5), "producer 2's batch ends at offset 4");
        assert_eq!(s.expire(1004 + 10, 10), 1, "producer 1 last wrote at 1002");
    }
}
