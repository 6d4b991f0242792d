//! Sparse per-segment indexes, held in memory and written to disk at checkpoints.
//!
//! The offset index maps a batch's offset (relative to the segment base) to its byte position.
//! The time index maps the segment's running maximum timestamp to the batch that first reached
//! it, so every batch before that one holds only older records. Both are sparse: an entry at
//! most every `index.interval.bytes`.

/// Offset index entry size on disk: relative offset u32, position u32.
pub(crate) const OFFSET_ENTRY_BYTES: usize = 8;
/// Time index entry size on disk: timestamp i64, relative offset u32.
pub(crate) const TIME_ENTRY_BYTES: usize = 12;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    /// (relative offset, byte position), both strictly increasing.
    entries: Vec<(u32, u32)>,
    /// Entries already written to the index file.
    pub(crate) persisted: usize,
    /// The file holds entries past `persisted` that truncation removed; the next write must
    /// cut them off even if there is nothing new to add.
    pub(crate) stale_on_disk: bool,
}

impl OffsetIndex {
    pub(crate) fn push(&mut self, relative_offset: u32, position: u32) {
        if let Some(&(last_offset, last_position)) = self.entries.last() {
            assert!(
                relative_offset > last_offset && position > last_position,
                "offset index must grow: ({last_offset}, {last_position}) then ({relative_offset}, {position})"
            );
        }
        self.entries.push((relative_offset, position));
    }

    /// The last entry at or before `relative_offset`: where a scan for it may start.
    pub(crate) fn lookup(&self, relative_offset: u32) -> Option<(u32, u32)> {
        let after = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        after.checked_sub(1).map(|i| self.entries[i])
    }

    /// Drops entries pointing at or past `position` (the log was truncated there).
    pub(crate) fn truncate_to_position(&mut self, position: u64) {
        let keep = self.entries.partition_point(|&(_, p)| u64::from(p) < position);
        self.entries.truncate(keep);
        self.stale_on_disk |= keep < self.persisted;
        self.persisted = self.persisted.min(keep);
    }

    /// Drops entries for offsets at or past `relative_offset`.
    pub(crate) fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(o, _)| o < relative_offset);
        self.entries.truncate(keep);
        self.stale_on_disk |= keep < self.persisted;
        self.persisted = self.persisted.min(keep);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    /// Bytes of the entries not yet on disk, and the file position they go to.
    pub(crate) fn unpersisted(&self) -> (u64, Vec<u8>) {
        let mut bytes = Vec::with_capacity((self.entries.len() - self.persisted) * OFFSET_ENTRY_BYTES);
        for &(o, p) in &self.entries[self.persisted..] {
            bytes.extend_from_slice(&o.to_be_bytes());
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        ((self.persisted * OFFSET_ENTRY_BYTES) as u64, bytes)
    }

    /// Parses an index file, or `None` if it is not a valid index for a segment of
    /// `segment_size` bytes (then the caller rebuilds it from the log).
    pub(crate) fn decode(bytes: &[u8], segment_size: u64) -> Option<OffsetIndex> {
        if bytes.len() % OFFSET_ENTRY_BYTES != 0 {
            return None;
        }
        let mut index = OffsetIndex::default();
        for chunk in bytes.chunks_exact(OFFSET_ENTRY_BYTES) {
            let o = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let p = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            let grows = index.entries.last().is_none_or(|&(lo, lp)| o > lo && p > lp);
            if !grows || u64::from(p) >= segment_size {
                return None;
            }
            index.entries.push((o, p));
        }
        index.persisted = index.entries.len();
        Some(index)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    /// (timestamp, relative offset), both strictly increasing.
    entries: Vec<(i64, u32)>,
    pub(crate) persisted: usize,
    pub(crate) stale_on_disk: bool,
}

impl TimeIndex {
    /// Adds an entry if `timestamp` is newer than the last one.
    pub(crate) fn maybe_push(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp <= t || relative_offset <= o => {}
            _ => self.entries.push((timestamp, relative_offset)),
        }
    }

    /// Where a search for the first record with a timestamp at or after `timestamp` may start:
    /// the relative offset of the last entry whose timestamp is at most `timestamp` (every
    /// record before it is older than that entry's timestamp), or the segment start.
    pub(crate) fn lookup(&self, timestamp: i64) -> u32 {
        let after = self.entries.partition_point(|&(t, _)| t <= timestamp);
        after.checked_sub(1).map_or(0, |i| self.entries[i].1)
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops entries for offsets at or past `relative_offset`.
    pub(crate) fn truncate_to_offset(&mut self, relative_offset: u32) {
        let keep = self.entries.partition_point(|&(_, o)| o < relative_offset);
        self.entries.truncate(keep);
        self.stale_on_disk |= keep < self.persisted;
        self.persisted = self.persisted.min(keep);
    }

    pub(crate) fn unpersisted(&self) -> (u64, Vec<u8>) {
        let mut bytes = Vec::with_capacity((self.entries.len() - self.persisted) * TIME_ENTRY_BYTES);
        for &(t, o) in &self.entries[self.persisted..] {
            bytes.extend_from_slice(&t.to_be_bytes());
            bytes.extend_from_slice(&o.to_be_bytes());
        }
        ((self.persisted * TIME_ENTRY_BYTES) as u64, bytes)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<TimeIndex> {
        if bytes.len() % TIME_ENTRY_BYTES != 0 {
            return None;
        }
        let mut index = TimeIndex::default();
        for chunk in bytes.chunks_exact(TIME_ENTRY_BYTES) {
            let t = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let o = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            if index.entries.last().is_some_and(|&(lt, lo)| t <= lt || o <= lo) {
                return None;
            }
            index.entries.push((t, o));
        }
        index.persisted = index.entries.len();
        Some(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// lookup returns the greatest entry at or below the target, for any sparse index.
        #[test]
        fn offset_lookup_is_floor(steps in prop::collection::vec((1u32..50, 1u32..5000), 0..60), target in 0u32..3000) {
            let mut index = OffsetIndex::default();
            let (mut o, mut p) = (0u32, 0u32);
            let mut model = Vec::new();
            for (i, (do_, dp)) in steps.iter().enumerate() {
                if i > 0 { o += do_; p += dp; }
                index.push(o, p);
                model.push((o, p));
            }
            let expected = model.iter().rev().find(|&&(eo, _)| eo <= target).copied();
            prop_assert_eq!(index.lookup(target), expected);
            let (_, bytes) = index.unpersisted();
            let decoded = OffsetIndex::decode(&bytes, u64::from(p) + 1).unwrap();
            prop_assert_eq!(decoded.lookup(target), expected);
        }

        /// Truncation by position keeps exactly the entries before it.
        #[test]
        fn offset_truncation_keeps_prefix(count in 0usize..40, cut in 0u64..500) {
            let mut index = OffsetIndex::default();
            for i in 0..count { index.push(i as u32 * 3, i as u32 * 10); }
            index.persisted = count;
            index.truncate_to_position(cut);
            let kept = (0..count).filter(|i| (*i as u64) * 10 < cut).count();
            prop_assert_eq!(index.len(), kept);
            prop_assert!(index.persisted <= kept);
            if let Some((_, p)) = index.last() { prop_assert!(u64::from(p) < cut); }
        }

        /// Every record before the time index's answer is older than the target.
        #[test]
        fn time_lookup_never_skips_a_match(timestamps in prop::collection::vec(0i64..1000, 1..80), target in 0i64..1100, sparse in 1usize..4) {
            // One record per offset; index every `sparse` records with the running maximum.
            let mut index = TimeIndex::default();
            let (mut max, mut max_at) = (i64::MIN, 0u32);
            for (offset, &t) in timestamps.iter().enumerate() {
                if t > max { max = t; max_at = offset as u32; }
                if offset % sparse == 0 { index.maybe_push(max, max_at); }
            }
            let start = index.lookup(target) as usize;
            prop_assert!(timestamps[..start].iter().all(|&t| t < target),
                "start {} skips a record at or after {}", start, target);
        }
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(OffsetIndex::decode(&[0; 7], 100).is_none());
        let mut bytes = Vec::new();
        for (o, p) in [(5u32, 50u32), (4, 60)] {
            bytes.extend_from_slice(&o.to_be_bytes());
            bytes.extend_from_slice(&p.to_be_bytes());
        }
        assert!(OffsetIndex::decode(&bytes, 100).is_none(), "decreasing offsets");
        assert!(OffsetIndex::decode(&bytes[..8], 40).is_none(), "position past the segment");
        assert!(TimeIndex::decode(&[1; 13]).is_none());
    }
}
