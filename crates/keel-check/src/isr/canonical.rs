//! The ISR model's state fingerprint: the integers a state's `Hash` writes, with those whose
//! exact values the code never looks at rewritten into a canonical form.
//!
//! keel-replication's cores keep times, leader epochs, partition epochs and broker epochs in
//! private fields, and the model cannot set them back. Left alone they would make every state
//! new: time only grows, and so do epochs across crash and restart cycles. What the code does
//! with them is limited, so states that differ only in these values behave alike:
//!
//! - **Leader, partition and broker epochs** are only compared (and the controller hands out
//!   one more than the largest so far). Replacing each by its rank among the values of its kind
//!   in the state keeps every comparison, and the next epoch is still the largest. **Process
//!   ids** (a new one for every broker process, one more than the largest so far) are only
//!   compared for equality, and are ranked the same way.
//! - **Times** are only compared with `now` (is a follower's last catch-up within
//!   `replica.lag.time.max.ms`? has a backoff passed?) or with each other through `max`. The
//!   model's clock moves only by steps longer than the lag time plus every backoff, so a time
//!   recorded before the last step is expired and past for good, and behaves like any other
//!   such time: they are all one value. A time recorded since (at `now`, or a deadline a
//!   backoff after it) is kept relative to `now`. (`Leader::poll_timeout` would tell old times
//!   apart; the model never asks it.)
//!
//! The state's derived `Hash` writes every field, private ones included, as typed integers.
//! A recording `Hasher` tells the kinds apart by type and magnitude, which the model arranges:
//! leader epochs are `i32`s from [`LEADER_EPOCH_BASE`], partition epochs `i32`s from
//! [`PARTITION_EPOCH_BASE`], broker epochs `i64`s from [`BROKER_EPOCH_BASE`], and times `u64`s
//! from [`TIME_BASE`] (`Instant`), process ids `u128`s from [`PROCESS_ID_BASE`]; no other integer in the state comes near those magnitudes
//! (offsets, node ids, counts, configured durations), and one that does is a panic rather than
//! a guess. (A slice of plain integers is hashed as raw bytes and left as it is; the state
//! keeps epochs and times in typed fields and structs.)

use std::hash::{Hash, Hasher};

use keel_types::{Duration, Instant};

/// Leader epochs start here (the initial registration's leader epoch is set to it).
pub const LEADER_EPOCH_BASE: i32 = 500_000_000;
/// Partition epochs start here (the initial registration's partition epoch is set to it).
pub const PARTITION_EPOCH_BASE: i32 = 1_000_000_000;
/// Broker epochs are greater than this.
pub const BROKER_EPOCH_BASE: i64 = 1_000_000_000_000;
/// Process ids start here.
pub const PROCESS_ID_BASE: u128 = 1 << 100;
/// The model's clock starts here (nanoseconds) and only grows; configured durations are far
/// below it.
pub const TIME_BASE: u64 = 1_000_000_000_000;
/// Integers below this in magnitude (offsets, node ids, counts) are kept as they are.
const SMALL: i128 = 100_000_000;
/// Epochs of each kind stay below their base plus this (a run would need a hundred million
/// changes to pass it).
const SPAN: i128 = 100_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Width {
    Bytes,
    U8,
    U16,
    U32,
    U64,
    U128,
    Usize,
    I8,
    I16,
    I32,
    I64,
    I128,
    Isize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Plain,
    Time,
    LeaderEpoch,
    PartitionEpoch,
    BrokerEpoch,
    ProcessId,
}

/// One integer (or byte) a `Hash` implementation wrote.
#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    value: i128,
}

/// A `Hasher` that records what it is given instead of hashing it.
struct Recorder {
    tokens: Vec<Token>,
}

impl Recorder {
    fn push(&mut self, width: Width, value: i128) {
        let kind = classify(width, value);
        self.tokens.push(Token { kind, value });
    }
}

impl Hasher for Recorder {
    fn finish(&self) -> u64 {
        unreachable!("the recorder is read through its tokens")
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.push(Width::Bytes, i128::from(byte));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.push(Width::U8, i128::from(i));
    }

    fn write_u16(&mut self, i: u16) {
        self.push(Width::U16, i128::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.push(Width::U32, i128::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.push(Width::U64, i128::from(i));
    }

    fn write_u128(&mut self, i: u128) {
        // Only the low bits matter for telling values apart; no u128 in the state is large.
        self.push(Width::U128, i as i128);
    }

    fn write_usize(&mut self, i: usize) {
        self.push(Width::Usize, i as i128);
    }

    fn write_i8(&mut self, i: i8) {
        self.push(Width::I8, i128::from(i));
    }

    fn write_i16(&mut self, i: i16) {
        self.push(Width::I16, i128::from(i));
    }

    fn write_i32(&mut self, i: i32) {
        self.push(Width::I32, i128::from(i));
    }

    fn write_i64(&mut self, i: i64) {
        self.push(Width::I64, i128::from(i));
    }

    fn write_i128(&mut self, i: i128) {
        self.push(Width::I128, i);
    }

    fn write_isize(&mut self, i: isize) {
        self.push(Width::Isize, i as i128);
    }
}

/// What kind of number `value` is, from its type and magnitude.
fn classify(width: Width, value: i128) -> Kind {
    let within = |base: i128| (base..base + SPAN).contains(&value);
    let kind = match width {
        Width::U64 if value >= i128::from(TIME_BASE) => Kind::Time,
        Width::U128 if value >= PROCESS_ID_BASE as i128 => Kind::ProcessId,
        Width::I32 if within(i128::from(PARTITION_EPOCH_BASE)) => Kind::PartitionEpoch,
        Width::I32 if within(i128::from(LEADER_EPOCH_BASE)) => Kind::LeaderEpoch,
        Width::I64 if value > i128::from(BROKER_EPOCH_BASE) => Kind::BrokerEpoch,
        Width::U64 | Width::Bytes | Width::U8 | Width::U16 | Width::Usize | Width::Isize => Kind::Plain,
        _ if value.abs() < SMALL => Kind::Plain,
        _ => panic!("the ISR model's state holds {value} ({width:?}), a number its fingerprint cannot place"),
    };
    assert!(
        kind != Kind::BrokerEpoch || value < i128::from(BROKER_EPOCH_BASE) + SPAN,
        "broker epoch {value} is beyond what the fingerprint expects"
    );
    kind
}

/// The fingerprint of `value` at time `now`: times at or after `now - recent` are kept
/// relative to `now`, older ones are all alike, and epochs are ranked within their kind.
pub fn canonical_fingerprint<T: Hash + ?Sized>(value: &T, now: Instant, recent: Duration) -> u128 {
    SCRATCH.with_borrow_mut(|scratch| scratch.fingerprint(value, now, recent))
}

thread_local! {
    /// Buffers reused across calls: a fingerprint is taken for every transition, and
    /// allocating them each time was a large part of the checker's time.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

#[derive(Default)]
struct Scratch {
    tokens: Vec<Token>,
    epochs: [Vec<i128>; 4],
    canonical: Vec<u8>,
}

impl Scratch {
    fn fingerprint<T: Hash + ?Sized>(&mut self, value: &T, now: Instant, recent: Duration) -> u128 {
        let mut recorder = Recorder { tokens: std::mem::take(&mut self.tokens) };
        recorder.tokens.clear();
        value.hash(&mut recorder);
        self.tokens = recorder.tokens;
        self.canonical(now, recent)
    }

    fn canonical(&mut self, now: Instant, recent: Duration) -> u128 {
        let tokens = &self.tokens;
        let epochs = &mut self.epochs;
        epochs.iter_mut().for_each(Vec::clear);
        for token in tokens {
            match token.kind {
                Kind::LeaderEpoch => epochs[0].push(token.value),
                Kind::PartitionEpoch => epochs[1].push(token.value),
                Kind::BrokerEpoch => epochs[2].push(token.value),
                Kind::ProcessId => epochs[3].push(token.value),
                Kind::Plain | Kind::Time => {}
            }
        }
        for values in epochs.iter_mut() {
            values.sort_unstable();
            values.dedup();
        }
        let now = i128::from(now.0);
        // The values as varints in one buffer, hashed in one go (most are a byte). The types the
        // hash walks decide the sequence of writes from the values written before, so the values
        // alone tell states apart.
        let canonical = &mut self.canonical;
        canonical.clear();
        for token in tokens {
            let value = match token.kind {
                Kind::Plain => token.value,
                Kind::Time if token.value + i128::from(recent.0) >= now => token.value - now,
                Kind::Time => OLD,
                Kind::LeaderEpoch => rank(&epochs[0], token.value),
                Kind::PartitionEpoch => rank(&epochs[1], token.value),
                Kind::BrokerEpoch => rank(&epochs[2], token.value),
                Kind::ProcessId => rank(&epochs[3], token.value),
            };
            push_varint(canonical, value);
        }
        crate::explore::fingerprint(canonical.as_slice())
    }
}

/// What every old time becomes.
const OLD: i128 = i128::MIN;

/// LEB128 of the zigzag encoding: prefix-free, one byte for small values of either sign.
fn push_varint(buffer: &mut Vec<u8>, value: i128) {
    let mut zigzag = ((value << 1) ^ (value >> 127)) as u128;
    loop {
        let byte = (zigzag & 0x7f) as u8;
        zigzag >>= 7;
        if zigzag == 0 {
            buffer.push(byte);
            return;
        }
        buffer.push(byte | 0x80);
    }
}

fn rank(values: &[i128], value: i128) -> i128 {
    values.binary_search(&value).expect("every value was collected") as i128
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_types::{LeaderEpoch, NodeId};

    const NOW: Instant = Instant(TIME_BASE * 3);
    const RECENT: Duration = Duration(30);

    fn print<T: Hash>(value: &T) -> u128 {
        canonical_fingerprint(value, NOW, RECENT)
    }

    fn epochs(leader: [i32; 2], partition: [i32; 2], broker: i64, node: i32) -> impl Hash {
        let leader = leader.map(|e| LeaderEpoch(LEADER_EPOCH_BASE + e));
        // A tuple, not an array: a slice of integers is hashed as raw bytes.
        let partition = (PARTITION_EPOCH_BASE + partition[0], PARTITION_EPOCH_BASE + partition[1]);
        (leader, partition, BROKER_EPOCH_BASE + broker, NodeId(node), 12i64)
    }

    #[test]
    fn epochs_are_ranked_within_their_kind() {
        assert_eq!(print(&epochs([3, 7], [4, 9], 5, 3)), print(&epochs([0, 1], [0, 1], 1, 3)));
        assert_ne!(print(&epochs([3, 7], [4, 9], 5, 3)), print(&epochs([1, 0], [0, 1], 1, 3)), "order is kept");
        assert_ne!(print(&epochs([3, 7], [4, 9], 5, 3)), print(&epochs([0, 1], [0, 1], 1, 2)), "small numbers stay");
        assert_ne!(print(&LeaderEpoch(-1)), print(&LeaderEpoch(LEADER_EPOCH_BASE)), "undefined stays undefined");
    }

    #[test]
    fn times_are_relative_to_now_until_they_are_old() {
        let now = NOW.0;
        let recent = |t: u64| (Some(Instant(t)), keel_types::Duration(7));
        let later = Instant(now + 5);
        assert_eq!(print(&recent(now)), canonical_fingerprint(&recent(now + 5), later, RECENT));
        assert_ne!(print(&recent(now)), print(&recent(now + 1)), "a deadline ahead of now");
        assert_eq!(print(&recent(now - 31)), print(&recent(now - 500)), "old times are alike");
        assert_ne!(print(&recent(now - 30)), print(&recent(now - 31)));
    }

    #[test]
    #[should_panic(expected = "cannot place")]
    fn an_unknown_large_number_is_refused() {
        print(&5_000_000_000i64);
    }
}
