//! Small deterministic clusters driven by hand: messages delivered in order, disks that
//! complete every write at once unless a test holds them back.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_raft::{
    Apply, Config, Durable, Message, Mutation, Payload, ProposeError, Raft, RoleKind, Term, TransferError,
};
use keel_types::{Duration, Instant, NodeId, Rng};

struct Cluster {
    nodes: BTreeMap<NodeId, Raft>,
    disks: BTreeMap<NodeId, Durable>,
    applied: BTreeMap<NodeId, Vec<Vec<u8>>>,
    network: VecDeque<(NodeId, NodeId, Message)>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Nodes whose disk holds writes back.
    slow_disk: BTreeSet<NodeId>,
    held: BTreeMap<NodeId, Vec<keel_raft::Persist>>,
    now: Instant,
    rng: Rng,
}

fn ids(n: i32) -> Vec<NodeId> {
    (1..=n).map(NodeId).collect()
}

fn config(id: i32, voters: &[NodeId]) -> Config {
    Config {
        election_timeout_min: Duration::from_millis(150),
        election_timeout_max: Duration::from_millis(300),
        heartbeat_interval: Duration::from_millis(50),
        transfer_timeout: Duration::from_millis(500),
        ..Config::new(NodeId(id), voters.to_vec())
    }
}

impl Cluster {
    fn new(configs: Vec<Config>, seed: u64) -> Cluster {
        let mut rng = Rng::new(seed);
        let now = Instant::from_millis(1);
        let mut nodes = BTreeMap::new();
        for c in configs {
            let id = c.id;
            nodes.insert(id, Raft::new(c, now, &mut rng));
        }
        let disks = nodes.keys().map(|id| (*id, Durable::default())).collect();
        let applied = nodes.keys().map(|id| (*id, Vec::new())).collect();
        Cluster {
            nodes,
            disks,
            applied,
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            slow_disk: BTreeSet::new(),
            held: BTreeMap::new(),
            now,
            rng,
        }
    }

    fn voters(n: i32, seed: u64) -> Cluster {
        let v = ids(n);
        Cluster::new((1..=n).map(|i| config(i, &v)).collect(), seed)
    }

    /// Collects effects of every node: writes complete at once (unless held), messages queue.
    fn collect(&mut self) {
        for (id, node) in self.nodes.iter_mut() {
            loop {
                let persists = node.drain_persists();
                if persists.is_empty() {
                    break;
                }
                if self.slow_disk.contains(id) {
                    self.held.entry(*id).or_default().extend(persists);
                    continue;
                }
                let disk = self.disks.get_mut(id).unwrap();
                for p in &persists {
                    disk.apply(p);
                }
                node.handle_persisted(self.now, persists.last().unwrap().id);
            }
            for (to, m) in node.drain_messages() {
                self.network.push_back((*id, to, m));
            }
            while let Some(a) = node.poll_apply() {
                let log = self.applied.get_mut(id).unwrap();
                match a {
                    Apply::Entry(e) => {
                        if let Payload::Command(c) = e.payload {
                            log.push(c);
                        }
                    }
                    Apply::Snapshot(s) => {
                        *log = s.data.split(|b| *b == b',').filter(|c| !c.is_empty()).map(|c| c.to_vec()).collect();
                    }
                }
            }
            node.check_invariants().unwrap();
        }
    }

    fn release_disk(&mut self, id: NodeId) {
        self.slow_disk.remove(&id);
        let held = self.held.remove(&id).unwrap_or_default();
        let disk = self.disks.get_mut(&id).unwrap();
        for p in &held {
            disk.apply(p);
        }
        if let Some(last) = held.last() {
            self.nodes.get_mut(&id).unwrap().handle_persisted(self.now, last.id);
        }
        self.collect();
    }

    fn deliver_all(&mut self) {
        let mut budget = 100_000;
        self.collect();
        while let Some((from, to, m)) = self.network.pop_front() {
            budget -= 1;
            assert!(budget > 0, "message storm");
            if self.cut.contains(&(from, to)) {
                continue;
            }
            if let Some(node) = self.nodes.get_mut(&to) {
                node.handle_message(self.now, &mut self.rng, from, m);
            }
            self.collect();
        }
    }

    /// Advances time in 5 ms steps, ticking every node and delivering everything.
    fn run_for(&mut self, ms: u64) {
        for _ in 0..ms / 5 {
            self.now = self.now + Duration::from_millis(5);
            for node in self.nodes.values_mut() {
                node.handle_tick(self.now, &mut self.rng);
            }
            self.deliver_all();
        }
    }

    fn leaders(&self) -> Vec<NodeId> {
        self.nodes.values().filter(|n| n.role() == RoleKind::Leader).map(|n| n.id()).collect()
    }

    fn leader(&self) -> NodeId {
        let leaders = self.leaders();
        assert_eq!(leaders.len(), 1, "expected one leader: {}", self.describe());
        leaders[0]
    }

    fn describe(&self) -> String {
        self.nodes.values().map(|n| n.describe()).collect::<Vec<_>>().join("\n")
    }

    fn propose(&mut self, command: &str) -> u64 {
        let leader = self.leader();
        let index = self.nodes.get_mut(&leader).unwrap().propose(self.now, command.as_bytes().to_vec()).unwrap();
        self.deliver_all();
        index
    }

    fn isolate(&mut self, id: NodeId) {
        for other in self.nodes.keys() {
            if *other != id {
                self.cut.insert((id, *other));
                self.cut.insert((*other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    /// The node's disk is replaced by an empty one and it starts again (with `mutation`).
    fn wipe(&mut self, id: NodeId, mutation: Option<Mutation>) {
        let config = Config { mutation, ..self.nodes[&id].config().clone() };
        self.disks.insert(id, Durable::lost());
        self.held.remove(&id);
        self.applied.insert(id, Vec::new());
        self.nodes.insert(id, Raft::restart(config, Durable::lost(), self.now, &mut self.rng));
    }

    fn restart(&mut self, id: NodeId) {
        let config = self.nodes[&id].config().clone();
        let durable = self.disks[&id].clone();
        self.applied.insert(id, Vec::new());
        self.nodes.insert(id, Raft::restart(config, durable, self.now, &mut self.rng));
    }
}

#[test]
fn elects_one_leader_and_replicates_to_everyone() {
    for seed in 0..20 {
        let mut c = Cluster::voters(3, seed);
        c.run_for(1000);
        let leader = c.leader();
        for i in 0..10 {
            c.propose(&format!("c{i}"));
        }
        c.run_for(200);
        let expected: Vec<Vec<u8>> = (0..10).map(|i| format!("c{i}").into_bytes()).collect();
        for (id, applied) in &c.applied {
            assert_eq!(applied, &expected, "seed {seed} node {id}\n{}", c.describe());
        }
        assert!(c.nodes.values().all(|n| n.term() == c.nodes[&leader].term()));
    }
}

#[test]
fn single_node_commits_alone() {
    let mut c = Cluster::voters(1, 1);
    c.run_for(400);
    c.propose("a");
    assert_eq!(c.applied[&NodeId(1)], vec![b"a".to_vec()]);
}

#[test]
fn pre_vote_keeps_a_rejoining_node_from_disrupting_the_leader() {
    let mut c = Cluster::voters(3, 7);
    c.run_for(1000);
    let leader = c.leader();
    let term = c.nodes[&leader].term();
    let loner = c.nodes.keys().copied().find(|id| *id != leader).unwrap();
    c.isolate(loner);
    c.run_for(3000);
    // Cut off, it keeps asking for pre-votes but never raises its term.
    assert_eq!(c.nodes[&loner].term(), term);
    c.heal();
    c.run_for(1000);
    assert_eq!(c.leader(), leader);
    assert_eq!(c.nodes[&leader].term(), term);
}

#[test]
fn leader_cut_off_from_its_election_quorum_steps_down() {
    let mut c = Cluster::voters(3, 3);
    c.run_for(1000);
    let old = c.leader();
    c.isolate(old);
    c.run_for(1000);
    assert_ne!(c.nodes[&old].role(), RoleKind::Leader, "{}", c.describe());
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], old);
    let now = c.now;
    assert_eq!(
        c.nodes.get_mut(&old).unwrap().propose(now, b"x".to_vec()),
        Err(ProposeError::NotLeader { leader: None })
    );
    c.heal();
    c.run_for(500);
    assert_eq!(c.leaders(), leaders);
}

#[test]
fn follower_truncates_uncommitted_entries_of_a_deposed_leader() {
    let mut c = Cluster::voters(3, 11);
    c.run_for(1000);
    let old = c.leader();
    c.propose("committed");
    c.isolate(old);
    // Accepted by the cut-off leader, never committed.
    c.nodes.get_mut(&old).unwrap().propose(c.now, b"lost".to_vec()).unwrap();
    c.deliver_all();
    c.run_for(1000);
    c.propose("new");
    c.heal();
    c.run_for(500);
    let leader = c.leader();
    assert_ne!(leader, old);
    for applied in c.applied.values() {
        assert_eq!(applied, &vec![b"committed".to_vec(), b"new".to_vec()], "{}", c.describe());
    }
}

#[test]
fn a_vote_leaves_only_after_it_is_on_disk() {
    let mut c = Cluster::voters(3, 5);
    // Nodes 2 and 3 write slowly: their grants must wait.
    c.slow_disk.insert(NodeId(2));
    c.slow_disk.insert(NodeId(3));
    c.run_for(1000);
    // Node 1 cannot win without a durable grant (and 2 and 3 cannot even ask for votes until
    // their own vote for themselves is durable).
    let granted_before_release = c.nodes.values().filter(|n| n.role() == RoleKind::Leader).count();
    c.release_disk(NodeId(2));
    c.release_disk(NodeId(3));
    c.run_for(1000);
    assert_eq!(granted_before_release, 0, "a leader was elected on grants that were not durable");
    c.leader();
}

#[test]
fn restart_keeps_term_vote_and_log() {
    let mut c = Cluster::voters(3, 9);
    c.run_for(1000);
    c.propose("a");
    c.propose("b");
    let follower = c.nodes.keys().copied().find(|id| *id != c.leader()).unwrap();
    let before = c.nodes[&follower].hard_state();
    c.restart(follower);
    assert_eq!(c.nodes[&follower].hard_state(), before);
    assert_eq!(c.nodes[&follower].last_index(), 3);
    c.run_for(200);
    assert_eq!(c.applied[&follower], vec![b"a".to_vec(), b"b".to_vec()]);
}

#[test]
fn forget_vote_mutation_forgets_it() {
    let v = ids(3);
    let mut configs: Vec<Config> = (1..=3).map(|i| config(i, &v)).collect();
    configs[1].mutation = Some(Mutation::ForgetVoteOnRestart);
    let mut c = Cluster::new(configs, 2);
    c.run_for(1000);
    c.restart(NodeId(2));
    assert_eq!(c.nodes[&NodeId(2)].hard_state().voted_for, None);
}

#[test]
fn snapshot_catches_up_a_far_behind_follower() {
    let mut c = Cluster::voters(3, 13);
    c.run_for(1000);
    let leader = c.leader();
    let lagger = c.nodes.keys().copied().find(|id| *id != leader).unwrap();
    c.isolate(lagger);
    for i in 0..20 {
        c.propose(&format!("c{i}"));
    }
    // The leader (and the other follower) compact everything applied.
    for (id, node) in c.nodes.iter_mut() {
        if *id != lagger {
            let applied = node.applied_index();
            let data: Vec<u8> = c.applied[id].join(&b","[..]);
            node.compact(applied, data);
        }
    }
    c.collect();
    assert!(c.nodes[&leader].snapshot().is_some());
    c.heal();
    c.run_for(500);
    let expected: Vec<Vec<u8>> = (0..20).map(|i| format!("c{i}").into_bytes()).collect();
    assert_eq!(c.applied[&lagger], expected, "{}", c.describe());
    assert_eq!(c.nodes[&lagger].snapshot().map(|s| s.index), c.nodes[&leader].snapshot().map(|s| s.index));
    // After the snapshot, replication continues with entries.
    c.propose("after");
    c.run_for(100);
    assert_eq!(c.applied[&lagger].last().unwrap(), b"after");
}

#[test]
fn leadership_transfer_moves_the_leader_without_waiting_for_timeouts() {
    let mut c = Cluster::voters(3, 17);
    c.run_for(1000);
    let old = c.leader();
    let target = c.nodes.keys().copied().find(|id| *id != old).unwrap();
    c.propose("a");
    let now = c.now;
    assert_eq!(c.nodes.get_mut(&old).unwrap().transfer_leadership(now, old), Err(TransferError::InvalidTarget));
    c.nodes.get_mut(&old).unwrap().transfer_leadership(now, target).unwrap();
    assert_eq!(c.nodes.get_mut(&old).unwrap().propose(now, b"x".to_vec()), Err(ProposeError::Busy));
    c.deliver_all();
    // No time has passed: the handover happened on messages alone.
    assert_eq!(c.leader(), target, "{}", c.describe());
    c.propose("b");
    // Followers learn the commit index with the next heartbeat.
    c.run_for(100);
    for applied in c.applied.values() {
        assert_eq!(applied, &vec![b"a".to_vec(), b"b".to_vec()]);
    }
}

#[test]
fn observers_replicate_but_never_vote_or_lead() {
    let v = ids(3);
    let mut configs: Vec<Config> = (1..=3).map(|i| Config { observers: vec![NodeId(4)], ..config(i, &v) }).collect();
    configs.push(Config { observers: vec![NodeId(4)], ..config(4, &v) });
    let mut c = Cluster::new(configs, 19);
    c.run_for(1000);
    c.leader();
    c.propose("a");
    c.run_for(100);
    assert_eq!(c.applied[&NodeId(4)], vec![b"a".to_vec()]);
    // With two voters gone, the observer cannot help form a quorum.
    let leader = c.leader();
    for id in ids(3) {
        if id != leader {
            c.isolate(id);
        }
    }
    c.run_for(2000);
    assert!(c.leaders().is_empty(), "{}", c.describe());
    assert_eq!(c.nodes[&NodeId(4)].role(), RoleKind::Follower);
}

#[test]
fn flexible_quorums_commit_with_r_and_elect_with_e() {
    // N = 3, R = 1, E = 3: the leader commits alone, but electing needs every voter.
    let v = ids(3);
    let configs: Vec<Config> =
        (1..=3).map(|i| Config { replication_quorum: 1, election_quorum: 3, ..config(i, &v) }).collect();
    let mut c = Cluster::new(configs, 23);
    c.run_for(1000);
    let leader = c.leader();
    for id in ids(3) {
        if id != leader {
            c.isolate(id);
        }
    }
    let index = c.nodes.get_mut(&leader).unwrap().propose(c.now, b"solo".to_vec()).unwrap();
    c.deliver_all();
    assert_eq!(c.nodes[&leader].commit_index(), index);
    // The leader loses its election quorum and steps down; nobody can be elected while cut.
    c.run_for(2000);
    assert!(c.leaders().is_empty());
    c.heal();
    c.run_for(2000);
    let new_leader = c.leader();
    // Whoever leads now must hold the entry committed by R = 1.
    assert!(c.nodes[&new_leader].last_index() >= index, "{}", c.describe());
    assert!(c.nodes[&new_leader].term() > Term(1));
}

#[test]
fn install_snapshot_discards_a_conflicting_log_tail() {
    // Found by keel-sim (`keel sim raft --seed 2`): a deposed leader holds a long tail of
    // uncommitted entries from its old term; the new leader's snapshot ends inside that tail
    // with an entry of a later term. The follower must drop its whole log, not keep the stale
    // entries after the snapshot index (Raft, figure 13, steps 6 and 7).
    let mut c = Cluster::voters(3, 11);
    c.run_for(1000);
    let old = c.leader();
    c.propose("a");
    c.isolate(old);
    for i in 0..20 {
        c.nodes.get_mut(&old).unwrap().propose(c.now, format!("stale{i}").into_bytes()).unwrap();
    }
    c.deliver_all();
    let stale_last = c.nodes[&old].last_index();
    c.run_for(1000);
    let leader = c.leader();
    assert_ne!(leader, old);
    for i in 0..3 {
        c.propose(&format!("b{i}"));
    }
    c.run_for(100);
    for (id, node) in c.nodes.iter_mut() {
        if *id != old {
            let applied = node.applied_index();
            node.compact(applied, c.applied[id].join(&b","[..]));
        }
    }
    c.collect();
    let snapshot = c.nodes[&leader].snapshot().cloned().unwrap();
    assert!(snapshot.index < stale_last, "the snapshot must end inside the stale tail");
    assert_ne!(c.nodes[&old].term_at(snapshot.index), Some(snapshot.term));
    c.heal();
    c.run_for(500);
    assert_eq!(c.nodes[&old].snapshot(), Some(&snapshot));
    assert_eq!(c.nodes[&old].entries(), c.nodes[&leader].entries(), "{}", c.describe());
    assert_eq!(c.disks[&old].entries, c.nodes[&leader].entries());
    let expected: Vec<Vec<u8>> = ["a", "b0", "b1", "b2"].iter().map(|s| s.as_bytes().to_vec()).collect();
    assert_eq!(c.applied[&old], expected);
}

#[test]
fn a_single_voter_leads_only_once_its_term_is_durable() {
    // Found by keel-sim (`keel sim raft --seed 78 --nodes 1 --observers 1`): a lone voter
    // elected itself before its new term reached disk and replicated entries of that term to
    // its observer; a crash lost the term, so after restart it was elected in the same term
    // again and appended other entries at the same indexes. The observer, whose entries
    // matched by index and term, kept the old ones and applied a different state.
    let configs: Vec<Config> =
        [1, 2].iter().map(|&i| Config { observers: vec![NodeId(2)], ..config(i, &ids(1)) }).collect();
    let mut c = Cluster::new(configs, 29);
    c.slow_disk.insert(NodeId(1));
    c.run_for(1000);
    let now = c.now;
    let early = c.nodes.get_mut(&NodeId(1)).unwrap().propose(now, b"x".to_vec());
    c.deliver_all();
    assert!(early.is_err(), "n1 led on a term that is not on disk: {}", c.describe());
    // Crash: the writes still held are lost.
    c.held.remove(&NodeId(1));
    c.slow_disk.remove(&NodeId(1));
    c.restart(NodeId(1));
    c.run_for(1000);
    c.propose("y");
    c.run_for(200);
    assert_eq!(c.applied[&NodeId(1)], vec![b"y".to_vec()]);
    assert_eq!(c.applied[&NodeId(2)], c.applied[&NodeId(1)], "{}", c.describe());
}

/// Commits `a` everywhere, then `x` on the leader and one follower while the other follower is
/// cut off, and replaces the disk of the follower that holds `x`. Returns the leader, the
/// follower whose disk was replaced and the one that lacks `x`.
fn commit_then_replace_a_disk(c: &mut Cluster, mutation: Option<Mutation>) -> (NodeId, NodeId, NodeId) {
    c.run_for(1000);
    let leader = c.leader();
    c.propose("a");
    let followers: Vec<NodeId> = c.nodes.keys().copied().filter(|id| *id != leader).collect();
    let (wiped, behind) = (followers[0], followers[1]);
    c.isolate(behind);
    c.propose("x");
    assert_eq!(c.nodes[&leader].commit_index(), 3, "x commits with {wiped}'s help\n{}", c.describe());
    c.heal();
    c.wipe(wiped, mutation);
    c.isolate(leader);
    (leader, wiped, behind)
}

#[test]
fn a_voter_with_a_replaced_disk_votes_only_once_every_other_voter_answered() {
    for seed in 0..10 {
        let mut c = Cluster::voters(3, seed);
        let (leader, wiped, behind) = commit_then_replace_a_disk(&mut c, None);
        // The only other holder of x is cut off: without its answer the wiped voter neither votes
        // nor stands, so the voter that lacks x cannot be elected.
        c.run_for(3000);
        assert!(c.leaders().iter().all(|l| *l == leader), "seed {seed}\n{}", c.describe());
        assert_eq!(c.nodes[&wiped].recovery(), keel_raft::Recovery::Probing, "seed {seed}");
        assert_ne!(c.nodes[&behind].role(), RoleKind::Leader);
        c.heal();
        c.run_for(3000);
        c.propose("y");
        c.run_for(200);
        assert_eq!(c.nodes[&wiped].recovery(), keel_raft::Recovery::Trusted, "seed {seed}\n{}", c.describe());
        let expected: Vec<Vec<u8>> = ["a", "x", "y"].iter().map(|c| c.as_bytes().to_vec()).collect();
        for (id, applied) in &c.applied {
            if *id != wiped {
                assert_eq!(applied, &expected, "seed {seed} node {id}\n{}", c.describe());
            }
        }
        // The wiped node applies everything again from the start.
        assert_eq!(c.applied[&wiped], expected, "seed {seed}\n{}", c.describe());
    }
}

#[test]
fn trusting_a_replaced_disk_elects_a_leader_without_a_committed_entry() {
    // The mutant is what keel did before: the same scenario loses x.
    let mut lost = 0;
    for seed in 0..10 {
        let mut c = Cluster::voters(3, seed);
        let (_, _, behind) = commit_then_replace_a_disk(&mut c, Some(Mutation::TrustLostState));
        c.run_for(3000);
        if c.leaders().contains(&behind) {
            c.propose("y");
            assert_eq!(c.applied[&behind], vec![b"a".to_vec(), b"y".to_vec()], "x is gone");
            lost += 1;
        }
    }
    assert!(lost > 0, "the mutant never lost x");
}

#[test]
fn a_new_cluster_of_voters_without_state_forms_once_every_voter_has_answered() {
    let v = ids(3);
    let mut c = Cluster::new((1..=3).map(|i| config(i, &v)).collect(), 4);
    for id in ids(3) {
        c.wipe(id, None);
    }
    c.isolate(NodeId(3));
    c.run_for(3000);
    assert!(c.leaders().is_empty(), "{}", c.describe());
    c.heal();
    c.run_for(3000);
    c.leader();
    c.propose("a");
    assert!(c.nodes.values().all(|n| n.recovery() == keel_raft::Recovery::Trusted));
    // A single voter has nobody to ask.
    let mut c = Cluster::voters(1, 1);
    c.wipe(NodeId(1), None);
    c.run_for(400);
    c.propose("a");
    assert_eq!(c.applied[&NodeId(1)], vec![b"a".to_vec()]);
}

#[test]
fn a_recovering_voter_takes_the_highest_term_it_heard_of_with_its_vote_spent() {
    let mut c = Cluster::voters(3, 21);
    c.run_for(1000);
    let leader = c.leader();
    let term = c.nodes[&leader].term();
    let follower = c.nodes.keys().copied().find(|id| *id != leader).unwrap();
    c.isolate(follower);
    c.wipe(follower, None);
    c.heal();
    // Answers arrive before any append from the leader.
    c.deliver_all();
    let hard_state = c.nodes[&follower].hard_state();
    assert_eq!(hard_state.term, term);
    assert_eq!(hard_state.voted_for, Some(follower), "its vote in term {term} may be spent");
    assert_eq!(c.disks[&follower].hard_state, hard_state);
    c.run_for(500);
    assert_eq!(c.nodes[&follower].recovery(), keel_raft::Recovery::Trusted);
    assert_eq!(c.disks[&follower].recovery, keel_raft::Recovery::Trusted);
    assert_eq!(c.leader(), leader);
}

#[test]
fn an_answer_to_an_earlier_lifes_probe_is_ignored() {
    let mut c = Cluster::voters(3, 31);
    c.run_for(1000);
    let leader = c.leader();
    let wiped = c.nodes.keys().copied().find(|id| *id != leader).unwrap();
    c.wipe(wiped, None);
    c.collect();
    // The others answer this life's probes; the answers are held back.
    let probes: Vec<_> = c.network.drain(..).filter(|(from, _, _)| *from == wiped).collect();
    assert_eq!(probes.len(), 2, "{probes:?}");
    for (from, to, message) in probes {
        c.nodes.get_mut(&to).unwrap().handle_message(c.now, &mut c.rng, from, message);
    }
    c.collect();
    let answers: Vec<_> = c
        .network
        .drain(..)
        .filter(|(_, to, m)| *to == wiped && matches!(m, keel_raft::Message::ProbeResponse { .. }))
        .collect();
    assert_eq!(answers.len(), 2);
    // The disk is replaced again before they arrive: they describe the others before that.
    c.wipe(wiped, None);
    for (from, to, message) in answers {
        c.nodes.get_mut(&to).unwrap().handle_message(c.now, &mut c.rng, from, message);
    }
    assert_eq!(c.nodes[&wiped].recovery(), keel_raft::Recovery::Probing, "{}", c.describe());
    c.run_for(1000);
    assert_eq!(c.nodes[&wiped].recovery(), keel_raft::Recovery::Trusted, "{}", c.describe());
}
