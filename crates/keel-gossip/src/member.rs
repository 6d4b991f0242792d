//! Members, incarnations, statuses and the merge rule.

use std::fmt;

use keel_types::NodeId;

/// How many times a member has restarted or refuted a suspicion. Only the member itself ever
/// raises it, and it is durable, so it never goes back: a record with a higher incarnation is
/// always newer news about that member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Incarnation(pub u64);

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// What one node believes about a member. The order is the merge rule's order at equal
/// incarnations: a later variant beats an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    Alive,
    /// A probe went unanswered; the member is declared Dead unless it refutes within the
    /// suspicion timeout.
    Suspect,
    Dead,
    /// The member said goodbye. Only the member itself announces it.
    Left,
}

impl Status {
    pub(crate) fn code(self) -> u8 {
        match self {
            Status::Alive => 0,
            Status::Suspect => 1,
            Status::Dead => 2,
            Status::Left => 3,
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Status> {
        match code {
            0 => Some(Status::Alive),
            1 => Some(Status::Suspect),
            2 => Some(Status::Dead),
            3 => Some(Status::Left),
            _ => None,
        }
    }

    /// Alive or Suspect: the member is believed to be running.
    pub fn is_up(self) -> bool {
        matches!(self, Status::Alive | Status::Suspect)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Alive => "alive",
            Status::Suspect => "suspect",
            Status::Dead => "dead",
            Status::Left => "left",
        })
    }
}

/// Where a member receives datagrams ("host:port"), opaque to the core. At most
/// [`crate::ADDRESS_BYTES_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address(pub String);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Address {
        Address(s.to_string())
    }
}

/// One member as a node sees it, and as it is gossiped.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Member {
    pub id: NodeId,
    pub address: Address,
    pub incarnation: Incarnation,
    pub status: Status,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}:{}@{}", self.id.0, self.status, self.incarnation)
    }
}

/// The merge rule: does the record (`incarnation`, `status`) replace what a node holds? A
/// higher incarnation wins; at equal incarnations Left beats Dead beats Suspect beats Alive.
/// Equal records do not replace each other, so merging is idempotent and every update is
/// passed on at most once per change.
pub fn supersedes(incoming: (Incarnation, Status), held: (Incarnation, Status)) -> bool {
    incoming.0 > held.0 || (incoming.0 == held.0 && incoming.1 > held.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_rule_table() {
        use Status::*;
        let i = Incarnation;
        // (incoming, held, replaces)
        let table = [
            ((i(2), Alive), (i(1), Dead), true), // refutation: a higher incarnation beats any status
            ((i(2), Alive), (i(1), Left), true), // a member that left and came back
            ((i(1), Dead), (i(2), Alive), false), // stale accusation
            ((i(1), Suspect), (i(1), Alive), true),
            ((i(1), Dead), (i(1), Suspect), true),
            ((i(1), Dead), (i(1), Alive), true),
            ((i(1), Left), (i(1), Dead), true),
            ((i(1), Alive), (i(1), Suspect), false), // hearing Alive at the same incarnation does not refute
            ((i(1), Alive), (i(1), Dead), false),
            ((i(1), Suspect), (i(1), Dead), false),
            ((i(1), Alive), (i(1), Alive), false), // idempotent
            ((i(1), Dead), (i(1), Dead), false),
        ];
        for (incoming, held, replaces) in table {
            assert_eq!(supersedes(incoming, held), replaces, "{incoming:?} over {held:?}");
        }
    }

    #[test]
    fn merge_rule_is_a_strict_total_order() {
        use Status::*;
        let records: Vec<(Incarnation, Status)> =
            (0..3).flat_map(|n| [Alive, Suspect, Dead, Left].into_iter().map(move |s| (Incarnation(n), s))).collect();
        for a in &records {
            assert!(!supersedes(*a, *a));
            for b in &records {
                if a != b {
                    // Exactly one of two different records wins, so every node that has seen the
                    // same records holds the same one, whatever order they arrived in.
                    assert!(supersedes(*a, *b) ^ supersedes(*b, *a), "{a:?} {b:?}");
                }
                for c in &records {
                    if supersedes(*a, *b) && supersedes(*b, *c) {
                        assert!(supersedes(*a, *c));
                    }
                }
            }
        }
    }

    #[test]
    fn status_codes_round_trip() {
        for s in [Status::Alive, Status::Suspect, Status::Dead, Status::Left] {
            assert_eq!(Status::from_code(s.code()), Some(s));
        }
        assert_eq!(Status::from_code(4), None);
    }
}
