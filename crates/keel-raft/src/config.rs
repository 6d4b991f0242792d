//! Configuration of one Raft node, validated once at construction.

use std::fmt;

use keel_types::{Duration, NodeId};

/// A deliberately planted bug. The model checker and the simulator must catch each one; a test
/// per mutant proves they do, so we know the checks can fail. Production configs use `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// Skip the quorum rules in [`Config::validate`], so R + E <= N or E <= N/2 is accepted.
    UnsafeQuorums,
    /// A leader commits an entry of an older term once a replication quorum holds it
    /// (Raft paper, figure 8).
    CommitOlderTermByCount,
    /// A restarting node forgets whom it voted for in its current term.
    ForgetVoteOnRestart,
    /// Election timeouts are not randomized: every node always waits the minimum.
    FixedElectionTimeout,
    /// A voter whose Raft state is gone (a replaced disk) trusts its empty state as a new
    /// cluster's voter does: it votes at once, for candidates that lack entries committed with
    /// its forgotten acknowledgements, and may vote twice in a term.
    TrustLostState,
}

/// The configuration of one node. Every node of a cluster must agree on `voters`, `observers`
/// and both quorum sizes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// This node.
    pub id: NodeId,
    /// Voting members, including this node unless it is an observer.
    pub voters: Vec<NodeId>,
    /// Non-voting members that replicate the log (brokers following the metadata log).
    pub observers: Vec<NodeId>,
    /// R: how many voters (the leader included) must hold an entry before it commits.
    pub replication_quorum: usize,
    /// E: how many votes (the candidate's own included) win an election.
    pub election_quorum: usize,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub heartbeat_interval: Duration,
    /// Most entries in one AppendEntries message.
    pub append_entries_max: usize,
    /// Most entries the leader holds beyond the commit index before it refuses proposals.
    pub uncommitted_entries_max: usize,
    /// A leadership transfer that has not completed within this time is abandoned.
    pub transfer_timeout: Duration,
    pub mutation: Option<Mutation>,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// A voter in a cluster of `voters` with majority quorums and timeouts close to Kafka's
    /// KRaft controller quorum: an election after 1-2 s without a leader, heartbeats every 250 ms.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        let majority = voters.len() / 2 + 1;
        Config {
            id,
            voters,
            observers: Vec::new(),
            replication_quorum: majority,
            election_quorum: majority,
            election_timeout_min: Duration::from_millis(1000),
            election_timeout_max: Duration::from_millis(2000),
            heartbeat_interval: Duration::from_millis(250),
            append_entries_max: 256,
            uncommitted_entries_max: 4096,
            transfer_timeout: Duration::from_millis(2000),
            mutation: None,
        }
    }

    /// Checks the rules every node relies on. The quorum rules are the heart of flexible Raft:
    /// every election quorum must intersect every replication quorum (R + E > N), so a new
    /// leader always hears from a voter holding each committed entry; and any two election
    /// quorums must intersect (E > N/2), so two leaders cannot be elected in one term.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = self.voters.len();
        let err = |m: String| Err(ConfigError(m));
        if n == 0 {
            return err("a Raft cluster needs at least one voter".into());
        }
        let mut sorted = self.voters.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != n {
            return err(format!("voters {:?} list a node twice", self.voters));
        }
        if self.observers.iter().any(|o| self.voters.contains(o)) {
            return err("a node cannot be both a voter and an observer".into());
        }
        if !self.voters.contains(&self.id) && !self.observers.contains(&self.id) {
            return err(format!("node {} is neither a voter nor an observer", self.id));
        }
        let (r, e) = (self.replication_quorum, self.election_quorum);
        if r == 0 || r > n || e == 0 || e > n {
            return err(format!(
                "quorums must lie between 1 and the number of voters ({n}); got replication quorum {r}, election quorum {e}"
            ));
        }
        if self.mutation != Some(Mutation::UnsafeQuorums) {
            if r + e <= n {
                return err(format!(
                    "replication quorum {r} + election quorum {e} must exceed the {n} voters, or a new leader \
                     could be elected by voters that all miss a committed entry; raise one of them"
                ));
            }
            if 2 * e <= n {
                return err(format!(
                    "election quorum {e} must be more than half of the {n} voters, or two leaders could be \
                     elected in one term; use at least {}",
                    n / 2 + 1
                ));
            }
        }
        if self.election_timeout_min.0 == 0 || self.election_timeout_min > self.election_timeout_max {
            return err("election timeout must be positive with min <= max".into());
        }
        if self.heartbeat_interval.0 == 0 || self.heartbeat_interval >= self.election_timeout_min {
            return err(format!(
                "heartbeat interval ({} ms) must be positive and below the minimum election timeout ({} ms), \
                 or followers start elections against a healthy leader",
                self.heartbeat_interval.as_millis(),
                self.election_timeout_min.as_millis()
            ));
        }
        if self.append_entries_max == 0 || self.uncommitted_entries_max == 0 {
            return err("append_entries_max and uncommitted_entries_max must be positive".into());
        }
        Ok(())
    }

    pub fn is_voter(&self) -> bool {
        self.voters.contains(&self.id)
    }

    /// Every other member, voters first, each list in configuration order.
    pub fn peers(&self) -> impl Iterator<Item = NodeId> + '_ {
        let id = self.id;
        self.voters.iter().chain(self.observers.iter()).copied().filter(move |p| *p != id)
    }

    pub(crate) fn mutated(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }
}

/// All (R, E) pairs that [`Config::validate`] accepts for `n` voters, smallest R first.
pub fn valid_quorums(n: usize) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for r in 1..=n {
        for e in 1..=n {
            if r + e > n && 2 * e > n {
                pairs.push((r, e));
            }
        }
    }
    pairs
}

/// The largest index that at least `quorum` of `match_indexes` have reached.
pub(crate) fn quorum_index(match_indexes: &mut [u64], quorum: usize) -> u64 {
    assert!(quorum >= 1 && quorum <= match_indexes.len(), "quorum {quorum} of {}", match_indexes.len());
    match_indexes.sort_unstable_by(|a, b| b.cmp(a));
    match_indexes[quorum - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(n: usize, r: usize, e: usize) -> Config {
        let voters = (1..=n as i32).map(NodeId).collect();
        Config { replication_quorum: r, election_quorum: e, ..Config::new(NodeId(1), voters) }
    }

    #[test]
    fn quorum_rules_table() {
        // (n, r, e, valid)
        let table = [
            (1, 1, 1, true),
            (3, 2, 2, true),
            (3, 1, 3, true),
            (3, 3, 2, true),
            (3, 1, 2, false), // R + E = N: a committed entry can be missed by the electors
            (3, 3, 1, false), // E <= N/2: two leaders per term
            (3, 2, 1, false),
            (4, 2, 3, true),
            (4, 3, 2, false), // E = N/2
            (5, 3, 3, true),
            (5, 2, 4, true),
            (5, 1, 5, true),
            (5, 4, 3, true),
            (5, 2, 3, false),
            (5, 5, 2, false),
        ];
        for (n, r, e, valid) in table {
            let result = config(n, r, e).validate();
            assert_eq!(result.is_ok(), valid, "n={n} r={r} e={e}: {result:?}");
        }
        let message = config(3, 1, 2).validate().unwrap_err().0;
        assert!(message.contains("must exceed the 3 voters"), "{message}");
    }

    #[test]
    fn unsafe_quorums_mutation_skips_only_the_quorum_rules() {
        let mut c = config(3, 1, 2);
        c.mutation = Some(Mutation::UnsafeQuorums);
        assert!(c.validate().is_ok());
        c.replication_quorum = 4;
        assert!(c.validate().is_err());
    }

    #[test]
    fn valid_pairs_for_three_and_five() {
        assert_eq!(valid_quorums(3), vec![(1, 3), (2, 2), (2, 3), (3, 2), (3, 3)]);
        assert_eq!(valid_quorums(5).len(), 12);
        assert!(valid_quorums(5).contains(&(2, 4)));
        assert!(!valid_quorums(5).contains(&(2, 3)));
    }

    #[test]
    fn quorum_index_picks_the_rth_largest() {
        assert_eq!(quorum_index(&mut [5, 3, 9], 1), 9);
        assert_eq!(quorum_index(&mut [5, 3, 9], 2), 5);
        assert_eq!(quorum_index(&mut [5, 3, 9], 3), 3);
        assert_eq!(quorum_index(&mut [0], 1), 0);
    }

    #[test]
    fn other_rules() {
        let mut c = config(3, 2, 2);
        c.heartbeat_interval = c.election_timeout_min;
        assert!(c.validate().unwrap_err().0.contains("heartbeat"));
        let mut c = config(3, 2, 2);
        c.id = NodeId(9);
        assert!(c.validate().is_err());
        let mut c = config(3, 2, 2);
        c.voters.push(NodeId(2));
        assert!(c.validate().is_err());
        let mut c = config(3, 2, 2);
        c.observers.push(NodeId(2));
        assert!(c.validate().is_err());
    }
}
