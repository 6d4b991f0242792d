//! When a long-polling Fetch answers: Kafka's rules (`ReplicaManager.fetchMessages` and
//! `DelayedFetch.tryComplete`) as a pure function, so they are tested without sockets.
//!
//! A fetch answers at once when it asked for nothing, when what it read reaches `min_bytes`,
//! when a partition answers with an error (not the leader, unknown topic, fenced or unknown
//! leader epoch, offset out of range, storage error) or tells a follower where its log diverges
//! (KIP-320): waiting would not change those, and the client must act on them. Otherwise it
//! waits, reading again whenever a partition's log or high watermark moves, until `max_wait`.

use kafka_protocol::messages::FetchResponse;

/// What one read of every requested partition found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchRead {
    /// Partitions the fetch asked for.
    pub partitions: usize,
    /// Record bytes read.
    pub bytes: usize,
    /// Partitions answered with an error code.
    pub errors: usize,
    /// Partitions answered with a diverging epoch.
    pub diverging: usize,
}

impl FetchRead {
    /// Counts what `response` (one read) holds, with `bytes` of records in it.
    pub fn of(response: &FetchResponse, bytes: usize) -> FetchRead {
        let partitions = response.responses.iter().flat_map(|t| t.partitions.iter());
        let mut read = FetchRead { bytes, ..FetchRead::default() };
        for partition in partitions {
            read.partitions += 1;
            read.errors += usize::from(partition.error_code != 0);
            read.diverging += usize::from(partition.diverging_epoch.epoch >= 0);
        }
        read
    }
}

/// Whether a fetch that read `read` answers now; `waited_out`: its `max_wait` has passed (or
/// the broker is shutting down).
pub fn fetch_answers_now(read: &FetchRead, min_bytes: i32, waited_out: bool) -> bool {
    waited_out
        || read.partitions == 0
        || read.errors > 0
        || read.diverging > 0
        || read.bytes >= usize::try_from(min_bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};

    fn read(partitions: usize, bytes: usize, errors: usize, diverging: usize) -> FetchRead {
        FetchRead { partitions, bytes, errors, diverging }
    }

    #[test]
    fn kafkas_rules_for_answering_a_long_poll() {
        let table = [
            // (what was read, min_bytes, waited out, answers now)
            (read(2, 0, 0, 0), 1, false, false),    // nothing yet: wait
            (read(2, 0, 0, 0), 1, true, true),      // max_wait passed
            (read(2, 0, 0, 0), 0, false, true),     // min_bytes 0: at once
            (read(2, 0, 0, 0), -5, false, true),    // a negative min_bytes is 0
            (read(2, 99, 0, 0), 100, false, false), // not enough bytes yet
            (read(2, 100, 0, 0), 100, false, true), // enough
            (read(2, 0, 1, 0), 1, false, true),     // an error: the client must act on it
            (read(2, 0, 0, 1), 1, false, true),     // a diverging epoch: the follower truncates
            (read(0, 0, 0, 0), 1, false, true),     // nothing asked for
        ];
        for (i, (read, min_bytes, waited_out, expected)) in table.into_iter().enumerate() {
            assert_eq!(fetch_answers_now(&read, min_bytes, waited_out), expected, "row {i}: {read:?}");
        }
    }

    #[test]
    fn a_read_counts_partitions_errors_and_divergences() {
        let ok = PartitionData::default().with_partition_index(0);
        let mut diverging = PartitionData::default().with_partition_index(1);
        diverging.diverging_epoch.epoch = 3;
        diverging.diverging_epoch.end_offset = 10;
        let failed = PartitionData::default().with_partition_index(2).with_error_code(6);
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_partitions(vec![ok, diverging]),
            FetchableTopicResponse::default().with_partitions(vec![failed]),
        ]);
        assert_eq!(FetchRead::of(&response, 7), read(3, 7, 1, 1));
    }
}
