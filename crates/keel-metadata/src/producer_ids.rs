//! Producer-id blocks (KIP-730). An idempotent producer's id must never be handed out twice:
//! partitions remember the last sequence of every producer id for a day, so a new producer
//! given an old id has its batches answered as duplicates and dropped. A counter in a broker's
//! data directory starts over when the disk is replaced; the metadata log does not.
//!
//! - The active controller hands out blocks of [`PRODUCER_ID_BLOCK_SIZE`] ids
//!   ([`Controller::allocate_producer_ids`](crate::Controller::allocate_producer_ids)), each
//!   recorded as a [`MetadataRecord::ProducerIds`](crate::MetadataRecord::ProducerIds) holding
//!   the first id of the next block, so blocks never overlap, across controller failovers and
//!   snapshots alike.
//! - A broker hands out ids from its block with a [`ProducerIdAllocator`] and asks for the next
//!   block when 90% of the current one is used, as Kafka does, so a steady stream of producers
//!   rarely waits for the controller. The allocator is pure: the shell sends the requests it
//!   asks for and reports their answers.

use keel_types::{Duration, Instant};
use serde::{Deserialize, Serialize};

/// How many ids one block holds (Kafka's `ProducerIdsBlock.PRODUCER_ID_BLOCK_SIZE`).
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;

/// A broker asks for the next block once this many ids of its current block are left (10%,
/// Kafka's prefetch threshold).
const PREFETCH_REMAINING: i64 = PRODUCER_ID_BLOCK_SIZE / 10;

/// The ids `first..first + size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i64,
}

impl ProducerIdBlock {
    /// The block the controller hands out when `next_producer_id` is the first free id.
    pub fn starting_at(next_producer_id: i64) -> ProducerIdBlock {
        ProducerIdBlock { first: next_producer_id, size: PRODUCER_ID_BLOCK_SIZE }
    }

    /// The first id after the block.
    pub fn end(&self) -> i64 {
        self.first + self.size
    }
}

/// A broker's producer ids: the block it hands out from, the next block if it has one, and
/// whether it is asking the controller for one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ProducerIdAllocator {
    /// The block ids come from, and the next id in it (`next == block.end()`: used up).
    current: Option<(ProducerIdBlock, i64)>,
    /// A block that arrived before `current` ran out.
    prefetched: Option<ProducerIdBlock>,
    /// A request for a block is out; its answer is due through `handle_block` or
    /// `handle_request_failed`.
    requesting: bool,
    /// After a failed request, no new one before this.
    retry_at: Option<Instant>,
    /// The end of the last block received: every later block must start at or after it.
    received_end: i64,
}

impl ProducerIdAllocator {
    pub fn new() -> ProducerIdAllocator {
        ProducerIdAllocator::default()
    }

    /// The next id, or `None` when every block received is used up (ask with
    /// [`ProducerIdAllocator::poll_request`] and try again once a block arrives).
    pub fn next_id(&mut self) -> Option<i64> {
        if self.remaining() == 0 {
            let block = self.prefetched.take()?;
            self.current = Some((block, block.first));
        }
        let (block, next) = self.current.as_mut().expect("a block with ids left");
        let id = *next;
        *next += 1;
        assert!(id >= block.first && id < block.end(), "id {id} outside {block:?}");
        Some(id)
    }

    /// Whether to send a request for a block now; if so, the allocator counts it as sent.
    /// It asks when no request is out, no block is waiting, the current block has at most 10%
    /// of its ids left, and a failed request's back-off has passed.
    pub fn poll_request(&mut self, now: Instant) -> bool {
        let due = !self.requesting
            && self.prefetched.is_none()
            && self.remaining() <= PREFETCH_REMAINING
            && self.retry_at.is_none_or(|at| now >= at);
        if due {
            self.requesting = true;
            self.retry_at = None;
        }
        due
    }

    /// The controller's answer to the request out: a block allocated through the metadata
    /// log. Blocks the controller hands out never overlap, so each starts at or after the end
    /// of the previous one; anything else is a bug.
    pub fn handle_block(&mut self, block: ProducerIdBlock) {
        assert!(self.requesting, "a producer-id block {block:?} arrived with no request out");
        assert!(block.size > 0 && block.first >= 0, "an empty or negative producer-id block {block:?}");
        assert!(
            block.first >= self.received_end,
            "producer-id block {block:?} overlaps or precedes an earlier block ending at {}",
            self.received_end
        );
        self.requesting = false;
        self.received_end = block.end();
        if self.remaining() == 0 {
            self.current = Some((block, block.first));
        } else {
            assert!(self.prefetched.is_none(), "two blocks waiting");
            self.prefetched = Some(block);
        }
    }

    /// The request out failed (no active controller, a stale broker epoch, a timeout): ask
    /// again after `backoff`.
    pub fn handle_request_failed(&mut self, now: Instant, backoff: Duration) {
        assert!(self.requesting, "a producer-id request failed with no request out");
        self.requesting = false;
        self.retry_at = Some(now + backoff);
    }

    /// Ids left in the current block (not counting a prefetched one).
    pub fn remaining(&self) -> i64 {
        self.current.map_or(0, |(block, next)| block.end() - next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKOFF: Duration = Duration(100_000_000);

    #[test]
    fn ids_come_from_the_block_and_the_next_is_asked_for_at_ninety_percent() {
        let mut allocator = ProducerIdAllocator::new();
        let now = Instant::ZERO;
        assert_eq!(allocator.next_id(), None, "no block yet");
        assert!(allocator.poll_request(now));
        assert!(!allocator.poll_request(now), "one request at a time");
        assert_eq!(allocator.next_id(), None);
        allocator.handle_block(ProducerIdBlock::starting_at(3000));
        let mut ids = Vec::new();
        for _ in 0..PRODUCER_ID_BLOCK_SIZE - PREFETCH_REMAINING - 1 {
            ids.push(allocator.next_id().unwrap());
            assert!(!allocator.poll_request(now), "more than 10% left after {} ids", ids.len());
        }
        ids.push(allocator.next_id().unwrap());
        assert!(allocator.poll_request(now), "10% left: ask for the next block");
        allocator.handle_block(ProducerIdBlock::starting_at(7000));
        assert!(!allocator.poll_request(now), "a block is waiting");
        while ids.len() < PRODUCER_ID_BLOCK_SIZE as usize + 2 {
            ids.push(allocator.next_id().unwrap());
        }
        let expected: Vec<i64> = (3000..4000).chain([7000, 7001]).collect();
        assert_eq!(ids, expected, "the current block first, then the prefetched one");
        assert_eq!(allocator.remaining(), PRODUCER_ID_BLOCK_SIZE - 2);
    }

    #[test]
    fn a_failed_request_is_retried_after_the_backoff() {
        let mut allocator = ProducerIdAllocator::new();
        let now = Instant::ZERO;
        assert!(allocator.poll_request(now));
        allocator.handle_request_failed(now, BACKOFF);
        assert!(!allocator.poll_request(now + Duration(BACKOFF.0 - 1)));
        assert!(allocator.poll_request(now + BACKOFF));
        allocator.handle_block(ProducerIdBlock::starting_at(0));
        assert_eq!(allocator.next_id(), Some(0));
    }

    #[test]
    #[should_panic(expected = "overlaps or precedes")]
    fn an_overlapping_block_is_a_bug() {
        let mut allocator = ProducerIdAllocator::new();
        assert!(allocator.poll_request(Instant::ZERO));
        allocator.handle_block(ProducerIdBlock::starting_at(1000));
        for _ in 0..PRODUCER_ID_BLOCK_SIZE {
            allocator.next_id().unwrap();
        }
        assert!(allocator.poll_request(Instant::ZERO));
        allocator.handle_block(ProducerIdBlock::starting_at(1500));
    }
}
