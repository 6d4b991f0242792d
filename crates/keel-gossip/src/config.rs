//! Configuration of one member, validated once at construction.

use std::fmt;

use keel_types::{Duration, NodeId};

use crate::member::Address;

/// The largest datagram payload IPv4 UDP can carry; no configuration may exceed it.
pub const MESSAGE_BYTES_MAX: usize = 65_507;
/// The longest address a member may have (its length travels in one byte).
pub const ADDRESS_BYTES_MAX: usize = 255;

/// A deliberately planted bug. The model checker must catch each one (a test per mutant
/// proves it does, so we know the checks can fail). Production configs use `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// Naive gossip: whatever a node hears about another member replaces what it holds,
    /// whatever the incarnations. Two nodes that disagree keep overwriting each other.
    BlindMerge,
    /// Dead is final: a Dead record is never replaced and beats every other record whatever
    /// the incarnations, and a node never refutes an accusation against itself.
    DeadAlwaysWins,
}

/// The configuration of one member.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Config {
    /// This member.
    pub id: NodeId,
    /// Where this member receives datagrams; gossiped to the others.
    pub address: Address,
    /// Addresses to join through. Own address is skipped, so every member of a cluster may
    /// be given the same list.
    pub seeds: Vec<Address>,
    /// SWIM's protocol period: one member is probed per period.
    pub probe_interval: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly. Must be
    /// below `probe_interval`: the indirect probe has the rest of the period.
    pub probe_timeout: Duration,
    /// SWIM's `k`: members asked to probe an unresponsive member on our behalf.
    pub indirect_probes: usize,
    /// A Suspect member that has not refuted within this time is declared Dead.
    pub suspicion_timeout: Duration,
    /// SWIM's lambda: an update is piggybacked on at most
    /// `retransmit_multiplier * ceil(log10(members + 1))` messages (memberlist's rule).
    pub retransmit_multiplier: u32,
    /// Anti-entropy: every message also carries up to this many records taken in turn from
    /// the whole view (a cursor rotates over it), whether they changed lately or not. Bounded
    /// retransmission alone can lose news for good: a refutation whose few retransmits all went
    /// to members that did not need it never reaches the one that does. This is memberlist's
    /// push-pull, spread thin over every datagram instead of a periodic full exchange.
    /// 0 turns it off.
    pub anti_entropy_records: usize,
    /// Most members held, this one included. Beyond it, members that left or died are
    /// forgotten first; news of further members is dropped.
    pub members_max: usize,
    /// Largest encoded message. Updates that do not fit wait for the next message.
    pub message_bytes_max: usize,
    /// Most messages held back while an incarnation is being persisted; later ones are
    /// dropped (datagrams may be lost anyway, and the protocol retries).
    pub gated_messages_max: usize,
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
    /// Defaults close to memberlist's LAN profile: a probe per second, an indirect probe after
    /// 500 ms through 3 members, 5 s of suspicion, 1400-byte datagrams (fit an Ethernet MTU).
    pub fn new(id: NodeId, address: Address, seeds: Vec<Address>) -> Config {
        Config {
            id,
            address,
            seeds,
            probe_interval: Duration::from_millis(1000),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_timeout: Duration::from_millis(5000),
            retransmit_multiplier: 4,
            anti_entropy_records: 2,
            members_max: 1024,
            message_bytes_max: 1400,
            gated_messages_max: 256,
            mutation: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |m: String| Err(ConfigError(m));
        if self.address.0.is_empty() || self.address.0.len() > ADDRESS_BYTES_MAX {
            return err(format!("the address must be 1 to {ADDRESS_BYTES_MAX} bytes, not {}", self.address.0.len()));
        }
        if let Some(seed) = self.seeds.iter().find(|s| s.0.is_empty() || s.0.len() > ADDRESS_BYTES_MAX) {
            return err(format!("seed address \"{seed}\" must be 1 to {ADDRESS_BYTES_MAX} bytes"));
        }
        if self.probe_interval.0 == 0 || self.probe_timeout.0 == 0 || self.probe_timeout >= self.probe_interval {
            return err(format!(
                "the probe timeout ({} ms) must be positive and below the probe interval ({} ms), which leaves \
                 time for the indirect probe",
                self.probe_timeout.as_millis(),
                self.probe_interval.as_millis()
            ));
        }
        if self.suspicion_timeout.0 == 0 {
            return err("the suspicion timeout must be positive, or a member cannot refute".into());
        }
        if self.retransmit_multiplier == 0 {
            return err("retransmit_multiplier must be at least 1, or no update is ever passed on".into());
        }
        if self.members_max < 2 || self.members_max > u16::MAX as usize {
            return err(format!("members_max must lie between 2 and {}", u16::MAX));
        }
        let smallest = crate::message::Message::smallest_useful_len(&self.address);
        if self.message_bytes_max < smallest || self.message_bytes_max > MESSAGE_BYTES_MAX {
            return err(format!(
                "message_bytes_max must lie between {smallest} (a ping-req to the longest address) and {MESSAGE_BYTES_MAX} \
                 (a UDP datagram), not {}",
                self.message_bytes_max
            ));
        }
        if self.gated_messages_max == 0 {
            return err("gated_messages_max must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn mutated(&self, mutation: Mutation) -> bool {
        self.mutation == Some(mutation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::new(NodeId(1), Address::from("10.0.0.1:9093"), vec![Address::from("10.0.0.2:9093")])
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn validation_table() {
        type Change = fn(&mut Config);
        let table: [(&str, Change, &str); 8] = [
            ("empty address", |c| c.address = Address::from(""), "address"),
            ("long address", |c| c.address = Address("x".repeat(256)), "address"),
            ("bad seed", |c| c.seeds.push(Address::from("")), "seed"),
            ("timeout = interval", |c| c.probe_timeout = c.probe_interval, "probe timeout"),
            ("no suspicion", |c| c.suspicion_timeout = Duration::ZERO, "suspicion"),
            ("no retransmits", |c| c.retransmit_multiplier = 0, "retransmit"),
            ("one member", |c| c.members_max = 1, "members_max"),
            ("tiny datagrams", |c| c.message_bytes_max = 200, "message_bytes_max"),
        ];
        for (name, change, expect) in table {
            let mut c = config();
            change(&mut c);
            let error = c.validate().expect_err(name).0;
            assert!(error.contains(expect), "{name}: {error}");
        }
        let mut c = config();
        c.message_bytes_max = MESSAGE_BYTES_MAX + 1;
        assert!(c.validate().is_err());
        c.message_bytes_max = MESSAGE_BYTES_MAX;
        assert!(c.validate().is_ok());
    }
}
