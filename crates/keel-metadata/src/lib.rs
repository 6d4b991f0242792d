//! keel's cluster metadata, as pure code.
//!
//! [`partition`] holds the rules every partition change follows: leader election from the ISR,
//! then the Eligible Leader Replicas (KIP-966), else no leader; ELR and last-known ELR upkeep;
//! the unclean-shutdown rule; the partition-epoch compare-and-set of AlterPartition. The
//! controller, the model checker (`keel check isr`) and the simulator all use these functions,
//! so what is checked is what runs.

pub mod partition;

pub use partition::{AlterIsr, Eligibility, Mutation, PartitionRegistration};
