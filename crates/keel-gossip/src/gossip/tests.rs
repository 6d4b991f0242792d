//! Unit tests on a tiny in-memory network that delivers at once, in order.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use keel_types::Rng;

use super::*;

fn address(i: i32) -> Address {
    Address(format!("n{i}"))
}

fn config(i: i32) -> Config {
    Config {
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(40),
        suspicion_timeout: Duration::from_millis(300),
        indirect_probes: 2,
        retransmit_multiplier: 2,
        ..Config::new(NodeId(i), address(i), vec![address(1)])
    }
}

/// Nodes n1..nN; n1 is everyone's seed.
struct Net {
    nodes: BTreeMap<i32, Option<Gossip>>,
    durable: BTreeMap<i32, Durable>,
    now: Instant,
    rng: Rng,
    /// Directed links that drop everything.
    cut: BTreeSet<(i32, i32)>,
    /// Persists complete only when the test says so.
    hold_persists: bool,
    /// Every datagram sent, with sender and recipient.
    sent: Vec<(i32, i32, Message)>,
}

impl Net {
    fn new(n: i32, configure: impl Fn(&mut Config)) -> Net {
        let mut net = Net {
            nodes: BTreeMap::new(),
            durable: BTreeMap::new(),
            now: Instant::from_millis(1000),
            rng: Rng::new(7),
            cut: BTreeSet::new(),
            hold_persists: false,
            sent: Vec::new(),
        };
        for i in 1..=n {
            let mut c = config(i);
            configure(&mut c);
            net.nodes.insert(i, Some(Gossip::start(c, Durable::default(), net.now)));
            net.durable.insert(i, Durable::default());
        }
        net.settle();
        net
    }

    fn node(&self, i: i32) -> &Gossip {
        self.nodes[&i].as_ref().expect("running")
    }

    fn node_mut(&mut self, i: i32) -> &mut Gossip {
        self.nodes.get_mut(&i).and_then(Option::as_mut).expect("running")
    }

    fn persist(&mut self, i: i32) {
        let now = self.now;
        let node = self.nodes.get_mut(&i).and_then(Option::as_mut).expect("running");
        if let Some(d) = node.poll_persist() {
            self.durable.insert(i, d);
            node.handle_persisted(now, d);
        }
    }

    /// Delivers every message until the network is quiet.
    fn settle(&mut self) {
        let mut queue: VecDeque<(i32, i32, Message)> = VecDeque::new();
        loop {
            for i in self.nodes.keys().copied().collect::<Vec<_>>() {
                if self.nodes[&i].is_none() {
                    continue;
                }
                if !self.hold_persists {
                    self.persist(i);
                }
                let node = self.node_mut(i);
                node.check_invariants().unwrap();
                let limit = node.config().message_bytes_max;
                for o in node.drain_messages() {
                    let to: i32 = o.to.0[1..].split('-').next().unwrap().parse().unwrap();
                    // Through the codec, as the broker will send it.
                    let bytes = o.message.encode();
                    assert!(bytes.len() <= limit);
                    let message = Message::decode(&bytes, 65_507).unwrap();
                    self.sent.push((i, to, message.clone()));
                    queue.push_back((i, to, message));
                }
            }
            let Some((from, to, message)) = queue.pop_front() else { break };
            if self.cut.contains(&(from, to)) {
                continue;
            }
            let now = self.now;
            if let Some(Some(node)) = self.nodes.get_mut(&to) {
                node.handle_message(now, message);
            }
        }
    }

    fn run_ms(&mut self, ms: u64) {
        for _ in 0..ms / 10 {
            self.now = self.now + Duration::from_millis(10);
            let now = self.now;
            for i in self.nodes.keys().copied().collect::<Vec<_>>() {
                if let Some(Some(node)) = self.nodes.get_mut(&i) {
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        node.handle_tick(now, &mut self.rng);
                    }
                }
            }
            self.settle();
        }
    }

    fn status(&self, of: i32, about: i32) -> Option<(Status, u64)> {
        self.node(of).member(NodeId(about)).map(|m| (m.status, m.incarnation.0))
    }

    fn crash(&mut self, i: i32) {
        self.nodes.insert(i, None);
    }

    fn restart(&mut self, i: i32) {
        let node = Gossip::start(config(i), self.durable[&i], self.now);
        self.nodes.insert(i, Some(node));
        self.settle();
    }

    fn isolate(&mut self, i: i32) {
        for j in self.nodes.keys().copied().collect::<Vec<_>>() {
            self.cut.insert((i, j));
            self.cut.insert((j, i));
        }
    }
}

#[test]
fn members_join_through_a_seed_and_see_each_other_alive() {
    let mut net = Net::new(5, |_| {});
    net.run_ms(1000);
    for i in 1..=5 {
        for j in 1..=5 {
            assert_eq!(net.status(i, j), Some((Status::Alive, 1)), "n{i} about n{j}");
        }
    }
}

#[test]
fn nothing_leaves_before_the_incarnation_is_durable() {
    let mut net = Net::new(0, |_| {});
    net.hold_persists = true;
    let mut node = Gossip::start(config(2), Durable { incarnation: Incarnation(6) }, net.now);
    assert_eq!(node.incarnation(), Incarnation(7), "bumped at every start");
    assert!(node.drain_messages().is_empty(), "the join must wait for the persist");
    node.handle_tick(net.now + Duration::from_millis(100), &mut net.rng);
    assert!(node.drain_messages().is_empty());
    let persist = node.poll_persist().expect("a persist is due");
    assert_eq!(persist.incarnation, Incarnation(7));
    assert_eq!(node.poll_persist(), None, "issued once");
    node.handle_persisted(net.now, Durable { incarnation: Incarnation(6) });
    assert!(node.drain_messages().is_empty(), "an older persist does not release it");
    node.handle_persisted(net.now, persist);
    let sent = node.drain_messages();
    assert!(!sent.is_empty());
    assert!(sent.iter().all(|o| o.message.sender.incarnation == Incarnation(7)));
    assert!(sent.iter().any(|o| o.to == address(1) && o.message.body == Body::Join));
}

#[test]
fn a_crashed_member_is_suspected_then_declared_dead_by_everyone() {
    let mut net = Net::new(5, |_| {});
    net.run_ms(1000);
    net.crash(3);
    // Each member probes n3 within two rounds of 4 periods; suspicion lasts 300 ms.
    net.run_ms(400);
    let suspected = (1..=5).filter(|&i| i != 3).any(|i| net.status(i, 3).is_some_and(|(s, _)| s != Status::Alive));
    assert!(suspected, "nobody noticed within 400 ms");
    net.run_ms(1500);
    for i in [1, 2, 4, 5] {
        assert_eq!(net.status(i, 3), Some((Status::Dead, 1)), "n{i}");
        for j in [1, 2, 4, 5] {
            assert_eq!(net.status(i, j).map(|s| s.0), Some(Status::Alive), "n{i} about n{j}");
        }
    }
}

#[test]
fn an_indirect_probe_keeps_a_member_with_one_bad_link_alive() {
    let mut net = Net::new(4, |_| {});
    net.run_ms(1000);
    net.cut.insert((1, 3));
    net.cut.insert((3, 1));
    net.sent.clear();
    net.run_ms(3000);
    assert!(
        net.sent.iter().any(|(from, _, m)| *from == 1 && matches!(m.body, Body::PingReq { target: NodeId(3), .. })),
        "n1 never asked for an indirect probe of n3"
    );
    for i in 1..=4 {
        for j in 1..=4 {
            assert_eq!(net.status(i, j).map(|s| s.0), Some(Status::Alive), "n{i} about n{j}");
        }
    }
}

#[test]
fn a_member_declared_dead_while_running_refutes_with_a_higher_incarnation() {
    let mut net = Net::new(3, |_| {});
    net.run_ms(1000);
    net.isolate(3);
    net.run_ms(2000);
    assert_eq!(net.status(1, 3), Some((Status::Dead, 1)));
    assert_eq!(net.status(3, 1), Some((Status::Dead, 1)));
    net.cut.clear();
    net.run_ms(2000);
    // Both sides heard they were declared dead and refuted.
    for i in 1..=3 {
        for j in 1..=3 {
            let (status, incarnation) = net.status(i, j).unwrap();
            assert_eq!(status, Status::Alive, "n{i} about n{j}");
            assert!(incarnation >= 2, "n{i} about n{j}: refuted at {incarnation}");
            assert_eq!(incarnation, net.node(j).incarnation().0);
        }
    }
    assert!(net.durable[&3].incarnation >= Incarnation(2), "the refuting incarnation was persisted");
}

#[test]
fn refutation_waits_for_its_persist() {
    let mut net = Net::new(2, |_| {});
    net.run_ms(500);
    net.hold_persists = true;
    let accusation = Message {
        sender: Sender { id: NodeId(1), address: address(1), incarnation: Incarnation(1) },
        body: Body::Ping { sequence: 99, prober: NodeId(1) },
        updates: vec![Member {
            id: NodeId(2),
            address: address(2),
            incarnation: Incarnation(1),
            status: Status::Suspect,
        }],
    };
    let now = net.now;
    let node = net.node_mut(2);
    node.handle_message(now, accusation);
    assert_eq!(node.incarnation(), Incarnation(2));
    assert!(node.drain_messages().is_empty(), "the ack announces incarnation 2: it must wait");
    let persist = node.poll_persist().unwrap();
    node.handle_persisted(now, persist);
    let sent = node.drain_messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message.sender.incarnation, Incarnation(2));
    assert!(matches!(sent[0].message.body, Body::Ack { sequence: 99, .. }));
    // A stale accusation (below the current incarnation) changes nothing.
    let stale = Message {
        sender: Sender { id: NodeId(1), address: address(1), incarnation: Incarnation(1) },
        body: Body::Join,
        updates: vec![Member { id: NodeId(2), address: address(2), incarnation: Incarnation(1), status: Status::Dead }],
    };
    node.handle_message(now, stale);
    assert_eq!(node.incarnation(), Incarnation(2));
    assert_eq!(node.poll_persist(), None);
}

#[test]
fn a_restarted_member_comes_back_with_a_higher_incarnation() {
    let mut net = Net::new(4, |_| {});
    net.run_ms(1000);
    net.crash(2);
    net.run_ms(3000);
    assert_eq!(net.status(1, 2), Some((Status::Dead, 1)));
    net.restart(2);
    assert_eq!(net.node(2).incarnation(), Incarnation(2));
    net.run_ms(2000);
    for i in 1..=4 {
        assert_eq!(net.status(i, 2), Some((Status::Alive, 2)), "n{i}");
        assert_eq!(net.status(2, i).map(|s| s.0), Some(Status::Alive), "n2 about n{i}");
    }
}

#[test]
fn a_member_that_leaves_is_held_left_and_not_probed() {
    let mut net = Net::new(4, |_| {});
    net.run_ms(1000);
    let now = net.now;
    net.node_mut(4).leave(now);
    assert_eq!(net.node(4).poll_timeout(), None);
    net.settle();
    for i in 1..=3 {
        assert_eq!(net.status(i, 4), Some((Status::Left, 1)), "n{i}");
    }
    net.sent.clear();
    net.run_ms(2000);
    assert!(net.sent.iter().all(|(_, to, _)| *to != 4), "a member that left is not probed");
    assert!(net.sent.iter().all(|(from, _, _)| *from != 4), "a member that left says nothing");
    assert_eq!(net.status(1, 4), Some((Status::Left, 1)));
}

#[test]
fn each_update_is_sent_a_bounded_number_of_times() {
    // Anti-entropy resends every record forever, by design; this is about the piggyback queue.
    let mut net = Net::new(6, |c| c.anti_entropy_records = 0);
    net.run_ms(2000);
    net.crash(6);
    net.sent.clear();
    net.run_ms(6000);
    // Each member passes on each record it changed at most retransmit_limit times; n6's Suspect
    // and Dead records are two changes per member that made them.
    let limit = net.node(1).retransmit_limit() as usize;
    for from in 1..=5 {
        let carried = net
            .sent
            .iter()
            .filter(|(f, to, m)| *f == from && *to != 6 && m.body != Body::JoinAck)
            .filter(|(_, _, m)| m.updates.iter().any(|u| u.id == NodeId(6)))
            .count();
        assert!(carried <= 2 * limit, "n{from} sent n6's records {carried} times (limit {limit} per change)");
    }
    assert_eq!(net.node(1).retransmit_limit(), 2, "lambda 2 * ceil(log10(6 + 1))");
}

#[test]
fn anti_entropy_rotates_every_record_through_the_messages() {
    let mut net = Net::new(10, |_| {});
    net.run_ms(3000);
    for i in 1..=10 {
        assert!(net.node(i).piggyback.is_empty(), "n{i} still has news to pass on");
    }
    net.sent.clear();
    net.run_ms(2000);
    let from_n1: Vec<&Message> =
        net.sent.iter().filter(|(from, _, m)| *from == 1 && m.body != Body::JoinAck).map(|(_, _, m)| m).collect();
    let carried: BTreeSet<i32> = from_n1.iter().flat_map(|m| m.updates.iter().map(|u| u.id.0)).collect();
    assert_eq!(carried, (2..=10).collect(), "n1 passed on every record in {} messages", from_n1.len());
    assert!(from_n1.iter().all(|m| m.updates.len() <= 2), "two records per message, nothing queued");
    // Off, a quiet cluster's messages carry nothing but their senders.
    let mut quiet = Net::new(10, |c| c.anti_entropy_records = 0);
    quiet.run_ms(3000);
    quiet.sent.clear();
    quiet.run_ms(2000);
    assert!(quiet.sent.iter().all(|(_, _, m)| m.updates.is_empty()));
}

/// The gap anti-entropy closes (the checker's cut link plus pause, here with partitions): n3
/// and n4 hold n2 Dead behind links cut for good, and n2's refutation rode on n1's few
/// retransmits while they could not hear n1. Bounded dissemination never repeats it;
/// anti-entropy does, after which they probe n2 through n1 and keep it Alive.
#[test]
fn anti_entropy_repairs_a_record_that_missed_its_dissemination() {
    let run = |anti_entropy_records: usize| {
        let mut net = Net::new(4, |c| c.anti_entropy_records = anti_entropy_records);
        net.run_ms(1000);
        let cut = |net: &mut Net, a: i32, b: i32, on: bool| {
            for link in [(a, b), (b, a)] {
                if on {
                    net.cut.insert(link);
                } else {
                    net.cut.remove(&link);
                }
            }
        };
        // n2 is cut off; the others declare it Dead.
        net.isolate(2);
        net.run_ms(2000);
        assert_eq!(net.status(3, 2), Some((Status::Dead, 1)));
        // n1 reaches only n2 for a while: n2 refutes to n1, and n1's retransmits of the
        // refutation all go to n2.
        cut(&mut net, 1, 3, true);
        cut(&mut net, 1, 4, true);
        cut(&mut net, 1, 2, false);
        net.run_ms(3000);
        assert_eq!(net.status(1, 2).map(|(s, _)| s), Some(Status::Alive));
        assert!(!net.node(1).piggyback.contains_key(&NodeId(2)), "n1 is done passing n2's refutation on");
        // n1 is reachable again; n2 stays cut off from n3 and n4 for good.
        cut(&mut net, 1, 3, false);
        cut(&mut net, 1, 4, false);
        net.run_ms(5000);
        (net.status(1, 2), net.status(3, 2), net.status(4, 2), net.status(3, 1))
    };
    let (n1_of_n2, n3_of_n2, n4_of_n2, n3_of_n1) = run(2);
    assert_eq!(n3_of_n2, n1_of_n2, "anti-entropy brought n3 what n1 knows of n2");
    assert_eq!(n4_of_n2, n1_of_n2);
    assert_eq!(n3_of_n2.map(|(s, _)| s), Some(Status::Alive));
    assert_eq!(n3_of_n1.map(|(s, _)| s), Some(Status::Alive));
    let (_, n3_of_n2, n4_of_n2, _) = run(0);
    assert_eq!(n3_of_n2.map(|(s, _)| s), Some(Status::Dead), "without anti-entropy the record is never repaired");
    assert_eq!(n4_of_n2.map(|(s, _)| s), Some(Status::Dead));
}

#[test]
fn messages_fit_the_datagram_limit_and_the_view_the_member_limit() {
    // Long addresses: about two updates fit in a datagram.
    let long = |id: i32| Address(format!("n{id}-{}", "x".repeat(100)));
    let mut net = Net::new(12, |c| {
        c.address = long(c.id.0);
        c.seeds = vec![long(1)];
        c.message_bytes_max = 400;
        c.members_max = 8;
    });
    net.run_ms(3000);
    for (_, _, m) in &net.sent {
        assert!(m.encoded_len() <= 400, "{} bytes", m.encoded_len());
    }
    for i in 1..=12 {
        assert!(net.node(i).members().count() <= 8);
    }
    // Both bounds were reached: a message that a further update (112 bytes) would overfill,
    // and a full view.
    assert!(net.sent.iter().any(|(_, _, m)| m.encoded_len() + 112 > 400), "no message was ever full");
    assert!((1..=12).any(|i| net.node(i).members().count() == 8), "no view was ever full");
}

#[test]
fn dead_members_make_room_for_new_ones() {
    let mut node = Gossip::start(Config { members_max: 3, ..config(1) }, Durable::default(), Instant::ZERO);
    let update = |id: i32, status| Member { id: NodeId(id), address: address(id), incarnation: Incarnation(1), status };
    let from = Sender { id: NodeId(2), address: address(2), incarnation: Incarnation(1) };
    let message = |updates| Message { sender: from.clone(), body: Body::JoinAck, updates };
    node.handle_message(Instant::ZERO, message(vec![update(3, Status::Dead), update(4, Status::Alive)]));
    // n2 (the sender) and n3 fill the view; n3 is dead, so n4 takes its place.
    assert!(node.member(NodeId(3)).is_none());
    assert_eq!(node.member(NodeId(4)).map(|m| m.status), Some(Status::Alive));
    node.handle_message(Instant::ZERO, message(vec![update(5, Status::Alive), update(6, Status::Dead)]));
    assert!(node.member(NodeId(5)).is_none() && node.member(NodeId(6)).is_none(), "full of running members");
    assert_eq!(node.members().count(), 3);
    node.check_invariants().unwrap();
}

/// A record of n3, as some message carries it.
fn n3_record(incarnation: u64, status: Status) -> Member {
    Member { id: NodeId(3), address: address(3), incarnation: Incarnation(incarnation), status }
}

/// n2 at incarnation 1, as the sender of a message.
fn n2_at_1() -> Sender {
    Sender { id: NodeId(2), address: address(2), incarnation: Incarnation(1) }
}

/// A member held Dead is pinged directly only; if news that it runs arrives while that ping goes
/// unanswered, the failed ping must not make it Suspect: it never had its indirect probe (behind
/// a cut link that is the whole difference). Found by `keel check gossip --cuts 1`.
#[test]
fn a_direct_only_probe_of_a_dead_member_accuses_nobody() {
    let mut node = Gossip::start(config(1), Durable::default(), Instant::ZERO);
    let durable = node.poll_persist().expect("first incarnation");
    node.handle_persisted(Instant::ZERO, durable);
    let record = n3_record;
    let from = n2_at_1();
    let message = |update| Message { sender: from.clone(), body: Body::JoinAck, updates: vec![update] };
    node.handle_message(Instant::ZERO, message(record(1, Status::Dead)));
    let mut rng = Rng::new(7);
    let mut now = Instant::ZERO;
    let mut probed_n3 = false;
    for _ in 0..200 {
        now = now + Duration::from_millis(10);
        node.handle_tick(now, &mut rng);
        let pinged_n3 =
            node.drain_messages().iter().any(|o| o.to == address(3) && matches!(o.message.body, Body::Ping { .. }));
        if pinged_n3 {
            probed_n3 = true;
            // n3 refuted elsewhere; its ack to us is lost.
            node.handle_message(now, message(record(2, Status::Alive)));
            let period_end = now + node.config().probe_interval;
            while now < period_end {
                now = now + Duration::from_millis(10);
                node.handle_tick(now, &mut rng);
            }
            break;
        }
    }
    assert!(probed_n3, "n3 was never pinged");
    assert_eq!(node.member(NodeId(3)).map(|m| (m.status, m.incarnation.0)), Some((Status::Alive, 2)));
    node.check_invariants().unwrap();
}

#[test]
fn the_mutants_merge_as_advertised() {
    let rec = n3_record;
    let from = n2_at_1();
    let feed = |mutation, first: Member, second: Member| {
        let mut node = Gossip::start(Config { mutation, ..config(1) }, Durable::default(), Instant::ZERO);
        for update in [first, second] {
            node.handle_message(
                Instant::ZERO,
                Message { sender: from.clone(), body: Body::JoinAck, updates: vec![update] },
            );
        }
        node.member(NodeId(3)).map(|m| (m.status, m.incarnation.0))
    };
    // Correct: a stale accusation loses, a refutation wins.
    assert_eq!(feed(None, rec(2, Status::Alive), rec(1, Status::Dead)), Some((Status::Alive, 2)));
    assert_eq!(feed(None, rec(1, Status::Dead), rec(2, Status::Alive)), Some((Status::Alive, 2)));
    // Blind merge: the last word wins, stale or not.
    assert_eq!(feed(Some(Mutation::BlindMerge), rec(2, Status::Alive), rec(1, Status::Dead)), Some((Status::Dead, 1)));
    // Dead always wins: a refutation never gets through.
    assert_eq!(
        feed(Some(Mutation::DeadAlwaysWins), rec(1, Status::Dead), rec(2, Status::Alive)),
        Some((Status::Dead, 1))
    );
    assert_eq!(
        feed(Some(Mutation::DeadAlwaysWins), rec(2, Status::Alive), rec(1, Status::Dead)),
        Some((Status::Dead, 1))
    );
    // And no refutation of an accusation against oneself.
    let mut node = Gossip::start(
        Config { mutation: Some(Mutation::DeadAlwaysWins), ..config(1) },
        Durable::default(),
        Instant::ZERO,
    );
    let me = Member { id: NodeId(1), address: address(1), incarnation: Incarnation(1), status: Status::Dead };
    node.handle_message(Instant::ZERO, Message { sender: from.clone(), body: Body::JoinAck, updates: vec![me] });
    assert_eq!(node.incarnation(), Incarnation(1));
}

#[test]
fn relabelling_preserves_behaviour() {
    // Two copies, one relabelled, fed the same (relabelled) inputs, stay relabelled copies.
    let mut net = Net::new(3, |_| {});
    net.run_ms(1000);
    let original = net.node(2).clone();
    let mut relabelled = original.clone();
    let shift = Duration::from_millis(1000);
    let seq = original.sequence();
    relabelled.relabel(shift, Instant::ZERO, &|_| 1, &|id| if id == NodeId(2) { seq } else { 0 });
    let mut a = original;
    let mut b = relabelled;
    let mut rng_a = Rng::new(1);
    let mut rng_b = Rng::new(1);
    for step in 1..=50u64 {
        let t = net.now + Duration::from_millis(10 * step);
        a.handle_tick(t, &mut rng_a);
        b.handle_tick(Instant(t.0 - shift.0), &mut rng_b);
        let mut a_view = a.clone();
        a_view.relabel(shift, Instant::ZERO, &|_| 1, &|id| if id == NodeId(2) { seq } else { 0 });
        assert_eq!(a_view.members().collect::<Vec<_>>(), b.members().collect::<Vec<_>>(), "step {step}");
        assert_eq!(a_view.poll_timeout(), b.poll_timeout(), "step {step}");
        assert_eq!(a_view.sequence(), b.sequence());
    }
}

#[test]
fn log10_rounds_up() {
    for (n, expect) in [(1, 0), (2, 1), (4, 1), (10, 1), (11, 2), (51, 2), (100, 2), (101, 3), (u64::MAX, 20)] {
        assert_eq!(log10_ceil(n), expect, "{n}");
    }
}
