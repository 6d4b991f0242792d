//! The lossy, duplicating, delaying network the raft and cluster scenarios share: how bad it
//! is in a run (drawn per seed), what happens to one message on its way out, and the shapes
//! their partitions cut it into. The scenario keeps its own queue entries and trace lines; the
//! network only draws, from the streams it is handed, in the order both scenarios drew before
//! it existed.

use std::collections::BTreeSet;

use keel_types::{Duration, Rng};

use crate::harness::upto;

/// A partition cuts the directed links (from, to) it holds.
pub(crate) type Links = BTreeSet<(usize, usize)>;

/// The most a run's network may lose, duplicate and delay (a scenario's fault options).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NetworkFaults {
    pub(crate) loss_percent_max: u64,
    pub(crate) duplicate_percent_max: u64,
    pub(crate) spike_percent_max: u64,
    /// The shortest upper bound a run may draw for a message's delay.
    pub(crate) delay_us_max_min: u64,
    pub(crate) delay_ms_max: u64,
}

/// A run's network: how often it loses, duplicates and delays a message (drawn per seed), and
/// how many messages are on the wire.
#[derive(Debug)]
pub(crate) struct Network {
    pub(crate) loss_percent: u64,
    pub(crate) duplicate_percent: u64,
    pub(crate) spike_percent: u64,
    pub(crate) delay_us_max: u64,
    /// Messages sent and not yet delivered or dropped.
    pub(crate) in_flight: usize,
    /// Most messages on the wire at once; beyond it the network drops, as a full buffer would.
    in_flight_max: usize,
    rng: Rng,
}

impl Network {
    /// A network as bad as `knobs` draws within `faults`, sending with draws from `rng`.
    pub(crate) fn draw(knobs: &mut Rng, faults: NetworkFaults, in_flight_max: usize, rng: Rng) -> Network {
        let loss_percent = upto(knobs, faults.loss_percent_max);
        let duplicate_percent = upto(knobs, faults.duplicate_percent_max);
        let spike_percent = upto(knobs, faults.spike_percent_max);
        let delay_us_max = knobs.range_inclusive(faults.delay_us_max_min, faults.delay_ms_max.max(1) * 1_000);
        Network { loss_percent, duplicate_percent, spike_percent, delay_us_max, in_flight: 0, in_flight_max, rng }
    }

    /// Sends one message over a link that is `cut` or not: the delay of each copy that goes
    /// out (two when the network duplicates it), or why none does.
    pub(crate) fn send(&mut self, cut: bool) -> Result<Vec<Duration>, &'static str> {
        if cut {
            return Err("cut");
        }
        if self.in_flight >= self.in_flight_max {
            return Err("network full");
        }
        if self.rng.chance(self.loss_percent, 100) {
            return Err("lost");
        }
        let copies = if self.rng.chance(self.duplicate_percent, 100) { 2 } else { 1 };
        let delays: Vec<Duration> = (0..copies).map(|_| self.delay()).collect();
        self.in_flight += delays.len();
        Ok(delays)
    }

    /// Faults stop: no more loss, duplicates or delay spikes.
    pub(crate) fn calm(&mut self) {
        self.loss_percent = 0;
        self.duplicate_percent = 0;
        self.spike_percent = 0;
    }

    fn delay(&mut self) -> Duration {
        let mut us = self.rng.range_inclusive(100, self.delay_us_max.max(100));
        if self.rng.chance(self.spike_percent, 100) {
            us *= self.rng.range_inclusive(5, 20);
        }
        Duration(us * 1_000)
    }
}

/// Cuts the links between `a` and `b` both ways.
pub(crate) fn cut_both(links: &mut Links, a: usize, b: usize) {
    links.insert((a, b));
    links.insert((b, a));
}

/// Cuts `node` off from every other node below `nodes`, both ways.
pub(crate) fn isolate(links: &mut Links, node: usize, nodes: usize) {
    for other in (0..nodes).filter(|o| *o != node) {
        cut_both(links, node, other);
    }
}

/// Cuts every link between the nodes on one `side` and those on the other, both ways.
pub(crate) fn split(links: &mut Links, side: &[bool]) {
    for a in 0..side.len() {
        for b in 0..side.len() {
            if side[a] && !side[b] {
                cut_both(links, a, b);
            }
        }
    }
}

/// Cuts each directed link between two of `nodes` with a chance of one in `one_in`.
pub(crate) fn cut_one_way_at_random(links: &mut Links, nodes: usize, rng: &mut Rng, one_in: u64) {
    for a in 0..nodes {
        for b in (0..nodes).filter(|b| *b != a) {
            if rng.chance(1, one_in) {
                links.insert((a, b));
            }
        }
    }
}

/// The nodes on side `want` of a split, named by `name`, for a trace line.
pub(crate) fn show_side(side: &[bool], want: bool, name: impl Fn(usize) -> String) -> String {
    (0..side.len()).filter(|i| side[*i] == want).map(name).collect::<Vec<_>>().join(",")
}

/// The links cut, each as `from->to` with the nodes named by `name`, for a trace line.
pub(crate) fn show_links(links: &Links, name: impl Fn(usize) -> String) -> String {
    links.iter().map(|(a, b)| format!("{}->{}", name(*a), name(*b))).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet_network(in_flight_max: usize) -> Network {
        let faults = NetworkFaults {
            loss_percent_max: 0,
            duplicate_percent_max: 0,
            spike_percent_max: 0,
            delay_us_max_min: 1_000,
            delay_ms_max: 1,
        };
        Network::draw(&mut Rng::new(1), faults, in_flight_max, Rng::new(2))
    }

    #[test]
    fn a_message_goes_out_once_unless_the_link_is_cut_or_the_network_full() {
        let mut network = quiet_network(1);
        assert_eq!(network.send(true), Err("cut"));
        let delays = network.send(false).unwrap();
        assert_eq!(delays.len(), 1);
        assert!((Duration(100_000)..=Duration(1_000_000)).contains(&delays[0]), "{delays:?}");
        assert_eq!(network.in_flight, 1);
        assert_eq!(network.send(false), Err("network full"));
    }

    #[test]
    fn partition_shapes_cut_the_links_they_say() {
        let mut links = Links::new();
        isolate(&mut links, 1, 3);
        assert_eq!(links, Links::from([(0, 1), (1, 0), (1, 2), (2, 1)]));
        let mut links = Links::new();
        let side = [true, false, true];
        split(&mut links, &side);
        assert_eq!(links, Links::from([(0, 1), (1, 0), (2, 1), (1, 2)]));
        let name = |i: usize| format!("n{}", i + 1);
        assert_eq!(show_side(&side, true, name), "n1,n3");
        assert_eq!(show_links(&Links::from([(0, 1), (2, 0)]), name), "n1->n2 n3->n1");
    }
}
