//! keel-check: an explicit-state model checker that runs the real protocol cores.
//!
//! It owns exhaustive exploration of small configurations: breadth first with 128-bit state
//! fingerprints, every invariant on every reachable state, liveness properties ("~P ~> P")
//! under weak fairness of message delivery and time, with the cores' random choices treated
//! as probabilistic branches, and the shortest counterexample printed as readable steps.
//!
//! The cores run unmodified: the checker drives them through their public `handle_*` API with
//! an [`Entropy`](keel_types::Entropy) source that enumerates every answer. It never does IO
//! and never reads a clock (the CLI times runs).

mod explore;
mod gossip;
mod isr;
mod raft;

pub use explore::{explore, Choices, Limits, Model, Property, Report, Trace, TraceStep, Verdict};
pub use gossip::{converged as membership_converged, GossipAction, GossipModel, GossipModelOptions, GossipState, Slot};
pub use isr::{
    acked_everywhere, isr_complete, led_if_possible, AlterPartitionRequest, Broker, IsrAction, IsrModel,
    IsrModelOptions, IsrState, ModelLog, Status,
};
/// keel-replication's planted bugs, which the ISR model's cores run with.
pub use keel_replication::Mutation as ReplicationMutation;
pub use raft::{converged, leader_elected, RaftAction, RaftModel, RaftModelOptions, RaftState};

/// Explores the Raft model. A plain function, so the exploration is compiled (and optimized)
/// here rather than in each caller that would otherwise instantiate the generic explorer.
pub fn check_raft(options: RaftModelOptions, limits: Limits) -> Result<Report, keel_raft::ConfigError> {
    let model = RaftModel::new(options)?;
    Ok(explore(&model, limits))
}

/// Explores the ISR model (see [`IsrModel`]). Non-generic for the same reason as
/// [`check_raft`]. Fails with a message for people if the options make no sense.
pub fn check_isr(options: IsrModelOptions, limits: Limits) -> Result<Report, String> {
    let model = IsrModel::new(options)?;
    Ok(explore(&model, limits))
}

/// Explores the membership model (see [`GossipModel`]). Non-generic for the same reason as
/// [`check_raft`]. Fails with a message for people if the options make no sense.
pub fn check_gossip(options: GossipModelOptions, limits: Limits) -> Result<Report, String> {
    let model = GossipModel::new(options)?;
    Ok(explore(&model, limits))
}
