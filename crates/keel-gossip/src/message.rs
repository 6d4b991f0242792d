//! What members say to each other, and its wire format.
//!
//! One message is one datagram:
//!
//! ```text
//! magic 0x4b ('K') | version 1 | kind u8
//! sender:  id i32 (big endian) | incarnation varint | address
//! body:    ping     sequence varint | prober i32
//!          ack      sequence varint | prober i32 | target i32
//!          ping-req sequence varint | target i32 | target address
//!          join, join-ack, leave: nothing
//! updates: count u8 | count x (id i32 | incarnation varint | status u8 | address)
//! address: length u8 | UTF-8 bytes
//! ```
//!
//! Varints are unsigned LEB128 of at most 10 bytes. Decoding checks
//! every length against the bytes present and rejects anything left over, so a datagram is
//! either a whole message or an error; it never allocates more than the datagram's size.

use keel_types::NodeId;

use crate::config::{ADDRESS_BYTES_MAX, MESSAGE_BYTES_MAX};
use crate::member::{Address, Incarnation, Member, Status};

const MAGIC: u8 = 0x4b;
const VERSION: u8 = 1;
/// Most updates one message carries (the count travels in one byte).
pub(crate) const UPDATES_MAX: usize = u8::MAX as usize;

/// Who sent a message: every message is also the sender's claim to be alive at this
/// incarnation, the most direct evidence there is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sender {
    pub id: NodeId,
    pub address: Address,
    pub incarnation: Incarnation,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Body {
    /// "Are you alive?" `prober` is the member waiting for the answer: the sender for a
    /// direct probe, the member that asked for it for an indirect one.
    Ping { sequence: u64, prober: NodeId },
    /// "`target` is alive", for the probe `sequence` of `prober`. A member that relayed an
    /// indirect probe passes the target's ack on to the prober unchanged.
    Ack { sequence: u64, prober: NodeId, target: NodeId },
    /// "Please probe `target` for me": SWIM's indirect probe.
    PingReq { sequence: u64, target: NodeId, target_address: Address },
    /// Sent to seeds by a member that knows no running member.
    Join,
    /// The answer to a join: the updates carry as much of the membership as fits.
    JoinAck,
    /// The sender leaves the cluster for good (until it starts again).
    Leave,
}

/// One datagram: the sender, what it asks or answers, and updates piggybacked on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Message {
    pub sender: Sender,
    pub body: Body,
    pub updates: Vec<Member>,
}

/// Why bytes are not a message. Decoding has no side effects, so nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("datagram ends inside {0}")]
    Truncated(&'static str),
    #[error("not a keel gossip datagram (first byte {0:#04x}, expected 0x4b)")]
    BadMagic(u8),
    #[error("gossip protocol version {0} is not supported (this node speaks version 1)")]
    UnsupportedVersion(u8),
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    #[error("unknown member status {0}")]
    UnknownStatus(u8),
    #[error("a varint is longer than 64 bits")]
    VarintOverflow,
    #[error("an address is empty or not UTF-8")]
    BadAddress,
    #[error("{0} bytes left over after the message")]
    TrailingBytes(usize),
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

fn address_len(address: &Address) -> usize {
    1 + address.0.len()
}

impl Member {
    /// Bytes this record takes in a message.
    pub fn encoded_len(&self) -> usize {
        4 + varint_len(self.incarnation.0) + 1 + address_len(&self.address)
    }
}

impl Message {
    /// Bytes [`Message::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len_without_updates() + self.updates.iter().map(Member::encoded_len).sum::<usize>()
    }

    /// The header, sender, body and update count.
    pub(crate) fn encoded_len_without_updates(&self) -> usize {
        let body = match &self.body {
            Body::Ping { sequence, .. } => varint_len(*sequence) + 4,
            Body::Ack { sequence, .. } => varint_len(*sequence) + 8,
            Body::PingReq { sequence, target_address, .. } => varint_len(*sequence) + 4 + address_len(target_address),
            Body::Join | Body::JoinAck | Body::Leave => 0,
        };
        3 + 4 + varint_len(self.sender.incarnation.0) + address_len(&self.sender.address) + body + 1
    }

    /// The longest bare message from `address`: a ping-req naming a target with the longest
    /// address and the largest numbers. A datagram limit below it could leave a member unable
    /// to say anything; above it, every message fits and updates take the room left.
    pub(crate) fn smallest_useful_len(address: &Address) -> usize {
        let message = Message {
            sender: Sender { id: NodeId(0), address: address.clone(), incarnation: Incarnation(u64::MAX) },
            body: Body::PingReq {
                sequence: u64::MAX,
                target: NodeId(0),
                target_address: Address("x".repeat(ADDRESS_BYTES_MAX)),
            },
            updates: Vec::new(),
        };
        message.encoded_len()
    }

    /// The message as one datagram. Panics if it breaks the format's own bounds (more than
    /// 255 updates, an address longer than 255 bytes): the core never builds such a message.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.updates.len() <= UPDATES_MAX, "{} updates in one message", self.updates.len());
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&[MAGIC, VERSION]);
        let kind = match &self.body {
            Body::Ping { .. } => 1,
            Body::Ack { .. } => 2,
            Body::PingReq { .. } => 3,
            Body::Join => 4,
            Body::JoinAck => 5,
            Body::Leave => 6,
        };
        out.push(kind);
        out.extend_from_slice(&self.sender.id.0.to_be_bytes());
        put_varint(&mut out, self.sender.incarnation.0);
        put_address(&mut out, &self.sender.address);
        match &self.body {
            Body::Ping { sequence, prober } => {
                put_varint(&mut out, *sequence);
                out.extend_from_slice(&prober.0.to_be_bytes());
            }
            Body::Ack { sequence, prober, target } => {
                put_varint(&mut out, *sequence);
                out.extend_from_slice(&prober.0.to_be_bytes());
                out.extend_from_slice(&target.0.to_be_bytes());
            }
            Body::PingReq { sequence, target, target_address } => {
                put_varint(&mut out, *sequence);
                out.extend_from_slice(&target.0.to_be_bytes());
                put_address(&mut out, target_address);
            }
            Body::Join | Body::JoinAck | Body::Leave => {}
        }
        out.push(self.updates.len() as u8);
        for member in &self.updates {
            out.extend_from_slice(&member.id.0.to_be_bytes());
            put_varint(&mut out, member.incarnation.0);
            out.push(member.status.code());
            put_address(&mut out, &member.address);
        }
        debug_assert_eq!(out.len(), self.encoded_len());
        out
    }

    /// Parses one datagram of at most `bytes_max` bytes (the receiver's
    /// `message_bytes_max`; never more than [`MESSAGE_BYTES_MAX`]).
    pub fn decode(bytes: &[u8], bytes_max: usize) -> Result<Message, DecodeError> {
        let max = bytes_max.min(MESSAGE_BYTES_MAX);
        if bytes.len() > max {
            return Err(DecodeError::TooLarge { len: bytes.len(), max });
        }
        let mut r = Reader { bytes, at: 0 };
        let magic = r.u8("the header")?;
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = r.u8("the header")?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let kind = r.u8("the header")?;
        let sender = Sender {
            id: r.node_id("the sender")?,
            incarnation: Incarnation(r.varint("the sender")?),
            address: r.address("the sender")?,
        };
        let body = match kind {
            1 => Body::Ping { sequence: r.varint("a ping")?, prober: r.node_id("a ping")? },
            2 => {
                Body::Ack { sequence: r.varint("an ack")?, prober: r.node_id("an ack")?, target: r.node_id("an ack")? }
            }
            3 => Body::PingReq {
                sequence: r.varint("a ping-req")?,
                target: r.node_id("a ping-req")?,
                target_address: r.address("a ping-req")?,
            },
            4 => Body::Join,
            5 => Body::JoinAck,
            6 => Body::Leave,
            other => return Err(DecodeError::UnknownKind(other)),
        };
        let count = r.u8("the update count")? as usize;
        // Each update takes at least 7 bytes, so the allocation is bounded by the datagram.
        let mut updates = Vec::with_capacity(count.min(r.remaining() / 7));
        for _ in 0..count {
            let id = r.node_id("an update")?;
            let incarnation = Incarnation(r.varint("an update")?);
            let code = r.u8("an update")?;
            let status = Status::from_code(code).ok_or(DecodeError::UnknownStatus(code))?;
            let address = r.address("an update")?;
            updates.push(Member { id, address, incarnation, status });
        }
        if r.remaining() > 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        Ok(Message { sender, body, updates })
    }

    /// Every incarnation the message mentions, with whose it is (for the model checker, which
    /// renumbers incarnations).
    pub fn incarnations(&self) -> impl Iterator<Item = (NodeId, Incarnation)> + '_ {
        std::iter::once((self.sender.id, self.sender.incarnation))
            .chain(self.updates.iter().map(|m| (m.id, m.incarnation)))
    }

    /// Lowers every incarnation of member `m` by `by(m)`, and every probe sequence number
    /// by `sequence_by(owner)`, the owner being the prober whose counter issued it. Used by the
    /// model checker, with [`crate::Gossip::relabel`], to keep states independent of how many
    /// probes and refutations came before; sequence numbers saturate at zero (stale).
    pub fn relabel(&mut self, by: &impl Fn(NodeId) -> u64, sequence_by: &impl Fn(NodeId) -> u64) {
        self.sender.incarnation.0 -= by(self.sender.id);
        for m in &mut self.updates {
            m.incarnation.0 -= by(m.id);
        }
        let owner = self.sequence_owner();
        match &mut self.body {
            Body::Ping { sequence, .. } | Body::Ack { sequence, .. } | Body::PingReq { sequence, .. } => {
                let owner = owner.expect("probe messages have an owner");
                *sequence = sequence.saturating_sub(sequence_by(owner));
            }
            Body::Join | Body::JoinAck | Body::Leave => {}
        }
    }

    /// Whose probe counter issued this message's sequence number, if it has one.
    pub fn sequence_owner(&self) -> Option<NodeId> {
        match &self.body {
            Body::Ping { prober, .. } | Body::Ack { prober, .. } => Some(*prober),
            Body::PingReq { .. } => Some(self.sender.id),
            Body::Join | Body::JoinAck | Body::Leave => None,
        }
    }

    /// The sequence number, if the message has one.
    pub fn sequence(&self) -> Option<u64> {
        match &self.body {
            Body::Ping { sequence, .. } | Body::Ack { sequence, .. } | Body::PingReq { sequence, .. } => {
                Some(*sequence)
            }
            Body::Join | Body::JoinAck | Body::Leave => None,
        }
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.body {
            Body::Ping { sequence, prober } if *prober == self.sender.id => write!(f, "ping #{sequence}")?,
            Body::Ping { sequence, prober } => write!(f, "ping #{sequence} for n{}", prober.0)?,
            Body::Ack { sequence, prober, target } => write!(f, "ack #{sequence} of n{} for n{}", target.0, prober.0)?,
            Body::PingReq { sequence, target, .. } => write!(f, "ping-req #{sequence} of n{}", target.0)?,
            Body::Join => f.write_str("join")?,
            Body::JoinAck => f.write_str("join-ack")?,
            Body::Leave => f.write_str("leave")?,
        }
        write!(f, " (sender at incarnation {})", self.sender.incarnation)?;
        if !self.updates.is_empty() {
            let updates: Vec<String> = self.updates.iter().map(Member::to_string).collect();
            write!(f, " [{}]", updates.join(", "))?;
        }
        Ok(())
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_address(out: &mut Vec<u8>, address: &Address) {
    assert!(address.0.len() <= ADDRESS_BYTES_MAX, "address of {} bytes", address.0.len());
    out.push(address.0.len() as u8);
    out.extend_from_slice(address.0.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(what));
        }
        let slice = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn node_id(&mut self, what: &'static str) -> Result<NodeId, DecodeError> {
        let b = self.take(4, what)?;
        Ok(NodeId(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    }

    fn varint(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for i in 0..10 {
            let byte = self.u8(what)?;
            let bits = u64::from(byte & 0x7f);
            // The tenth byte may only hold the top bit of a u64.
            if i == 9 && (byte & 0x80 != 0 || bits > 1) {
                return Err(DecodeError::VarintOverflow);
            }
            value |= bits << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        unreachable!("the tenth byte either ends the varint or is refused")
    }

    fn address(&mut self, what: &'static str) -> Result<Address, DecodeError> {
        let len = self.u8(what)? as usize;
        let bytes = self.take(len, what)?;
        if bytes.is_empty() {
            return Err(DecodeError::BadAddress);
        }
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::BadAddress)?;
        Ok(Address(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn member(id: i32, incarnation: u64, status: Status) -> Member {
        Member {
            id: NodeId(id),
            address: Address(format!("10.0.0.{id}:9093")),
            incarnation: Incarnation(incarnation),
            status,
        }
    }

    fn sample() -> Message {
        Message {
            sender: Sender { id: NodeId(1), address: Address::from("10.0.0.1:9093"), incarnation: Incarnation(300) },
            body: Body::PingReq { sequence: 129, target: NodeId(3), target_address: Address::from("10.0.0.3:9093") },
            updates: vec![member(2, 0, Status::Suspect), member(4, u64::MAX, Status::Left)],
        }
    }

    #[test]
    fn known_bytes() {
        let message = Message {
            sender: Sender { id: NodeId(2), address: Address::from("b"), incarnation: Incarnation(300) },
            body: Body::Ping { sequence: 5, prober: NodeId(2) },
            updates: vec![Member {
                id: NodeId(3),
                address: Address::from("c"),
                incarnation: Incarnation(1),
                status: Status::Dead,
            }],
        };
        let bytes = message.encode();
        assert_eq!(
            bytes,
            [
                0x4b, 1, 1, // magic, version, ping
                0, 0, 0, 2, 0xac, 0x02, 1, b'b', // sender n2, incarnation 300, address "b"
                5, 0, 0, 0, 2, // sequence 5, prober n2
                1, 0, 0, 0, 3, 1, 2, 1, b'c', // one update: n3 dead at 1, "c"
            ]
        );
        assert_eq!(message.encoded_len(), bytes.len());
        assert_eq!(Message::decode(&bytes, 1400), Ok(message));
    }

    #[test]
    fn every_kind_round_trips() {
        let bodies = [
            Body::Ping { sequence: 0, prober: NodeId(7) },
            Body::Ack { sequence: u64::MAX, prober: NodeId(1), target: NodeId(-1) },
            Body::PingReq { sequence: 1, target: NodeId(3), target_address: Address::from("x") },
            Body::Join,
            Body::JoinAck,
            Body::Leave,
        ];
        for body in bodies {
            let message = Message { body, ..sample() };
            let bytes = message.encode();
            assert_eq!(bytes.len(), message.encoded_len());
            assert_eq!(Message::decode(&bytes, MESSAGE_BYTES_MAX).as_ref(), Ok(&message));
        }
    }

    #[test]
    fn malformed_input_is_refused() {
        let good = sample().encode();
        assert_eq!(Message::decode(&[], 1400), Err(DecodeError::Truncated("the header")));
        let mut bad = good.clone();
        bad[0] = 0x00;
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::BadMagic(0)));
        let mut bad = good.clone();
        bad[1] = 2;
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::UnsupportedVersion(2)));
        let mut bad = good.clone();
        bad[2] = 9;
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::UnknownKind(9)));
        // Every proper prefix is truncated somewhere.
        for len in 0..good.len() {
            assert!(
                matches!(Message::decode(&good[..len], 1400), Err(DecodeError::Truncated(_))),
                "prefix of {len} bytes"
            );
        }
        let mut bad = good.clone();
        bad.push(0);
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::TrailingBytes(1)));
        assert_eq!(
            Message::decode(&good, good.len() - 1),
            Err(DecodeError::TooLarge { len: good.len(), max: good.len() - 1 })
        );
        // An unknown status: the status byte of the last update sits before its address.
        let mut bad = good.clone();
        let status_at = good.len() - 1 - "10.0.0.4:9093".len() - 1;
        assert_eq!(bad[status_at], 3);
        bad[status_at] = 7;
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::UnknownStatus(7)));
        // An address that is not UTF-8.
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] = 0xff;
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::BadAddress));
        // A varint of eleven bytes, and a tenth byte carrying more than 64 bits.
        let mut bad = good[..7].to_vec();
        bad.extend_from_slice(&[0xff; 10]);
        bad.push(0);
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::VarintOverflow));
        let mut bad = good[..7].to_vec();
        bad.extend_from_slice(&[0xff; 9]);
        bad.push(0x02);
        assert_eq!(Message::decode(&bad, 1400), Err(DecodeError::VarintOverflow));
        // An update count larger than the updates present.
        let mut bad = good.clone();
        let count_at = sample().encoded_len_without_updates() - 1;
        bad[count_at] = 200;
        assert!(matches!(Message::decode(&bad, 1400), Err(DecodeError::Truncated("an update"))));
    }

    fn arb_address() -> impl Strategy<Value = Address> {
        "[a-z0-9.:é]{1,40}".prop_map(Address)
    }

    fn arb_member() -> impl Strategy<Value = Member> {
        (any::<i32>(), arb_address(), any::<u64>(), 0u8..4).prop_map(|(id, address, incarnation, status)| Member {
            id: NodeId(id),
            address,
            incarnation: Incarnation(incarnation),
            status: Status::from_code(status).expect("0..4 are statuses"),
        })
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        prop_oneof![
            (any::<u64>(), any::<i32>()).prop_map(|(s, p)| Body::Ping { sequence: s, prober: NodeId(p) }),
            (any::<u64>(), any::<i32>(), any::<i32>()).prop_map(|(s, p, t)| Body::Ack {
                sequence: s,
                prober: NodeId(p),
                target: NodeId(t)
            }),
            (any::<u64>(), any::<i32>(), arb_address()).prop_map(|(s, t, a)| Body::PingReq {
                sequence: s,
                target: NodeId(t),
                target_address: a
            }),
            Just(Body::Join),
            Just(Body::JoinAck),
            Just(Body::Leave),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (any::<i32>(), arb_address(), any::<u64>(), arb_body(), proptest::collection::vec(arb_member(), 0..20))
            .prop_map(|(id, address, incarnation, body, updates)| Message {
                sender: Sender { id: NodeId(id), address, incarnation: Incarnation(incarnation) },
                body,
                updates,
            })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(message in arb_message()) {
            let bytes = message.encode();
            prop_assert_eq!(bytes.len(), message.encoded_len());
            prop_assert_eq!(Message::decode(&bytes, MESSAGE_BYTES_MAX), Ok(message));
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_what_decodes_re_encodes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(message) = Message::decode(&bytes, MESSAGE_BYTES_MAX) {
                // A decoded message is canonical: encoding it gives back the same bytes, except
                // that a varint may have been written with redundant continuation bytes.
                let again = message.encode();
                prop_assert!(again.len() <= bytes.len());
                prop_assert_eq!(Message::decode(&again, MESSAGE_BYTES_MAX), Ok(message));
            }
        }

        #[test]
        fn flipped_bytes_decode_or_fail_cleanly(message in arb_message(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = message.encode();
            let i = at.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let _ = Message::decode(&bytes, MESSAGE_BYTES_MAX);
        }
    }
}
