//! keel's Raft: the consensus core of the controller quorum, as a pure state machine.
//!
//! It owns elections (randomized timeouts, pre-vote, leader leases, step-down when a leader
//! loses its election quorum, leadership transfer), log replication with conflict back-off,
//! commitment under flexible quorums (replication quorum R, election quorum E, R + E > N,
//! E > N/2), snapshots with InstallSnapshot, and non-voting observers.
//!
//! It never does IO, reads a clock, spawns threads or draws unseeded randomness. Inputs come in
//! through `handle_*` with `now` and an [`Entropy`](keel_types::Entropy) source; outputs are
//! pulled: [`Raft::drain_persists`] (writes the shell must make durable, in order, then report
//! with [`Raft::handle_persisted`]), [`Raft::drain_messages`] (messages that may leave now;
//! a vote grant or an append acknowledgement is held back until the persist it depends on is
//! reported), [`Raft::poll_apply`] (committed entries for the state machine) and
//! [`Raft::poll_timeout`] (when to call [`Raft::handle_tick`]). The same code runs in the
//! broker, in keel-sim and in keel-check.

mod config;
mod log;
mod message;
mod raft;

pub use config::{valid_quorums, Config, ConfigError, Mutation};
pub use message::{Durable, Entry, HardState, LogIndex, Message, Payload, Persist, Recovery, Snapshot, Term};
pub use raft::{Apply, ProposeError, Raft, RoleKind, TransferError};
