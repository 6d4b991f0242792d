//! keel-sim: a seeded deterministic simulator for keel's protocol cores.
//!
//! It owns simulated time and everything around a core that can go wrong in production: a
//! network that delays, loses, duplicates and reorders messages and is cut by symmetric,
//! asymmetric and flapping partitions; disks that are slow at times and, on a crash, lose the
//! writes that were not yet synced (the last surviving one possibly torn); nodes that crash and
//! restart from what their disk kept; clocks that jump forward; and a client that proposes and
//! retries commands. After every step it checks each core's own invariants and the
//! cluster-level ones that only a view of every node can check. A safety phase with faults is
//! followed by a liveness phase in which the faults stop and the cluster must converge within a
//! bound.
//!
//! Three scenarios (`raft`, `gossip`, `cluster`) implement one harness's `Scenario` trait; the
//! harness owns the event queue, the phases, the fault clock and the draws every scenario's
//! faults share, partitions and their healing; `network` is the lossy network the raft and
//! cluster scenarios share.
//!
//! One `u64` seed derives every choice, so a seed reproduces a whole run and the trace hash
//! proves it. The simulator must therefore never read a wall clock, draw unseeded randomness,
//! iterate a hash-ordered collection or use threads; and it must never change or reach inside
//! the cores it drives: it runs the code the broker runs, through the same public contract, so
//! whatever it finds is a bug in that code or in its own checks.

mod cluster;
mod gossip;
mod harness;
mod network;
mod raft;
mod trace;

pub use cluster::{
    run_cluster, ClusterFaultOptions, ClusterMutation, ClusterSimOptions, ClusterSimReport, ClusterStats, BROKERS_MAX,
    PARTITIONS_MAX,
};
pub use gossip::{
    run_gossip, Detection, GossipFaultOptions, GossipSimOptions, GossipSimReport, GossipStats, GOSSIP_NODES_MAX,
};
pub use harness::{Failure, Phase, SimReport};
/// The planted bugs a gossip run can carry (see [`GossipSimOptions::mutation`]).
pub use keel_gossip::Mutation as GossipMutation;
/// The planted bugs a run can carry (see [`RaftSimOptions::mutation`]).
pub use keel_raft::Mutation;
pub use raft::{run_raft, FaultOptions, RaftSimOptions, RaftSimReport, Stats, NODES_MAX, OBSERVERS_MAX};
pub use trace::{trace_hash, Fnv1a};
