//! Readable steps and states for the ISR model's traces. Leader, partition and broker epochs
//! are shown counted from where the model starts them (`canonical.rs` has the bases): e0, e1,
//! ... for leader epochs.

use keel_replication::{Replica, Role};
use keel_types::{LeaderEpoch, NodeId};

use super::canonical::{BROKER_EPOCH_BASE, LEADER_EPOCH_BASE, PARTITION_EPOCH_BASE};
use keel_metadata::{MetadataImage, PartitionRegistration};

use super::{index, node, IsrAction, IsrModel, IsrState, Status};

/// A leader epoch counted from where the model starts them: e0, e1, ...
pub fn epoch(epoch: LeaderEpoch) -> String {
    format!("e{}", epoch.0 - LEADER_EPOCH_BASE)
}

pub fn log(log: &[LeaderEpoch]) -> String {
    let records: Vec<String> = log.iter().map(|&e| epoch(e)).collect();
    format!("[{}]", records.join(" "))
}

pub fn nodes(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("n{}", n.0)).collect();
    format!("[{}]", names.join(" "))
}

pub fn leader(leader: Option<NodeId>) -> String {
    leader.map_or("none".to_string(), |n| format!("n{}", n.0))
}

/// A broker epoch counted from the model's base (-1, none, as it is).
fn broker_epoch(epoch: i64) -> i64 {
    if epoch < 0 {
        epoch
    } else {
        epoch - BROKER_EPOCH_BASE
    }
}

pub fn action(model: &IsrModel, s: &IsrState, action: &IsrAction) -> String {
    match *action {
        IsrAction::Append(l) => {
            format!("n{} (leader) appends a record at offset {}", l.0, s.brokers[index(l)].log.record_count())
        }
        IsrAction::Fetch(f) => {
            let from = s.brokers[index(f)].replica.as_ref().and_then(Replica::follower).map(|f| f.leader());
            format!("n{} fetches from leader {}", f.0, leader(from))
        }
        IsrAction::AlterPartition(position) => {
            let request = &s.in_flight[position];
            format!(
                "the controller handles n{}'s AlterPartition (ISR {}, from partition epoch {})",
                request.from.0,
                nodes(&request.proposal.request.new_isr),
                request.proposal.request.partition_epoch.0 - PARTITION_EPOCH_BASE
            )
        }
        IsrAction::Shutdown(r) => format!("n{} shuts down cleanly (flush, controlled shutdown)", r.0),
        IsrAction::Crash(r, keep) => {
            let end = s.brokers[index(r)].log.record_count() as i64;
            if keep == end {
                format!("n{} CRASHES; everything it wrote had reached the disk", r.0)
            } else {
                format!("n{} CRASHES and loses offsets {keep}..{end}, which had not reached the disk", r.0)
            }
        }
        IsrAction::Fence(r) => format!("the controller fences n{} (its session expired)", r.0),
        IsrAction::Restart(r) => {
            let how = match s.brokers[index(r)].status {
                Status::Stopped { clean: true } => "with",
                _ => "WITHOUT",
            };
            format!("n{} restarts and registers {how} a clean-shutdown marker; it catches up and is unfenced", r.0)
        }
        IsrAction::ElectPreferred => "the controller elects the preferred leader".to_string(),
        IsrAction::SetMinIsr(min_isr) => format!("an operator sets min.insync.replicas to {min_isr}"),
        IsrAction::TimePasses => format!(
            "time passes ({} ms, more than replica.lag.time.max.ms): leaders check their followers",
            model.time_step.as_millis()
        ),
    }
}

/// What changed from `before` to `after` (everything for the initial state).
pub fn changes(before: Option<&IsrState>, after: &IsrState) -> Vec<String> {
    let mut lines = Vec::new();
    let mut changed = |describe: &dyn Fn(&IsrState) -> String| {
        let now = describe(after);
        if before.is_none_or(|b| describe(b) != now) {
            lines.push(now);
        }
    };
    changed(&|s| partition(s.partition()));
    changed(&|s| registrations(s.image()));
    for i in 0..after.brokers.len() {
        changed(&|s| broker(s, i));
    }
    changed(&in_flight);
    changed(&|s| format!("acknowledged: {}", log(&s.acked)));
    changed(&|s| format!("min.insync.replicas: {}", s.min_isr()));
    if before.is_none() {
        lines.push(format!("lossy crashes left: {}", after.lossy_crashes));
    }
    lines
}

fn partition(partition: &PartitionRegistration) -> String {
    format!(
        "partition: leader {}, leader epoch {}, partition epoch {}, ISR {}, ELR {}, last-known ELR {}",
        leader(partition.leader),
        epoch(partition.leader_epoch),
        partition.partition_epoch.0 - PARTITION_EPOCH_BASE,
        nodes(&partition.isr),
        nodes(&partition.elr),
        nodes(&partition.last_known_elr)
    )
}

fn registrations(image: &MetadataImage) -> String {
    let brokers: Vec<String> = image
        .brokers()
        .iter()
        .map(|(n, b)| {
            let state = match (b.fenced, b.shutting_down) {
                (true, _) => " fenced",
                (false, true) => " shutting down",
                (false, false) => "",
            };
            format!("n{} epoch {}{state}", n.0, broker_epoch(b.broker_epoch.0))
        })
        .collect();
    format!("registrations: {}", brokers.join(", "))
}

fn broker(s: &IsrState, i: usize) -> String {
    let broker = &s.brokers[i];
    let role = match (&broker.status, &broker.replica) {
        (Status::Running, Some(replica)) => role(s, replica),
        (Status::Running, None) => "running without a replica".to_string(),
        (Status::Crashed, _) => "CRASHED, not yet fenced".to_string(),
        (Status::Stopped { clean: true }, _) => "stopped after a clean shutdown, fenced".to_string(),
        (Status::Stopped { clean: false }, _) => "down after a crash, fenced".to_string(),
    };
    let records = log(broker.log.epochs());
    if s.lossy_crashes > 0 {
        format!("n{} {role}: log {records} flushed to {}", i + 1, broker.log.flushed)
    } else {
        format!("n{} {role}: log {records}", i + 1)
    }
}

fn role(s: &IsrState, replica: &Replica) -> String {
    match replica.role() {
        Role::Leader(leader) => {
            let followers: Vec<String> = (0..s.brokers.len())
                .map(node)
                .filter_map(|n| leader.replica_state(n).map(|state| (n, state)))
                .map(|(n, state)| {
                    let end = state.log_end_offset.map_or("?".to_string(), |e| e.to_string());
                    format!("n{}={end}", n.0)
                })
                .collect();
            let pending =
                leader.pending_isr_change().map_or(String::new(), |c| format!(", proposes ISR {}", nodes(&c.new_isr)));
            format!(
                "leader of {} (HW {}, epoch start {}, ISR {}, followers {}{pending})",
                epoch(leader.leader_epoch()),
                leader.high_watermark(),
                leader.epoch_start_offset(),
                nodes(leader.isr()),
                followers.join(" ")
            )
        }
        Role::Follower(follower) => {
            let waiting = if follower.is_awaiting_metadata() {
                ", awaiting metadata"
            } else if follower.poll_timeout().is_some_and(|until| until > s.now) {
                ", backing off"
            } else {
                ""
            };
            format!(
                "follower of n{} in {} (HW {}{waiting})",
                follower.leader().0,
                epoch(follower.leader_epoch()),
                follower.high_watermark()
            )
        }
        Role::Offline { high_watermark, .. } => format!("offline (HW {high_watermark})"),
    }
}

fn in_flight(s: &IsrState) -> String {
    let requests: Vec<String> = s
        .in_flight
        .iter()
        .map(|r| {
            let added: Vec<String> =
                r.proposal.added.iter().map(|(n, e)| format!("n{} as epoch {}", n.0, broker_epoch(e.0))).collect();
            let vouches = if added.is_empty() { String::new() } else { format!(", vouching for {}", added.join(", ")) };
            format!("n{} asks for ISR {}{vouches}", r.from.0, nodes(&r.proposal.request.new_isr))
        })
        .collect();
    if requests.is_empty() {
        "AlterPartition in flight: none".to_string()
    } else {
        format!("AlterPartition in flight: {}", requests.join("; "))
    }
}
