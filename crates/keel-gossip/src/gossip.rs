//! The member: its view, its probe schedule, dissemination and refutation.

use std::collections::BTreeMap;

use keel_types::{Duration, Entropy, Instant, NodeId};

use crate::config::{Config, Mutation};
use crate::member::{supersedes, Address, Incarnation, Member, Status};
use crate::message::{Body, Message, Sender, UPDATES_MAX};

/// What a member keeps on disk: the incarnation it last announced (or is about to).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Durable {
    pub incarnation: Incarnation,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outgoing {
    pub to: Address,
    pub message: Message,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Entry {
    member: Member,
    /// When a Suspect member is declared Dead; `Some` exactly while it is Suspect.
    suspect_deadline: Option<Instant>,
}

/// The probe of the current protocol period.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Probe {
    Idle,
    Waiting {
        target: NodeId,
        sequence: u64,
        /// When to ask others to probe indirectly; `None` once asked (or for a member
        /// already Dead, which is only pinged directly).
        indirect_at: Option<Instant>,
        acked: bool,
        /// The target was held Dead when the probe started: it is pinged directly only, and a
        /// missing ack means nothing, even if news that it runs arrived in the meantime (it
        /// never had its indirect probe; the next round probes it in full).
        direct_only: bool,
    },
}

/// One member as a pure state machine. See the crate documentation for the contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gossip {
    config: Config,
    incarnation: Incarnation,
    /// The highest incarnation the shell reported durable.
    persisted: Incarnation,
    /// The highest incarnation handed out by [`Gossip::poll_persist`].
    persist_issued: Incarnation,
    left: bool,
    /// The view, this member included (always Alive, or Left, at its own incarnation).
    members: BTreeMap<NodeId, Entry>,
    /// This round's probe order; `probe_next` is the next position.
    probe_order: Vec<NodeId>,
    probe_next: usize,
    probe: Probe,
    /// The last probe sequence number used.
    sequence: u64,
    next_probe_at: Instant,
    /// Members whose record is still being passed on, with how many messages carried it. The
    /// record sent is always the current one, so the queue holds at most one entry per member.
    piggyback: BTreeMap<NodeId, u32>,
    /// The anti-entropy cursor: the member whose record was sent last; the next message goes
    /// on from the member after it.
    anti_entropy_after: NodeId,
    messages_ready: Vec<Outgoing>,
    /// Messages carrying an incarnation that is not durable yet.
    messages_gated: Vec<Outgoing>,
    changes: BTreeMap<NodeId, Member>,
}

/// Everything but the config, which never changes after [`Gossip::start`]: the model checker
/// hashes millions of states, and the config (addresses, seeds) would be most of the bytes.
/// Equal values still hash equally.
impl std::hash::Hash for Gossip {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.config.id.hash(state);
        self.incarnation.hash(state);
        self.persisted.hash(state);
        self.persist_issued.hash(state);
        self.left.hash(state);
        self.members.hash(state);
        self.probe_order.hash(state);
        self.probe_next.hash(state);
        self.probe.hash(state);
        self.sequence.hash(state);
        self.next_probe_at.hash(state);
        self.piggyback.hash(state);
        self.anti_entropy_after.hash(state);
        self.messages_ready.hash(state);
        self.messages_gated.hash(state);
        self.changes.hash(state);
    }
}

impl Gossip {
    /// Starts a member from what it persisted (`Durable::default()` the first time). Its
    /// incarnation is one above the persisted one, so whatever it said in an earlier life,
    /// what it says now wins; nothing leaves until that incarnation is durable
    /// ([`Gossip::poll_persist`]). Panics if the config is invalid.
    pub fn start(config: Config, durable: Durable, now: Instant) -> Gossip {
        if let Err(e) = config.validate() {
            panic!("invalid gossip config: {e}");
        }
        let incarnation = Incarnation(durable.incarnation.0 + 1);
        let me = Member { id: config.id, address: config.address.clone(), incarnation, status: Status::Alive };
        let mut gossip = Gossip {
            members: BTreeMap::from([(config.id, Entry { member: me.clone(), suspect_deadline: None })]),
            next_probe_at: now + config.probe_interval,
            config,
            incarnation,
            persisted: durable.incarnation,
            persist_issued: durable.incarnation,
            left: false,
            probe_order: Vec::new(),
            probe_next: 0,
            probe: Probe::Idle,
            sequence: 0,
            piggyback: BTreeMap::from([(me.id, 0)]),
            anti_entropy_after: me.id,
            messages_ready: Vec::new(),
            messages_gated: Vec::new(),
            changes: BTreeMap::from([(me.id, me)]),
        };
        gossip.join();
        gossip
    }

    // ---- inputs -------------------------------------------------------------------------

    /// Fires whatever timers are due at `now`: suspicions that ran out, the indirect probe, the
    /// end of the protocol period (and with it the next probe). Call it at
    /// [`Gossip::poll_timeout`]; earlier calls do nothing harmful.
    pub fn handle_tick(&mut self, now: Instant, rng: &mut impl Entropy) {
        if self.left {
            return;
        }
        let expired: Vec<NodeId> = self
            .members
            .values()
            .filter(|e| e.suspect_deadline.is_some_and(|d| now >= d))
            .map(|e| e.member.id)
            .collect();
        for id in expired {
            let mut dead = self.members[&id].member.clone();
            dead.status = Status::Dead;
            self.set(now, dead);
        }
        if let Probe::Waiting { target, sequence, indirect_at: Some(at), acked: false, direct_only } = self.probe {
            if now >= at {
                self.probe = Probe::Waiting { target, sequence, indirect_at: None, acked: false, direct_only };
                self.ask_for_indirect_probes(target, sequence, rng);
            }
        }
        if now >= self.next_probe_at {
            self.finish_probe(now);
            if !self.joined() {
                self.join();
            }
            self.start_probe(now, rng);
            self.next_probe_at = now + self.config.probe_interval;
        }
    }

    /// A datagram, decoded. Messages from this member itself are ignored.
    pub fn handle_message(&mut self, now: Instant, message: Message) {
        if self.left || message.sender.id == self.config.id {
            return;
        }
        let from = message.sender;
        // A message is its sender's own word that it runs at this incarnation (or leaves).
        let status = if message.body == Body::Leave { Status::Left } else { Status::Alive };
        self.merge(now, Member { id: from.id, address: from.address.clone(), incarnation: from.incarnation, status });
        for update in message.updates {
            self.merge(now, update);
        }
        match message.body {
            Body::Ping { sequence, prober } => {
                self.send(from.address, Body::Ack { sequence, prober, target: self.config.id }, Some(from.id));
            }
            Body::Ack { sequence, prober, target } => {
                if prober == self.config.id {
                    if let Probe::Waiting { target: t, sequence: s, acked, .. } = &mut self.probe {
                        if *t == target && *s == sequence {
                            *acked = true;
                        }
                    }
                } else if from.id == target {
                    // We relayed this probe: pass the target's answer on.
                    if let Some(address) = self.members.get(&prober).map(|e| e.member.address.clone()) {
                        self.send(address, Body::Ack { sequence, prober, target }, Some(prober));
                    }
                }
            }
            Body::PingReq { sequence, target, target_address } => {
                if target == self.config.id {
                    self.send(from.address, Body::Ack { sequence, prober: from.id, target }, Some(from.id));
                } else {
                    self.send(target_address, Body::Ping { sequence, prober: from.id }, Some(target));
                }
            }
            Body::Join => self.send_join_ack(from.address),
            Body::JoinAck | Body::Leave => {}
        }
    }

    /// The shell made `durable` durable: messages carrying its incarnation may leave.
    pub fn handle_persisted(&mut self, _now: Instant, durable: Durable) {
        self.persisted = self.persisted.max(durable.incarnation);
        let persisted = self.persisted;
        let (ready, gated): (Vec<Outgoing>, Vec<Outgoing>) = std::mem::take(&mut self.messages_gated)
            .into_iter()
            .partition(|o| o.message.sender.incarnation <= persisted);
        self.messages_ready.extend(ready);
        self.messages_gated = gated;
    }

    /// Leaves the cluster: every running member is told, and this member stops probing and
    /// answering. Starting again ([`Gossip::start`]) rejoins with a higher incarnation.
    pub fn leave(&mut self, _now: Instant) {
        if self.left {
            return;
        }
        self.left = true;
        self.probe = Probe::Idle;
        let mut me = self.me().clone();
        me.status = Status::Left;
        self.members.get_mut(&self.config.id).expect("self is a member").member = me.clone();
        self.changes.insert(me.id, me);
        let peers: Vec<(NodeId, Address)> = self
            .members
            .values()
            .filter(|e| e.member.id != self.config.id && e.member.status.is_up())
            .map(|e| (e.member.id, e.member.address.clone()))
            .collect();
        for (id, address) in peers {
            self.send(address, Body::Leave, Some(id));
        }
    }

    // ---- outputs ------------------------------------------------------------------------

    /// An incarnation to make durable before anything carrying it is sent; report it with
    /// [`Gossip::handle_persisted`]. Writing a later one covers the earlier ones.
    pub fn poll_persist(&mut self) -> Option<Durable> {
        if self.incarnation > self.persist_issued {
            self.persist_issued = self.incarnation;
            return Some(Durable { incarnation: self.incarnation });
        }
        None
    }

    /// Datagrams that may leave now.
    pub fn drain_messages(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.messages_ready)
    }

    /// Members whose record changed since the last call (the newest record of each), this
    /// member included.
    pub fn drain_changes(&mut self) -> Vec<Member> {
        std::mem::take(&mut self.changes).into_values().collect()
    }

    /// When [`Gossip::handle_tick`] has something to do; `None` after leaving.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.left {
            return None;
        }
        let mut next = self.next_probe_at;
        // An acked probe needs no indirect probe: its deadline is not one (the tick ignores it).
        if let Probe::Waiting { indirect_at: Some(at), acked: false, .. } = self.probe {
            next = next.min(at);
        }
        for deadline in self.members.values().filter_map(|e| e.suspect_deadline) {
            next = next.min(deadline);
        }
        Some(next)
    }

    // ---- queries ------------------------------------------------------------------------

    pub fn id(&self) -> NodeId {
        self.config.id
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    pub fn has_left(&self) -> bool {
        self.left
    }

    /// This member's record of `id`.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.get(&id).map(|e| &e.member)
    }

    /// The view, in id order, this member included.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|e| &e.member)
    }

    /// The last probe sequence number used.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// The number of messages that may carry an update: SWIM's lambda * log(N), as memberlist
    /// computes it: `retransmit_multiplier * ceil(log10(N + 1))`, N the members known.
    pub fn retransmit_limit(&self) -> u32 {
        self.config.retransmit_multiplier * log10_ceil(self.members.len() as u64 + 1).max(1)
    }

    /// Every incarnation this member holds, with whose it is.
    pub fn incarnations(&self) -> Vec<(NodeId, Incarnation)> {
        let me = self.config.id;
        let mut all = vec![(me, self.incarnation), (me, self.persisted), (me, self.persist_issued)];
        all.extend(self.members.values().map(|e| (e.member.id, e.member.incarnation)));
        all.extend(self.changes.values().map(|m| (m.id, m.incarnation)));
        for o in self.messages_ready.iter().chain(&self.messages_gated) {
            all.extend(o.message.incarnations());
        }
        all
    }

    /// One line for traces.
    pub fn describe(&self) -> String {
        let mut text = format!("n{} incarnation {}", self.config.id.0, self.incarnation);
        if self.persisted < self.incarnation {
            text.push_str(&format!(" (durable {})", self.persisted));
        }
        if self.left {
            text.push_str(" LEFT");
        }
        let view: Vec<String> = self
            .members
            .values()
            .filter(|e| e.member.id != self.config.id)
            .map(|e| format!("n{} {}@{}", e.member.id.0, e.member.status, e.member.incarnation))
            .collect();
        text.push_str(&format!(": [{}]", view.join(", ")));
        if let Probe::Waiting { target, sequence, indirect_at, acked, direct_only } = &self.probe {
            let phase = if *acked {
                "acked"
            } else if *direct_only {
                "direct only"
            } else if indirect_at.is_some() {
                "direct"
            } else {
                "indirect"
            };
            text.push_str(&format!(" probing n{} #{sequence} ({phase})", target.0));
        }
        if !self.piggyback.is_empty() {
            let queue: Vec<String> = self.piggyback.iter().map(|(id, n)| format!("n{}x{n}", id.0)).collect();
            text.push_str(&format!(" gossiping {}", queue.join(" ")));
        }
        text
    }

    /// Checks what must hold between any two inputs.
    pub fn check_invariants(&self) -> Result<(), String> {
        let fail = |m: String| Err(format!("n{}: {m}", self.config.id.0));
        let me = self.me();
        let own_status = if self.left { Status::Left } else { Status::Alive };
        if me.status != own_status || me.incarnation != self.incarnation {
            return fail(format!("holds itself {} at {}, runs at {}", me.status, me.incarnation, self.incarnation));
        }
        if self.persisted > self.incarnation || self.persist_issued > self.incarnation {
            return fail(format!("durable incarnation {} above its own {}", self.persisted, self.incarnation));
        }
        if self.members.len() > self.config.members_max {
            return fail(format!("{} members, more than {}", self.members.len(), self.config.members_max));
        }
        for (id, e) in &self.members {
            if *id != e.member.id || e.suspect_deadline.is_some() != (e.member.status == Status::Suspect) {
                return fail(format!("inconsistent entry {} (deadline {:?})", e.member, e.suspect_deadline));
            }
        }
        let limit = self.retransmit_limit();
        for (id, count) in &self.piggyback {
            if !self.members.contains_key(id) || *count >= limit {
                return fail(format!("piggyback entry n{} sent {count} times (limit {limit})", id.0));
            }
        }
        for o in &self.messages_ready {
            if o.message.sender.incarnation > self.persisted {
                return fail(format!(
                    "a message announcing incarnation {} may leave before it is durable ({})",
                    o.message.sender.incarnation, self.persisted
                ));
            }
        }
        for o in self.messages_ready.iter().chain(&self.messages_gated) {
            if o.message.encoded_len() > self.config.message_bytes_max {
                return fail(format!("a message of {} bytes", o.message.encoded_len()));
            }
        }
        if self.messages_gated.len() > self.config.gated_messages_max {
            return fail(format!("{} messages wait for a persist", self.messages_gated.len()));
        }
        Ok(())
    }

    /// Moves every stored instant `earlier_by` into the past (an instant that falls at or
    /// before `now_after` becomes `now_after`: a timer that is due is due, however long ago),
    /// lowers every incarnation of member `m` by `incarnation_by(m)`, and every sequence
    /// number by `sequence_by(owner)`. The core only compares instants with `now`,
    /// incarnations of one member with each other and sequence numbers for equality with its
    /// latest, so a member relabelled this way behaves exactly as before if later inputs are
    /// relabelled the same way. The model checker uses it to keep states finite.
    pub fn relabel(
        &mut self,
        earlier_by: Duration,
        now_after: Instant,
        incarnation_by: &impl Fn(NodeId) -> u64,
        sequence_by: &impl Fn(NodeId) -> u64,
    ) {
        let shift = |t: &mut Instant| *t = Instant(t.0.saturating_sub(earlier_by.0)).max(now_after);
        shift(&mut self.next_probe_at);
        if let Probe::Waiting { indirect_at: Some(at), .. } = &mut self.probe {
            shift(at);
        }
        let me = self.config.id;
        for inc in [&mut self.incarnation, &mut self.persisted, &mut self.persist_issued] {
            inc.0 -= incarnation_by(me);
        }
        for e in self.members.values_mut() {
            e.member.incarnation.0 -= incarnation_by(e.member.id);
            if let Some(deadline) = &mut e.suspect_deadline {
                shift(deadline);
            }
        }
        for m in self.changes.values_mut() {
            m.incarnation.0 -= incarnation_by(m.id);
        }
        for o in self.messages_ready.iter_mut().chain(&mut self.messages_gated) {
            o.message.relabel(incarnation_by, sequence_by);
        }
        let by = sequence_by(me);
        self.sequence = self.sequence.saturating_sub(by);
        if let Probe::Waiting { sequence, .. } = &mut self.probe {
            *sequence = sequence.saturating_sub(by);
        }
    }

    // ---- internals ----------------------------------------------------------------------

    fn me(&self) -> &Member {
        &self.members[&self.config.id].member
    }

    fn sender(&self) -> Sender {
        Sender { id: self.config.id, address: self.config.address.clone(), incarnation: self.incarnation }
    }

    /// Some other member is believed to be running.
    fn joined(&self) -> bool {
        self.members.values().any(|e| e.member.id != self.config.id && e.member.status.is_up())
    }

    fn join(&mut self) {
        let seeds: Vec<Address> = self.config.seeds.iter().filter(|s| **s != self.config.address).cloned().collect();
        for seed in seeds {
            self.send(seed, Body::Join, None);
        }
    }

    fn send_join_ack(&mut self, to: Address) {
        let mut message = Message { sender: self.sender(), body: Body::JoinAck, updates: Vec::new() };
        let mut size = message.encoded_len_without_updates();
        // Running members first: they are what a joiner needs; the rest it learns by probing.
        let mut records: Vec<&Member> =
            self.members.values().map(|e| &e.member).filter(|m| m.id != self.config.id).collect();
        records.sort_by_key(|m| (!m.status.is_up(), m.id));
        for member in records {
            let len = member.encoded_len();
            if message.updates.len() == UPDATES_MAX || size + len > self.config.message_bytes_max {
                break;
            }
            size += len;
            message.updates.push(member.clone());
        }
        self.emit(Outgoing { to, message });
    }

    /// Builds a message to `to` (member `about`, if known) with as many updates as fit: first
    /// our record of the recipient if it is not Alive (so an accused member hears of it from
    /// anyone it talks to and can refute), then the piggyback queue, least sent first.
    fn send(&mut self, to: Address, body: Body, about: Option<NodeId>) {
        let mut message = Message { sender: self.sender(), body, updates: Vec::new() };
        let max = self.config.message_bytes_max;
        let mut size = message.encoded_len_without_updates();
        if let Some(entry) = about.and_then(|id| self.members.get(&id)) {
            let len = entry.member.encoded_len();
            if entry.member.status != Status::Alive && entry.member.id != self.config.id && size + len <= max {
                size += len;
                message.updates.push(entry.member.clone());
            }
        }
        let limit = self.retransmit_limit();
        let mut queue: Vec<(u32, NodeId)> = self.piggyback.iter().map(|(id, n)| (*n, *id)).collect();
        queue.sort_unstable();
        for (count, id) in queue {
            if message.updates.len() == UPDATES_MAX {
                break;
            }
            if message.updates.iter().any(|m| m.id == id) {
                continue;
            }
            let record = &self.members[&id].member;
            let len = record.encoded_len();
            if size + len > max {
                continue;
            }
            size += len;
            message.updates.push(record.clone());
            if count + 1 >= limit {
                self.piggyback.remove(&id);
            } else {
                self.piggyback.insert(id, count + 1);
            }
        }
        self.add_anti_entropy(&mut message, &mut size, about);
        debug_assert!(message.encoded_len() <= max);
        self.emit(Outgoing { to, message });
    }

    /// Fills what room is left with records in turn from the whole view, from the cursor on
    /// (this member's and the recipient's excepted: every message carries the sender's, and the
    /// recipient knows its own best). The cursor moves only when some candidates were left
    /// out, so a view that fits whole is sent whole every time and the cursor stands still.
    fn add_anti_entropy(&mut self, message: &mut Message, size: &mut usize, about: Option<NodeId>) {
        let wanted = self.config.anti_entropy_records;
        if wanted == 0 {
            return;
        }
        let after = self.anti_entropy_after;
        let candidates: Vec<NodeId> = self
            .members
            .range((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .chain(self.members.range(..=after))
            .map(|(id, _)| *id)
            .filter(|id| *id != self.config.id && Some(*id) != about && !message.updates.iter().any(|m| m.id == *id))
            .collect();
        let mut sent = 0;
        for id in &candidates {
            if sent == wanted || message.updates.len() == UPDATES_MAX {
                break;
            }
            let record = &self.members[id].member;
            let len = record.encoded_len();
            if *size + len > self.config.message_bytes_max {
                break;
            }
            *size += len;
            message.updates.push(record.clone());
            sent += 1;
        }
        if sent > 0 && sent < candidates.len() {
            self.anti_entropy_after = candidates[sent - 1];
        }
    }

    fn emit(&mut self, outgoing: Outgoing) {
        if outgoing.message.sender.incarnation <= self.persisted {
            self.messages_ready.push(outgoing);
        } else if self.messages_gated.len() < self.config.gated_messages_max {
            self.messages_gated.push(outgoing);
        }
    }

    /// Merges one record heard from the network into the view.
    fn merge(&mut self, now: Instant, update: Member) {
        if update.id == self.config.id {
            self.hear_about_myself(now, &update);
            return;
        }
        let Some(entry) = self.members.get(&update.id) else {
            if self.members.len() >= self.config.members_max && (!update.status.is_up() || !self.evict_one()) {
                return;
            }
            self.set(now, update);
            return;
        };
        let held = &entry.member;
        let replaces = match self.config.mutation {
            Some(Mutation::BlindMerge) => (update.incarnation, update.status) != (held.incarnation, held.status),
            Some(Mutation::DeadAlwaysWins) => {
                held.status != Status::Dead
                    && (update.status == Status::Dead
                        || supersedes((update.incarnation, update.status), (held.incarnation, held.status)))
            }
            None => supersedes((update.incarnation, update.status), (held.incarnation, held.status)),
        };
        if replaces {
            self.set(now, update);
        }
    }

    /// Someone says this member is suspect, dead or gone at an incarnation at least its own:
    /// refute with a higher one. (Anything about a lower incarnation is stale.)
    fn hear_about_myself(&mut self, now: Instant, update: &Member) {
        if self.config.mutated(Mutation::DeadAlwaysWins) {
            return;
        }
        let accused = update.status != Status::Alive && update.incarnation >= self.incarnation;
        // A record above our own incarnation can only come from a process that used our id
        // with a lost incarnation; out-bid it too.
        if accused || update.incarnation > self.incarnation {
            self.incarnation = Incarnation(update.incarnation.0.max(self.incarnation.0) + 1);
            let mut me = self.me().clone();
            me.incarnation = self.incarnation;
            self.set(now, me);
        }
    }

    /// Replaces (or adds) a record and starts passing it on.
    fn set(&mut self, now: Instant, member: Member) {
        let id = member.id;
        let was_up = self.members.get(&id).is_some_and(|e| e.member.status.is_up());
        let suspect_deadline = (member.status == Status::Suspect).then(|| now + self.config.suspicion_timeout);
        let probeable = member.status != Status::Left;
        self.changes.insert(id, member.clone());
        self.members.insert(id, Entry { member, suspect_deadline });
        self.piggyback.insert(id, 0);
        // A member that (re)appears is probed in this round rather than the next.
        if id != self.config.id && probeable && !was_up && !self.probe_order[self.probe_next..].contains(&id) {
            self.probe_order.push(id);
        }
    }

    /// Forgets a member that left or died, to make room; false if every member is running.
    fn evict_one(&mut self) -> bool {
        let victim = self
            .members
            .values()
            .filter(|e| e.member.id != self.config.id)
            .filter(|e| !e.member.status.is_up())
            .max_by_key(|e| (e.member.status, std::cmp::Reverse(e.member.id)))
            .map(|e| e.member.id);
        let Some(id) = victim else { return false };
        self.members.remove(&id);
        self.piggyback.remove(&id);
        if let Some(at) = self.probe_order.iter().position(|p| *p == id) {
            self.probe_order.remove(at);
            if at < self.probe_next {
                self.probe_next -= 1;
            }
        }
        true
    }

    fn finish_probe(&mut self, now: Instant) {
        if let Probe::Waiting { target, acked: false, direct_only: false, .. } = self.probe {
            if let Some(entry) = self.members.get(&target) {
                if entry.member.status == Status::Alive {
                    let mut suspect = entry.member.clone();
                    suspect.status = Status::Suspect;
                    self.set(now, suspect);
                }
            }
        }
        self.probe = Probe::Idle;
    }

    fn start_probe(&mut self, now: Instant, rng: &mut impl Entropy) {
        let Some(target) = self.next_target(rng) else { return };
        let entry = &self.members[&target];
        let address = entry.member.address.clone();
        // A member held Dead is still pinged now and then, so that one that was declared dead
        // while it ran (or came back) hears of it and refutes; but nobody else is bothered.
        let direct_only = !entry.member.status.is_up();
        let indirect_at = (!direct_only).then(|| now + self.config.probe_timeout);
        self.sequence += 1;
        let sequence = self.sequence;
        self.probe = Probe::Waiting { target, sequence, indirect_at, acked: false, direct_only };
        self.send(address, Body::Ping { sequence, prober: self.config.id }, Some(target));
    }

    /// The next member of this round, or of a freshly shuffled one.
    fn next_target(&mut self, rng: &mut impl Entropy) -> Option<NodeId> {
        for round in 0..2 {
            while self.probe_next < self.probe_order.len() {
                let id = self.probe_order[self.probe_next];
                self.probe_next += 1;
                if self.members.get(&id).is_some_and(|e| e.member.status != Status::Left) {
                    return Some(id);
                }
            }
            if round == 0 {
                let mut order: Vec<NodeId> = self
                    .members
                    .values()
                    .filter(|e| e.member.id != self.config.id && e.member.status != Status::Left)
                    .map(|e| e.member.id)
                    .collect();
                shuffle(&mut order, rng);
                self.probe_order = order;
                self.probe_next = 0;
            }
        }
        None
    }

    fn ask_for_indirect_probes(&mut self, target: NodeId, sequence: u64, rng: &mut impl Entropy) {
        let Some(entry) = self.members.get(&target) else { return };
        let target_address = entry.member.address.clone();
        let mut relays: Vec<(NodeId, Address)> = self
            .members
            .values()
            .filter(|e| e.member.id != self.config.id && e.member.id != target && e.member.status == Status::Alive)
            .map(|e| (e.member.id, e.member.address.clone()))
            .collect();
        // A partial shuffle picks k relays uniformly.
        let k = self.config.indirect_probes.min(relays.len());
        for i in 0..k {
            let j = i + rng.below((relays.len() - i) as u64) as usize;
            relays.swap(i, j);
        }
        for (id, address) in relays.into_iter().take(k) {
            let body = Body::PingReq { sequence, target, target_address: target_address.clone() };
            self.send(address, body, Some(id));
        }
    }
}

/// The smallest `d` with `10^d >= n`.
fn log10_ceil(n: u64) -> u32 {
    let mut digits = 0;
    let mut power = 1u64;
    while power < n {
        power = power.saturating_mul(10);
        digits += 1;
    }
    digits
}

/// Fisher-Yates with the caller's entropy.
fn shuffle<T>(items: &mut [T], rng: &mut impl Entropy) {
    for i in (1..items.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        items.swap(i, j);
    }
}

#[cfg(test)]
mod tests;
