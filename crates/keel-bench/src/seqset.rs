//! A set of sequence numbers as a bitmap: what a producer had acknowledged, what a consumer
//! read. Sequences are dense from 0 per producer, so a bitmap is both small and exact.

/// Sequences above this are refused rather than allocated for (2^36 bits is 8 GiB).
pub const SEQUENCE_MAX: u64 = 1 << 36;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqSet {
    words: Vec<u64>,
    len: u64,
}

impl SeqSet {
    pub fn new() -> SeqSet {
        SeqSet::default()
    }

    /// Adds `sequence`; returns false if it was already present.
    ///
    /// # Panics
    /// If `sequence` exceeds [`SEQUENCE_MAX`]; callers check first.
    pub fn insert(&mut self, sequence: u64) -> bool {
        assert!(sequence <= SEQUENCE_MAX, "sequence {sequence} is beyond what a benchmark run produces");
        let (word, bit) = ((sequence / 64) as usize, sequence % 64);
        if word >= self.words.len() {
            // Grow geometrically so a producer's rising sequence costs amortised O(1).
            let len = (word + 1).max(self.words.len() * 2);
            self.words.resize(len, 0);
        }
        let mask = 1u64 << bit;
        let fresh = self.words[word] & mask == 0;
        self.words[word] |= mask;
        self.len += u64::from(fresh);
        fresh
    }

    pub fn contains(&self, sequence: u64) -> bool {
        let word = (sequence / 64) as usize;
        word < self.words.len() && self.words[word] & (1 << (sequence % 64)) != 0
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds every member of `other`; returns how many members both sets already shared.
    pub fn union_with(&mut self, other: &SeqSet) -> u64 {
        if other.words.len() > self.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        let mut shared = 0;
        for (mine, theirs) in self.words.iter_mut().zip(&other.words) {
            shared += u64::from((*mine & theirs).count_ones());
            *mine |= theirs;
        }
        self.len = self.words.iter().map(|w| u64::from(w.count_ones())).sum();
        shared
    }

    /// How many members of `self` are not in `other`.
    pub fn count_not_in(&self, other: &SeqSet) -> u64 {
        self.words
            .iter()
            .enumerate()
            .map(|(i, w)| u64::from((w & !other.words.get(i).copied().unwrap_or(0)).count_ones()))
            .sum()
    }

    /// The smallest member of `self` that is not in `other`, for error messages.
    pub fn first_not_in(&self, other: &SeqSet) -> Option<u64> {
        self.words.iter().enumerate().find_map(|(i, w)| {
            let missing = w & !other.words.get(i).copied().unwrap_or(0);
            (missing != 0).then(|| i as u64 * 64 + u64::from(missing.trailing_zeros()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_counts_fresh_members_only() {
        let mut set = SeqSet::new();
        assert!(set.insert(0));
        assert!(set.insert(1000));
        assert!(!set.insert(1000));
        assert_eq!(set.len(), 2);
        assert!(set.contains(0) && set.contains(1000) && !set.contains(999) && !set.contains(1 << 20));
    }

    #[test]
    fn union_difference_and_first_missing() {
        let mut acked = SeqSet::new();
        let mut read_a = SeqSet::new();
        let mut read_b = SeqSet::new();
        for s in 0..500 {
            acked.insert(s);
            if s % 2 == 0 {
                read_a.insert(s);
            } else if s != 301 {
                read_b.insert(s);
            }
        }
        read_b.insert(10); // read twice across the two readers
        read_b.insert(900); // read, never acknowledged
        let mut read = SeqSet::new();
        assert_eq!(read.union_with(&read_a), 0);
        assert_eq!(read.union_with(&read_b), 1);
        assert_eq!(acked.count_not_in(&read), 1);
        assert_eq!(acked.first_not_in(&read), Some(301));
        assert_eq!(read.count_not_in(&acked), 1);
        assert_eq!(read.first_not_in(&acked), Some(900));
        assert_eq!(read.len(), 500);
    }
}
