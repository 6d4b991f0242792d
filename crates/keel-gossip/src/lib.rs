//! keel's membership: SWIM failure detection and dissemination with incarnation numbers, as a
//! pure state machine.
//!
//! It owns each node's view of the cluster (every member's address, incarnation and status:
//! Alive, Suspect, Dead or Left), the probe schedule (one member per protocol period,
//! round-robin over a list shuffled with the caller's PRNG), indirect probes through `k` other
//! members, suspicion with a timeout, the merge rule (a higher incarnation wins; at equal
//! incarnations Left > Dead > Suspect > Alive), refutation (a node that hears itself suspected
//! or declared dead at its current incarnation bumps its incarnation and announces itself
//! Alive), joining through seed addresses, graceful leave, dissemination of updates
//! piggybacked on probe traffic with a bounded number of retransmissions, and the wire format
//! of its datagrams ([`Message::encode`], [`Message::decode`]).
//!
//! It never does IO, reads a clock, spawns threads or draws unseeded randomness. Inputs come in
//! through `handle_*` with `now` and an [`Entropy`](keel_types::Entropy) source; outputs are
//! pulled: [`Gossip::poll_persist`] (an incarnation the shell must make durable and report
//! with [`Gossip::handle_persisted`]; no message carrying that incarnation leaves before),
//! [`Gossip::drain_messages`] (datagrams that may leave now), [`Gossip::drain_changes`]
//! (members whose status changed, for the controller) and [`Gossip::poll_timeout`] (when to
//! call [`Gossip::handle_tick`]). The same code runs in the broker, in keel-sim and in
//! keel-check. Everything it holds is bounded by its [`Config`]: members, message size,
//! piggyback queue, messages waiting for a persist.

mod config;
mod gossip;
mod member;
mod message;

pub use config::{Config, ConfigError, Mutation, ADDRESS_BYTES_MAX, MESSAGE_BYTES_MAX};
pub use gossip::{Durable, Gossip, Outgoing};
pub use member::{supersedes, Address, Incarnation, Member, Status};
pub use message::{Body, DecodeError, Message, Sender};
