//! What only a view of every member can check and measure: each running member's record of
//! every other member against what really runs, after every step.
//!
//! The oracle keeps a copy of every running member's view (refreshed from
//! [`Gossip::members`] after each input to that member), and from it:
//!
//! - checks that incarnations never go back (a member's own, the durable one, and every record a
//!   running member holds), that no member holds an incarnation of another above the one that
//!   member has made durable (no announcement leaves before its persist), and that a running
//!   member holds itself Alive;
//! - measures detection: from a crash to the moment no running member holds the crashed member
//!   Alive or Suspect (a member that restarts first is not counted);
//! - measures false positives: a running member's current life declared Dead by some running
//!   member, counted once per (member, incarnation), and the member-time during which some
//!   running member holds a running member Dead, both outside partitions;
//! - decides convergence: every running member holds every running member Alive or Suspect, and
//!   no running member holds a crashed member Alive or Suspect.

use std::collections::{BTreeMap, BTreeSet};

use keel_gossip::{Address, Gossip, Incarnation, Status};
use keel_types::{Duration, Instant, NodeId};

/// What one member holds about another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Record {
    incarnation: Incarnation,
    status: Status,
}

/// A crash not yet seen by everyone.
#[derive(Debug, Clone, Copy)]
struct Pending {
    crashed_at: Instant,
    first_suspicion: Option<Instant>,
    first_dead: Option<Instant>,
}

/// One crash that every running member came to see before the crashed member restarted.
/// Times are milliseconds from the crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub node: NodeId,
    pub crashed_at_ms: u64,
    /// Until some running member held it Suspect (or Dead).
    pub first_suspicion_ms: u64,
    /// Until some running member held it Dead.
    pub first_dead_ms: u64,
    /// Until no running member held it Alive or Suspect: the detection time.
    pub everyone_ms: u64,
}

#[derive(Debug)]
pub(crate) struct Oracle {
    addresses: Vec<Address>,
    running: Vec<bool>,
    running_count: u64,
    /// The incarnation each member's current (or last) life started at.
    life_incarnation: Vec<Incarnation>,
    /// Each running member's own incarnation, as last seen.
    own: Vec<Incarnation>,
    /// What each member's disk holds.
    durable: Vec<Incarnation>,
    /// `views[o][j]`: running member `o`'s record of `j`; all `None` while `o` is down.
    views: Vec<Vec<Option<Record>>>,
    /// The highest incarnation of `j` that `o` held in its current life.
    high_water: Vec<Vec<Incarnation>>,
    /// Running members holding `j` Alive or Suspect.
    up_holders: Vec<usize>,
    /// Running members holding the running member `j` Dead at its current life, by a
    /// declaration made outside partitions.
    accusers: Vec<usize>,
    /// `counted[o][j]`: `o`'s record of `j` is one of `accusers[j]`.
    counted: Vec<Vec<bool>>,
    /// Running members with at least one accuser.
    accused_count: u64,
    pending: BTreeMap<usize, Pending>,
    pub(crate) detections: Vec<Detection>,
    /// Crashes whose member restarted before everyone saw it dead.
    pub(crate) detections_interrupted: u64,
    /// Crashes during (or just after) a partition, which detection does not count.
    pub(crate) crashes_excused: u64,
    false_accusations: BTreeSet<(usize, Incarnation)>,
    false_suspicions: BTreeSet<(usize, Incarnation)>,
    /// Times a running member raised its incarnation (refuted).
    pub(crate) refutations: u64,
    partition_active: bool,
    /// A partition's accusations take up to a suspicion timeout and some periods to settle
    /// after it heals; until then nothing counts as a false positive.
    excused_until: Instant,
    excuse: Duration,
    accounted_to: Instant,
    pub(crate) false_positive_node_ns: u64,
    pub(crate) observed_node_ns: u64,
}

impl Oracle {
    /// Nothing counts as a false positive before `formed` (the cluster forms) or within
    /// `excuse` after a partition heals.
    pub(crate) fn new(addresses: Vec<Address>, formed: Instant, excuse: Duration) -> Oracle {
        let n = addresses.len();
        Oracle {
            addresses,
            running: vec![false; n],
            running_count: 0,
            life_incarnation: vec![Incarnation(0); n],
            own: vec![Incarnation(0); n],
            durable: vec![Incarnation(0); n],
            views: vec![vec![None; n]; n],
            high_water: vec![vec![Incarnation(0); n]; n],
            up_holders: vec![0; n],
            accusers: vec![0; n],
            counted: vec![vec![false; n]; n],
            accused_count: 0,
            pending: BTreeMap::new(),
            detections: Vec::new(),
            detections_interrupted: 0,
            crashes_excused: 0,
            false_accusations: BTreeSet::new(),
            false_suspicions: BTreeSet::new(),
            refutations: 0,
            partition_active: false,
            excused_until: formed,
            excuse,
            accounted_to: Instant::ZERO,
            false_positive_node_ns: 0,
            observed_node_ns: 0,
        }
    }

    pub(crate) fn false_positives(&self) -> u64 {
        self.false_accusations.len() as u64
    }

    pub(crate) fn false_suspicions(&self) -> u64 {
        self.false_suspicions.len() as u64
    }

    fn index(&self, id: NodeId) -> Option<usize> {
        usize::try_from(id.0).ok().and_then(|i| i.checked_sub(1)).filter(|i| *i < self.addresses.len())
    }

    fn excused(&self, now: Instant) -> bool {
        self.partition_active || now < self.excused_until
    }

    pub(crate) fn partition_started(&mut self) {
        self.partition_active = true;
    }

    pub(crate) fn partition_healed(&mut self, now: Instant) {
        self.partition_active = false;
        self.excused_until = now + self.excuse;
    }

    /// Accounts member-time up to `now`; call before every step.
    pub(crate) fn advance(&mut self, now: Instant) {
        let elapsed = now.saturating_since(self.accounted_to).0;
        if !self.excused(now) {
            self.observed_node_ns += elapsed * self.running_count;
            self.false_positive_node_ns += elapsed * self.accused_count;
        }
        self.accounted_to = now;
    }

    /// The record accuses the running member `j` in its current life.
    fn accuses(&self, j: usize, record: Option<Record>) -> bool {
        record.is_some_and(|r| self.running[j] && r.status == Status::Dead && r.incarnation >= self.life_incarnation[j])
    }

    fn add_accusers(&mut self, j: usize, count: usize) {
        let before = self.accusers[j] > 0;
        self.accusers[j] = count;
        let after = count > 0;
        match (before, after) {
            (false, true) => self.accused_count += 1,
            (true, false) => self.accused_count -= 1,
            _ => {}
        }
    }

    /// A disk write of member `j` completed.
    pub(crate) fn durable_written(&mut self, j: usize, incarnation: Incarnation) -> Result<(), String> {
        if incarnation < self.durable[j] {
            return Err(format!(
                "n{}'s durable incarnation goes back from {} to {incarnation}",
                j + 1,
                self.durable[j]
            ));
        }
        self.durable[j] = incarnation;
        Ok(())
    }

    /// Member `j` started (or restarted) at `incarnation`.
    pub(crate) fn started(&mut self, j: usize, incarnation: Incarnation) -> Result<(), String> {
        if incarnation <= self.durable[j] {
            return Err(format!(
                "n{} starts at incarnation {incarnation}, not above its durable {}",
                j + 1,
                self.durable[j]
            ));
        }
        self.running[j] = true;
        self.running_count += 1;
        self.life_incarnation[j] = incarnation;
        self.own[j] = incarnation;
        if self.pending.remove(&j).is_some() {
            self.detections_interrupted += 1;
        }
        // Records about earlier lives do not accuse this one, and none about it exist yet.
        for o in 0..self.views.len() {
            self.counted[o][j] = false;
        }
        self.add_accusers(j, 0);
        Ok(())
    }

    /// Member `o` crashed: its view is gone, and its detection starts.
    pub(crate) fn crashed(&mut self, o: usize, now: Instant) {
        for j in 0..self.views.len() {
            if self.views[o][j].is_some() {
                self.change(o, j, None, now);
            }
            self.high_water[o][j] = Incarnation(0);
        }
        self.running[o] = false;
        self.running_count -= 1;
        for h in 0..self.views.len() {
            self.counted[h][o] = false;
        }
        self.add_accusers(o, 0);
        if self.excused(now) {
            self.crashes_excused += 1;
            return;
        }
        let held = |status: Status| {
            (0..self.views.len()).any(|h| self.views[h][o].is_some_and(|r| r.status >= status)).then_some(now)
        };
        let pending =
            Pending { crashed_at: now, first_suspicion: held(Status::Suspect), first_dead: held(Status::Dead) };
        self.pending.insert(o, pending);
    }

    /// Checks running member `o` after an input and refreshes its view.
    pub(crate) fn observe(&mut self, o: usize, gossip: &Gossip, now: Instant) -> Result<(), String> {
        gossip.check_invariants()?;
        let name = o + 1;
        let own = gossip.incarnation();
        if own < self.own[o] {
            return Err(format!("n{name}'s incarnation goes back from {} to {own} while it runs", self.own[o]));
        }
        if own > self.own[o] {
            self.refutations += 1;
            self.own[o] = own;
        }
        match gossip.member(gossip.id()) {
            Some(me) if me.status == Status::Alive => {}
            Some(me) => return Err(format!("running n{name} holds itself {}", me)),
            None => return Err(format!("running n{name} does not hold itself")),
        }
        let mut row: Vec<Option<Record>> = vec![None; self.views.len()];
        for member in gossip.members() {
            let Some(j) = self.index(member.id) else {
                return Err(format!("n{name} holds n{}, which is not a member of the cluster", member.id.0));
            };
            if j == o {
                continue;
            }
            if member.address != self.addresses[j] {
                return Err(format!("n{name} holds n{} at address {:?}", j + 1, member.address.0));
            }
            if member.incarnation > self.durable[j] {
                return Err(format!(
                    "n{name} holds {member}, above the incarnation n{} has made durable ({}): an announcement \
                     left before its persist",
                    j + 1,
                    self.durable[j]
                ));
            }
            if member.incarnation < self.high_water[o][j] {
                return Err(format!(
                    "n{name}'s record of n{} goes back from incarnation {} to {member}",
                    j + 1,
                    self.high_water[o][j]
                ));
            }
            self.high_water[o][j] = member.incarnation;
            row[j] = Some(Record { incarnation: member.incarnation, status: member.status });
        }
        for (j, record) in row.into_iter().enumerate() {
            if record != self.views[o][j] {
                self.change(o, j, record, now);
            }
        }
        Ok(())
    }

    fn change(&mut self, o: usize, j: usize, record: Option<Record>, now: Instant) {
        let old = self.views[o][j];
        let up = |r: Option<Record>| r.is_some_and(|r| r.status.is_up());
        match (up(old), up(record)) {
            (false, true) => self.up_holders[j] += 1,
            (true, false) => self.up_holders[j] -= 1,
            _ => {}
        }
        // An accusation made during a partition is the partition's doing, and is left out of
        // the false-positive time for as long as that record stands.
        let counts = self.accuses(j, record) && !self.excused(now);
        if self.counted[o][j] != counts {
            let count = if counts { self.accusers[j] + 1 } else { self.accusers[j] - 1 };
            self.counted[o][j] = counts;
            self.add_accusers(j, count);
        }
        self.views[o][j] = record;
        let Some(r) = record else { return };
        if self.running[j] && r.incarnation >= self.life_incarnation[j] && !self.excused(now) {
            match r.status {
                Status::Suspect => {
                    self.false_suspicions.insert((j, r.incarnation));
                }
                Status::Dead => {
                    self.false_accusations.insert((j, r.incarnation));
                }
                Status::Alive | Status::Left => {}
            }
        }
        if let Some(pending) = self.pending.get_mut(&j) {
            if r.status >= Status::Suspect && pending.first_suspicion.is_none() {
                pending.first_suspicion = Some(now);
            }
            if r.status >= Status::Dead && pending.first_dead.is_none() {
                pending.first_dead = Some(now);
            }
        }
    }

    /// Completes the detection of every crashed member no running member holds up any more.
    pub(crate) fn settle_detections(&mut self, now: Instant) {
        let done: Vec<usize> = self.pending.keys().copied().filter(|x| self.up_holders[*x] == 0).collect();
        for x in done {
            let Some(p) = self.pending.remove(&x) else { continue };
            let since = |t: Option<Instant>| t.unwrap_or(now).saturating_since(p.crashed_at).as_millis();
            self.detections.push(Detection {
                node: NodeId(x as i32 + 1),
                crashed_at_ms: p.crashed_at.as_millis(),
                first_suspicion_ms: since(p.first_suspicion),
                first_dead_ms: since(p.first_dead),
                everyone_ms: since(Some(now)),
            });
        }
    }

    /// Why the views do not match reality yet (the first few mismatches), or `None` when every
    /// running member holds every running member Alive or Suspect and no crashed member so.
    pub(crate) fn mismatches(&self, shown_max: usize) -> Option<(usize, Vec<String>)> {
        let n = self.views.len();
        let mut count = 0;
        let mut shown = Vec::new();
        for o in (0..n).filter(|o| self.running[*o]) {
            for j in (0..n).filter(|j| *j != o) {
                let record = self.views[o][j];
                let up = record.is_some_and(|r| r.status.is_up());
                if up == self.running[j] {
                    continue;
                }
                count += 1;
                if shown.len() < shown_max {
                    let held = match record {
                        Some(r) => format!("{}@{}", r.status, r.incarnation),
                        None => "nothing".to_string(),
                    };
                    let reality = if self.running[j] {
                        format!("runs at incarnation {}", self.own[j])
                    } else {
                        "is down".to_string()
                    };
                    shown.push(format!("n{} holds n{} {held}, but n{} {reality}", o + 1, j + 1, j + 1));
                }
            }
        }
        (count > 0).then_some((count, shown))
    }
}
