//! The rules every partition change follows, as pure functions over one partition's registration.
//!
//! Kafka's design with KIP-966 (Eligible Leader Replicas), which makes replication safe when
//! brokers do not fsync:
//!
//! - The leader is elected from the ISR (in replica order, so the preferred replica wins when it
//!   can); failing that from the ELR; failing that the partition stays leaderless, unless unclean
//!   leader election is enabled for the topic.
//! - ELR: a replica removed from the ISR while that leaves |ISR| < min ISR joins the ELR. It held
//!   every record below the high watermark when it left, and the high watermark cannot advance
//!   while |ISR| < min ISR, so it is as good a leader as any ISR member. The ISR may become empty
//!   (the last member leaves for the ELR instead of staying). The ELR is cleared once
//!   |ISR| >= min ISR again; a member that rejoins the ISR leaves the ELR.
//! - Unclean shutdown: a broker whose clean-shutdown marker does not name the broker epoch it
//!   is registered with (no marker, an old one, an empty data directory) may have lost its
//!   unflushed tail. Its replicas leave the ISR, the ELR and leadership at once, and come back
//!   only through the leader's ISR expansion, which requires them to have caught up.
//! - Last-known ELR: the ELR members removed for an unclean shutdown while the partition had no
//!   other eligible replica. They held committed data once; unclean leader election (if
//!   enabled) prefers them. Cleared when the partition has a clean leader again.
//! - Every change bumps the partition epoch; every leader change bumps the leader epoch.
//!   AlterPartition from the leader is a compare-and-set on the partition epoch.
//!
//! [`Mutation::NoElr`] plants Kafka's pre-KIP-966 behaviour, so the checker can show what ELR
//! prevents: the last replica standing.

use keel_types::{ErrorCode, LeaderEpoch, NodeId, PartitionEpoch};

/// A deliberately planted bug in the partition rules or in the controller around them, for
/// checker and simulator tests (`ControllerConfig::mutation`, `Eligibility::mutation`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Mutation {
    /// No ELR and no unclean-shutdown rule: the last ISR member stays in the ISR when its broker
    /// is fenced and is elected again when it returns, whatever its disk lost.
    NoElr,
    /// The controller takes an ISR addition whatever broker epoch the leader vouches for
    /// (KIP-903's check in `Controller::alter_partition` skipped), leaving the leader's own
    /// check as the only one.
    NoBrokerEpochCheck,
    /// The controller does not revisit a topic's partitions when its `min.insync.replicas`
    /// changes, so an ELR outlives the ISR meeting the new minimum.
    IgnoreMinIsrChange,
}

/// What a partition decision needs to know about the rest of the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Eligibility<'a> {
    /// The topic's `min.insync.replicas`.
    pub min_isr: usize,
    /// The topic's `unclean.leader.election.enable`.
    pub unclean_leader_election: bool,
    /// Brokers that are registered, unfenced and not shutting down: the only ones that may lead
    /// or join the ISR.
    pub active: &'a [NodeId],
    pub mutation: Option<Mutation>,
}

impl Eligibility<'_> {
    fn is_active(&self, node: NodeId) -> bool {
        self.active.contains(&node)
    }

    fn elr_enabled(&self) -> bool {
        self.mutation != Some(Mutation::NoElr)
    }
}

/// One partition as the metadata log records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct PartitionRegistration {
    /// Assigned replicas; the first is the preferred leader.
    pub replicas: Vec<NodeId>,
    pub leader: Option<NodeId>,
    pub leader_epoch: LeaderEpoch,
    /// Bumped by every change; the compare-and-set version of AlterPartition.
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
    /// Kept sorted: the rules treat it as a set, so equal sets are equal registrations.
    pub elr: Vec<NodeId>,
    /// Kept sorted, as `elr`.
    pub last_known_elr: Vec<NodeId>,
}

/// An ISR change the leader asks for (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct AlterIsr {
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub new_isr: Vec<NodeId>,
}

impl PartitionRegistration {
    /// A new partition: every active replica is in the ISR and the first of them leads.
    pub fn new(replicas: Vec<NodeId>, eligibility: &Eligibility) -> PartitionRegistration {
        let isr: Vec<NodeId> = replicas.iter().copied().filter(|&r| eligibility.is_active(r)).collect();
        let leader = isr.first().copied();
        PartitionRegistration {
            replicas,
            leader,
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            isr,
            elr: Vec::new(),
            last_known_elr: Vec::new(),
        }
    }

    /// The broker of `node` was fenced or is shutting down: it leaves the ISR (for the ELR if
    /// that leaves the ISR short) and leadership. Returns whether anything changed.
    pub fn remove_replica(&mut self, node: NodeId, eligibility: &Eligibility) -> bool {
        let before = self.clone();
        if self.isr.contains(&node) {
            let new_isr: Vec<NodeId> = self.isr.iter().copied().filter(|&r| r != node).collect();
            if eligibility.elr_enabled() || !new_isr.is_empty() {
                self.set_isr(new_isr, eligibility);
            }
        }
        if self.leader == Some(node) {
            self.leader = None;
        }
        self.elect(eligibility, Some(node));
        self.finish(before)
    }

    /// The broker of `node` registered without a clean-shutdown marker: it may have lost its
    /// unflushed tail, so it is no longer a leader, ISR or ELR member until it catches up.
    /// Except for the only replica of a partition: no other copy could be preferred, and what
    /// its log lost nothing else holds, so it stays eligible (keel differs from KIP-966, which
    /// leaves such a partition offline until an unclean election; a kill -9 of a single node
    /// must not take every partition offline).
    pub fn handle_unclean_shutdown(&mut self, node: NodeId, eligibility: &Eligibility) -> bool {
        if self.replicas == [node] {
            return false;
        }
        if !eligibility.elr_enabled() {
            let changed = self.remove_replica(node, eligibility);
            return self.try_elect(eligibility) || changed;
        }
        let before = self.clone();
        if self.isr.contains(&node) {
            let new_isr: Vec<NodeId> = self.isr.iter().copied().filter(|&r| r != node).collect();
            self.set_isr(new_isr, eligibility);
        }
        if self.elr.contains(&node) {
            self.elr.retain(|&r| r != node);
            if self.isr.is_empty() && self.elr.is_empty() && !self.last_known_elr.contains(&node) {
                self.last_known_elr.push(node);
                self.last_known_elr.sort_unstable();
            }
        }
        if self.leader == Some(node) {
            self.leader = None;
        }
        self.elect(eligibility, Some(node));
        self.finish(before)
    }

    /// Elects a leader if the partition has none and a replica is eligible (after a broker was
    /// unfenced, or the topic's unclean election setting changed). Returns whether it changed.
    pub fn try_elect(&mut self, eligibility: &Eligibility) -> bool {
        let before = self.clone();
        self.elect(eligibility, None);
        self.finish(before)
    }

    /// The topic's `min.insync.replicas` changed. Once the ISR meets the new minimum, the high
    /// watermark may advance without the ELR members, so they no longer hold every committed
    /// record: the ELR and last-known ELR are cleared, as [`Self::alter_isr`] would. Returns
    /// whether anything changed.
    pub fn handle_min_isr_change(&mut self, eligibility: &Eligibility) -> bool {
        let before = self.clone();
        let isr = self.isr.clone();
        self.set_isr(isr, eligibility);
        self.finish(before)
    }

    /// Moves leadership to the preferred replica when it is active, in the ISR and not leading.
    pub fn elect_preferred(&mut self, eligibility: &Eligibility) -> bool {
        let Some(&preferred) = self.replicas.first() else { return false };
        if self.leader == Some(preferred) || !self.isr.contains(&preferred) || !eligibility.is_active(preferred) {
            return false;
        }
        let before = self.clone();
        self.leader = Some(preferred);
        self.finish(before)
    }

    /// The leader's AlterPartition: a compare-and-set on the partition epoch. Additions must be
    /// active brokers (the leader vouches that they caught up).
    pub fn alter_isr(&mut self, request: &AlterIsr, eligibility: &Eligibility) -> Result<(), ErrorCode> {
        if self.leader != Some(request.leader) {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        if request.leader_epoch != self.leader_epoch {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        if request.partition_epoch != self.partition_epoch {
            return Err(ErrorCode::InvalidUpdateVersion);
        }
        let mut new_isr = Vec::with_capacity(request.new_isr.len());
        for &node in &request.new_isr {
            if !self.replicas.contains(&node) || new_isr.contains(&node) {
                return Err(ErrorCode::InvalidRequest);
            }
            if !self.isr.contains(&node) && !eligibility.is_active(node) {
                return Err(ErrorCode::IneligibleReplica);
            }
            new_isr.push(node);
        }
        if !new_isr.contains(&request.leader) {
            return Err(ErrorCode::InvalidRequest);
        }
        let before = self.clone();
        self.set_isr(new_isr, eligibility);
        self.finish(before);
        Ok(())
    }

    /// Replaces the ISR, keeping the ELR rule.
    fn set_isr(&mut self, new_isr: Vec<NodeId>, eligibility: &Eligibility) {
        if !eligibility.elr_enabled() {
            self.isr = new_isr;
            return;
        }
        if new_isr.len() >= eligibility.min_isr {
            self.elr.clear();
            self.last_known_elr.clear();
        } else {
            for &removed in &self.isr {
                if !new_isr.contains(&removed) && !self.elr.contains(&removed) {
                    self.elr.push(removed);
                }
            }
            self.elr.retain(|r| !new_isr.contains(r));
            self.elr.sort_unstable();
        }
        self.isr = new_isr;
    }

    /// Elects a leader if there is none, never `exclude`.
    fn elect(&mut self, eligibility: &Eligibility, exclude: Option<NodeId>) {
        if self.leader.is_some() {
            return;
        }
        let eligible = |r: NodeId| eligibility.is_active(r) && Some(r) != exclude;
        let in_isr = self.replicas.iter().copied().find(|&r| self.isr.contains(&r) && eligible(r));
        if let Some(leader) = in_isr {
            self.leader = Some(leader);
            return;
        }
        if eligibility.elr_enabled() {
            let in_elr = self.replicas.iter().copied().find(|&r| self.elr.contains(&r) && eligible(r));
            if let Some(leader) = in_elr {
                self.elr.retain(|&r| r != leader);
                self.isr = vec![leader];
                // Found by `keel check isr --min-isr-changes`: after min ISR was lowered, the
                // new leader alone may meet it, and the HW may then advance without the rest of
                // the ELR, so they are no longer safe leaders.
                if self.isr.len() >= eligibility.min_isr {
                    self.elr.clear();
                }
                self.last_known_elr.clear();
                self.leader = Some(leader);
                return;
            }
        }
        if eligibility.unclean_leader_election {
            let preferred = self.replicas.iter().copied().find(|&r| self.last_known_elr.contains(&r) && eligible(r));
            let any = self.replicas.iter().copied().find(|&r| eligible(r));
            if let Some(leader) = preferred.or(any) {
                self.isr = vec![leader];
                self.elr.clear();
                self.last_known_elr.clear();
                self.leader = Some(leader);
            }
        }
    }

    /// Bumps the epochs once for everything that changed since `before`.
    fn finish(&mut self, before: PartitionRegistration) -> bool {
        let changed = *self != before;
        if changed {
            self.partition_epoch = before.partition_epoch.next();
        }
        if self.leader != before.leader {
            self.leader_epoch = LeaderEpoch(before.leader_epoch.0 + 1);
        }
        changed
    }

    /// Structural invariants of one registration.
    pub fn check_invariants(&self, eligibility: &Eligibility) -> Result<(), String> {
        let sets = [("ISR", &self.isr), ("ELR", &self.elr), ("last-known ELR", &self.last_known_elr)];
        for (name, set) in sets {
            for (i, node) in set.iter().enumerate() {
                if !self.replicas.contains(node) {
                    return Err(format!("{name} member {node} is not a replica of {:?}", self.replicas));
                }
                if set[..i].contains(node) {
                    return Err(format!("{name} {set:?} lists {node} twice"));
                }
            }
        }
        if let Some(leader) = self.leader {
            if !self.isr.contains(&leader) {
                return Err(format!("leader {leader} is not in the ISR {:?}", self.isr));
            }
        }
        if let Some(node) = self.elr.iter().find(|r| self.isr.contains(r)) {
            return Err(format!("{node} is in both the ISR {:?} and the ELR {:?}", self.isr, self.elr));
        }
        if eligibility.elr_enabled() && self.isr.len() >= eligibility.min_isr && !self.elr.is_empty() {
            return Err(format!("ELR {:?} kept while the ISR {:?} meets min ISR", self.elr, self.isr));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(ids: &[i32]) -> Vec<NodeId> {
        ids.iter().map(|&i| NodeId(i)).collect()
    }

    fn rules(active: &[NodeId]) -> Eligibility<'_> {
        Eligibility { min_isr: 2, unclean_leader_election: false, active, mutation: None }
    }

    fn three() -> PartitionRegistration {
        let active = n(&[1, 2, 3]);
        PartitionRegistration::new(n(&[1, 2, 3]), &rules(&active))
    }

    #[test]
    fn new_partition_leads_with_the_first_active_replica() {
        let active = n(&[2, 3]);
        let p = PartitionRegistration::new(n(&[1, 2, 3]), &rules(&active));
        assert_eq!(p.leader, Some(NodeId(2)));
        assert_eq!(p.isr, n(&[2, 3]));
        p.check_invariants(&rules(&active)).unwrap();
    }

    #[test]
    fn fencing_the_leader_elects_from_the_isr_and_bumps_epochs() {
        let mut p = three();
        let active = n(&[2, 3]);
        assert!(p.remove_replica(NodeId(1), &rules(&active)));
        assert_eq!(p.leader, Some(NodeId(2)));
        assert_eq!(p.isr, n(&[2, 3]));
        assert!(p.elr.is_empty(), "ISR still meets min ISR");
        assert_eq!(p.leader_epoch, LeaderEpoch(1));
        assert_eq!(p.partition_epoch, PartitionEpoch(1));
        assert!(!p.remove_replica(NodeId(1), &rules(&active)), "a second fence changes nothing");
        assert_eq!(p.partition_epoch, PartitionEpoch(1));
    }

    #[test]
    fn shrinking_below_min_isr_fills_the_elr_and_the_isr_may_empty() {
        let mut p = three();
        let active = n(&[1, 3]);
        p.remove_replica(NodeId(2), &rules(&active));
        assert_eq!((p.isr.clone(), p.elr.clone()), (n(&[1, 3]), n(&[])));
        let active = n(&[1]);
        p.remove_replica(NodeId(3), &rules(&active));
        assert_eq!((p.isr.clone(), p.elr.clone()), (n(&[1]), n(&[3])));
        let active = n(&[]);
        p.remove_replica(NodeId(1), &rules(&active));
        assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (None, n(&[]), n(&[1, 3])));
        p.check_invariants(&rules(&active)).unwrap();
        // Broker 3 returns cleanly: elected from the ELR.
        let active = n(&[3]);
        assert!(p.try_elect(&rules(&active)));
        assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (Some(NodeId(3)), n(&[3]), n(&[1])));
        p.check_invariants(&rules(&active)).unwrap();
    }

    #[test]
    fn an_unclean_replica_leaves_the_elr_and_cannot_lead() {
        let mut p = three();
        let active = n(&[1]);
        p.remove_replica(NodeId(2), &rules(&active));
        p.remove_replica(NodeId(3), &rules(&active));
        let active = n(&[]);
        p.remove_replica(NodeId(1), &rules(&active));
        assert_eq!(p.elr, n(&[1, 3]), "2 left while the ISR still met min ISR: not eligible");
        // The last leader comes back after losing its tail: not eligible.
        let active = n(&[1]);
        p.handle_unclean_shutdown(NodeId(1), &rules(&active));
        assert_eq!((p.leader, p.elr.clone()), (None, n(&[3])));
        // Both others come back uncleanly too: nobody is eligible, and they are remembered.
        let active = n(&[1, 2, 3]);
        p.handle_unclean_shutdown(NodeId(2), &rules(&active));
        p.handle_unclean_shutdown(NodeId(3), &rules(&active));
        assert_eq!((p.leader, p.elr.clone(), p.last_known_elr.clone()), (None, n(&[]), n(&[3])));
        // Unclean election prefers the last-known ELR.
        let unclean = Eligibility { unclean_leader_election: true, ..rules(&active) };
        assert!(p.try_elect(&unclean));
        assert_eq!((p.leader, p.isr.clone(), p.last_known_elr.clone()), (Some(NodeId(3)), n(&[3]), n(&[])));
        p.check_invariants(&unclean).unwrap();
    }

    #[test]
    fn without_elr_the_last_replica_standing_is_reelected() {
        let mut p = three();
        let active = n(&[1]);
        let no_elr = |active| Eligibility { mutation: Some(Mutation::NoElr), ..rules(active) };
        p.remove_replica(NodeId(2), &no_elr(&active));
        p.remove_replica(NodeId(3), &no_elr(&active));
        let active = n(&[2, 3]);
        p.remove_replica(NodeId(1), &no_elr(&active));
        assert_eq!((p.leader, p.isr.clone()), (None, n(&[1])), "the last member stays in the ISR");
        let active = n(&[1, 2, 3]);
        p.handle_unclean_shutdown(NodeId(1), &no_elr(&active));
        assert_eq!(p.leader, Some(NodeId(1)), "re-elected despite its unclean shutdown");
    }

    #[test]
    fn alter_isr_is_a_compare_and_set() {
        let mut p = three();
        let active = n(&[1, 2, 3]);
        let shrink = AlterIsr {
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            new_isr: n(&[1]),
        };
        p.alter_isr(&shrink, &rules(&active)).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.partition_epoch), (n(&[1]), n(&[2, 3]), PartitionEpoch(1)));
        assert_eq!(p.alter_isr(&shrink, &rules(&active)), Err(ErrorCode::InvalidUpdateVersion));
        let stale = AlterIsr { leader_epoch: LeaderEpoch(7), partition_epoch: PartitionEpoch(1), ..shrink.clone() };
        assert_eq!(p.alter_isr(&stale, &rules(&active)), Err(ErrorCode::FencedLeaderEpoch));
        let not_leader = AlterIsr { leader: NodeId(2), partition_epoch: PartitionEpoch(1), ..shrink.clone() };
        assert_eq!(p.alter_isr(&not_leader, &rules(&active)), Err(ErrorCode::NotLeaderOrFollower));
        let fenced = n(&[1, 2]);
        let expand = AlterIsr { partition_epoch: PartitionEpoch(1), new_isr: n(&[1, 3]), ..shrink.clone() };
        assert_eq!(p.alter_isr(&expand, &rules(&fenced)), Err(ErrorCode::IneligibleReplica));
        let without_leader = AlterIsr { partition_epoch: PartitionEpoch(1), new_isr: n(&[2, 3]), ..shrink.clone() };
        assert_eq!(p.alter_isr(&without_leader, &rules(&active)), Err(ErrorCode::InvalidRequest));
        p.alter_isr(&expand, &rules(&active)).unwrap();
        assert_eq!((p.isr.clone(), p.elr.clone(), p.partition_epoch), (n(&[1, 3]), n(&[]), PartitionEpoch(2)));
        p.check_invariants(&rules(&active)).unwrap();
    }

    #[test]
    fn lowering_min_isr_clears_the_elr_once_the_isr_meets_it() {
        let mut p = three();
        let active = n(&[1, 2, 3]);
        let shrink = AlterIsr {
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            new_isr: n(&[1]),
        };
        p.alter_isr(&shrink, &rules(&active)).unwrap();
        assert_eq!(p.elr, n(&[2, 3]));
        let three_needed = Eligibility { min_isr: 3, ..rules(&active) };
        assert!(!p.handle_min_isr_change(&three_needed), "raising it keeps the ELR");
        let one_needed = Eligibility { min_isr: 1, ..rules(&active) };
        assert!(p.handle_min_isr_change(&one_needed));
        assert_eq!((p.isr.clone(), p.elr.clone(), p.partition_epoch), (n(&[1]), n(&[]), PartitionEpoch(2)));
        p.check_invariants(&one_needed).unwrap();
    }

    #[test]
    fn a_leader_from_the_elr_that_meets_a_lowered_min_isr_clears_the_elr() {
        let mut p = three();
        let active = n(&[1, 3]);
        p.remove_replica(NodeId(2), &rules(&active));
        let active = n(&[3]);
        p.remove_replica(NodeId(1), &rules(&active));
        let active = n(&[]);
        p.remove_replica(NodeId(3), &rules(&active));
        assert_eq!((p.isr.clone(), p.elr.clone()), (n(&[]), n(&[1, 3])));
        let active = n(&[1]);
        let lowered = Eligibility { min_isr: 1, ..rules(&active) };
        assert!(p.try_elect(&lowered));
        assert_eq!((p.leader, p.isr.clone(), p.elr.clone()), (Some(NodeId(1)), n(&[1]), n(&[])));
        p.check_invariants(&lowered).unwrap();
    }

    #[test]
    fn preferred_leader_returns_when_in_the_isr() {
        let mut p = three();
        let active = n(&[2, 3]);
        p.remove_replica(NodeId(1), &rules(&active));
        let active = n(&[1, 2, 3]);
        assert!(!p.elect_preferred(&rules(&active)), "1 is not in the ISR yet");
        let expand = AlterIsr {
            leader: NodeId(2),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr: n(&[2, 3, 1]),
        };
        p.alter_isr(&expand, &rules(&active)).unwrap();
        assert!(p.elect_preferred(&rules(&active)));
        assert_eq!((p.leader, p.leader_epoch), (Some(NodeId(1)), LeaderEpoch(2)));
    }
}
