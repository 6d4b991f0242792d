//! The cluster oracle: what the simulation has seen committed, acknowledged and lost, and the
//! checks against it.
//!
//! **Committed records.** A record is committed once a leader's high watermark (HW) passes its
//! offset: the oracle remembers, per partition and offset, the first committed record (leader
//! epoch and value) and when it was committed. Leaders' HWs are observed after every step.
//!
//! **The loss bound.** The design promises durability while at most min ISR - 1 replicas lose
//! their unflushed tail. A lossy crash that cuts a replica's log at `cut` is remembered with its
//! time; a committed record at `offset` counts every distinct replica that lost a tail covering
//! it (`cut <= offset`) at or after the leader first wrote it. (Not its commit time: a leader
//! knows a follower only through its fetches, so a commit may count a follower that crashed a
//! few milliseconds before, which the leader has not yet learned of; Kafka's leader does the
//! same.) A violation about that record is reported only while the count is at most
//! min ISR - 1; beyond it the record is *excused* (and counted).
//!
//! **Retention.** Retention may remove committed records, but only a prefix of a log and
//! only below the high watermark (issue 17, F6). A leader's log start never passes its
//! high watermark; no replica's log start passes the committed prefix; a leader's high
//! watermark never commits a record its log no longer holds; a leader acknowledges only a
//! record its log holds (or, for a retry answered from the producer state, one committed
//! before retention removed it); a consumer answered OFFSET_OUT_OF_RANGE moves to the
//! leader's log start, skipping only committed records. Committed records below the highest
//! log start any replica has had are not counted lost: retention removed them.
//!
//! Below that highest log start the oracle compares no replica's log, and it counts, instead
//! of reporting, one case Kafka's design allows there too: a retry of a value whose first copy
//! retention removed may commit again, if a leader that never held the copy (its log started
//! over past it) takes the retry for a new batch (`retention_duplicates`). Every record
//! acknowledged or read there must still be the committed one. (Kafka's leader cannot see a
//! divergence below its log start, where its epoch cache knows nothing; keel's leader has a
//! follower whose records all lie there start over at its log start instead, see
//! `keel_replication::Leader::handle_fetch`. Seed 31824530 acknowledged a retry as a
//! duplicate of an uncommitted record there before that rule.)
//!
//! **Duplicates.** A value is committed, and acknowledged, at one offset only: the leader's
//! log answers a retry of a batch it holds as a duplicate. That promise holds within one
//! producer epoch. A value the producer sent again in a new epoch (KIP-360, after
//! UNKNOWN_PRODUCER_ID or OUT_OF_ORDER_SEQUENCE_NUMBER) is a new batch to every log, so if an
//! earlier attempt was appended where the refusing broker could not see it (a zombie leader
//! refused the retry), both copies may commit, as in Kafka; such duplicates are counted, not
//! reported.

use std::collections::{BTreeMap, BTreeSet};

use keel_replication::LocalLog;
use keel_types::{Instant, NodeId};

use super::log::{Record, SimLog};

#[derive(Debug, Clone, Copy)]
struct Committed {
    record: Record,
    time: Instant,
    /// The min ISR the leader whose high watermark committed it held then.
    min_isr: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PartitionOracle {
    /// Offset `o` at index `o`: the committed prefix `0..committed.len()`.
    committed: Vec<Committed>,
    /// Where each committed value sits.
    committed_values: BTreeMap<u64, i64>,
    /// Lossy crashes: when, which replica, where its log was cut.
    losses: Vec<(Instant, NodeId, i64)>,
    /// Per replica, a prefix of its log already found to agree with the committed prefix
    /// (lowered whenever its log is cut).
    verified: BTreeMap<NodeId, i64>,
    /// Acknowledged values and their offsets.
    pub(crate) acked: BTreeMap<u64, i64>,
    /// When a leader first wrote each value, and the min ISR that leader held then.
    written: BTreeMap<u64, Instant>,
    /// Values the producer sent again in a new producer epoch.
    resent: BTreeSet<u64>,
    /// The highest log start any replica's log has had: retention removed the committed
    /// records below it (from that replica, and maybe from others), so none need be held.
    retained_start: i64,
    /// Committed records were lost beyond the durability bound and replaced: the committed
    /// prefix was cut back, so a log start may lie beyond it.
    replaced: bool,
}

#[derive(Debug)]
pub(crate) struct Oracle {
    pub(crate) partitions: Vec<PartitionOracle>,
    /// The topic's min ISR over time: `(since, min ISR)`, oldest first.
    min_isr: Vec<(Instant, usize)>,
    /// Violations not reported because more replicas than the bound lost the record.
    pub(crate) excused: u64,
    /// Values committed or acknowledged at a second offset after an epoch bump resent them.
    pub(crate) epoch_bump_duplicates: u64,
    /// Values committed or acknowledged at a second offset after retention removed the first
    /// copy from some replica (see the module documentation).
    pub(crate) retention_duplicates: u64,
}

fn show(record: Record) -> String {
    format!("e{}:v{}", record.0 .0, record.1)
}

impl Oracle {
    pub(crate) fn new(partitions: usize, min_isr: usize) -> Oracle {
        Oracle {
            partitions: (0..partitions).map(|_| PartitionOracle::default()).collect(),
            min_isr: vec![(Instant::ZERO, min_isr)],
            excused: 0,
            epoch_bump_duplicates: 0,
            retention_duplicates: 0,
        }
    }

    pub(crate) fn committed_end(&self, p: usize) -> i64 {
        self.partitions[p].committed.len() as i64
    }

    pub(crate) fn committed_at(&self, p: usize, offset: i64) -> Option<Record> {
        let index = usize::try_from(offset).ok()?;
        self.partitions[p].committed.get(index).map(|c| c.record)
    }

    /// The topic's min ISR changed now.
    pub(crate) fn handle_min_isr(&mut self, min_isr: usize, now: Instant) {
        self.min_isr.push((now, min_isr));
    }

    /// How many lossy crashes the record at `offset` is promised to survive: min ISR - 1, for
    /// the min ISR the leader held when its high watermark committed the record (a change
    /// reaches a leader with the metadata, as in Kafka), or the topic's, if smaller, at any
    /// time since (lowering it lets the ISR shrink below what the record was committed on).
    fn loss_bound(&self, p: usize, offset: i64) -> usize {
        let part = &self.partitions[p];
        let Some(committed) = usize::try_from(offset).ok().and_then(|i| part.committed.get(i)) else { return 0 };
        let since = self.min_isr.iter().filter(|(at, _)| *at > committed.time).map(|(_, m)| *m);
        let at_commit = self.min_isr_at(committed.time);
        since.fold(committed.min_isr.min(at_commit), usize::min).saturating_sub(1)
    }

    /// The producer bumped its epoch and sends `value` again, as a new batch.
    pub(crate) fn record_resent(&mut self, p: usize, value: u64) {
        self.partitions[p].resent.insert(value);
    }

    /// A leader wrote `value` (its first copy) now.
    pub(crate) fn record_written(&mut self, p: usize, value: u64, now: Instant) {
        self.partitions[p].written.entry(value).or_insert(now);
    }

    /// When the committed record at `offset` was first written.
    fn written(&self, p: usize, offset: i64) -> Option<Instant> {
        let part = &self.partitions[p];
        let committed = usize::try_from(offset).ok().and_then(|i| part.committed.get(i))?;
        Some(part.written.get(&committed.record.1).copied().unwrap_or(committed.time).min(committed.time))
    }

    fn min_isr_at(&self, time: Instant) -> usize {
        self.min_isr.iter().rev().find(|(since, _)| *since <= time).map_or(1, |(_, m)| *m)
    }

    /// How many distinct replicas lost a tail covering the committed record at `offset` since
    /// it was first written.
    pub(crate) fn loss_count(&self, p: usize, offset: i64) -> usize {
        let part = &self.partitions[p];
        let Some(since) = self.written(p, offset) else { return 0 };
        let mut nodes: Vec<NodeId> = part
            .losses
            .iter()
            .filter(|(time, _, cut)| *time >= since && *cut <= offset)
            .map(|(_, node, _)| *node)
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes.len()
    }

    /// Whether a violation about the record at `offset` is beyond the durability bound (and
    /// counts it if so).
    fn excuse(&mut self, p: usize, offset: i64) -> bool {
        let excused = self.loss_count(p, offset) > self.loss_bound(p, offset);
        self.excused += u64::from(excused);
        excused
    }

    pub(crate) fn record_loss(&mut self, p: usize, node: NodeId, cut: i64, now: Instant) {
        self.partitions[p].losses.push((now, node, cut));
        self.cut(p, node, cut);
    }

    /// `node`'s log of partition `p` was cut back to `offset`.
    pub(crate) fn cut(&mut self, p: usize, node: NodeId, offset: i64) {
        if let Some(verified) = self.partitions[p].verified.get_mut(&node) {
            *verified = (*verified).min(offset);
        }
    }

    /// Checks `log` against the committed prefix below `upto` (at most the committed end).
    /// `require` says the log must hold all of it (ISR and ELR members); otherwise only the
    /// records it holds must agree. Returns the first offset that breaks the rule and what.
    fn compare(&mut self, p: usize, node: NodeId, log: &SimLog, upto: i64, require: bool) -> Option<(i64, String)> {
        let part = &self.partitions[p];
        let upto = upto.min(part.committed.len() as i64);
        // Retention removed the records below the log start, and those below the highest log
        // start any replica has had are gone for good: what a replica still holds there (until
        // it follows its leader's log start, or starts over there) is not compared.
        let from = part.verified.get(&node).copied().unwrap_or(0).max(log.log_start_offset()).max(part.retained_start);
        for offset in from..upto {
            let committed = part.committed[offset as usize].record;
            match log.get(offset) {
                Some(record) if record == committed => {}
                Some(record) => {
                    return Some((offset, format!("holds {} where {} was committed", show(record), show(committed))))
                }
                None if require => {
                    return Some((
                        offset,
                        format!("lacks committed {} (its log ends at {})", show(committed), log.log_end()),
                    ))
                }
                None => break,
            }
        }
        let reached = upto.min(log.log_end()).max(from);
        self.partitions[p].verified.insert(node, reached);
        None
    }

    /// The leader `node` of partition `p` reports high watermark `hw` over `log`: the records
    /// below it are committed. They must agree with what was committed before, and a value is
    /// committed at one offset only.
    pub(crate) fn observe_high_watermark(
        &mut self,
        p: usize,
        node: NodeId,
        log: &SimLog,
        hw: i64,
        min_isr: usize,
        now: Instant,
    ) -> Result<(), String> {
        if let Some((offset, what)) = self.compare(p, node, log, hw, true) {
            if !self.excuse(p, offset) {
                return Err(format!(
                    "two committed records at one offset: p{p} leader {node} with HW {hw} {what} at offset {offset}"
                ));
            }
            // The committed record was lost beyond the bound: what commits now replaces it.
            let part = &mut self.partitions[p];
            part.replaced = true;
            for dropped in part.committed.drain(offset as usize..) {
                part.committed_values.remove(&dropped.record.1);
            }
            for verified in part.verified.values_mut() {
                *verified = (*verified).min(offset);
            }
        }
        let (mut duplicates, mut retention_duplicates) = (0, 0);
        let part = &mut self.partitions[p];
        let end = hw.min(log.log_end());
        for offset in part.committed.len() as i64..end {
            let Some(record) = log.get(offset) else {
                return Err(format!(
                    "p{p}: leader {node}'s high watermark {hw} commits offset {offset}, which its log no longer \
                     holds (it starts at {}): retention deleted a record before it was committed",
                    log.log_start_offset()
                ));
            };
            match part.committed_values.get(&record.1) {
                Some(_) if part.resent.contains(&record.1) => duplicates += 1,
                Some(&other) if other < part.retained_start => retention_duplicates += 1,
                Some(&other) => {
                    return Err(format!(
                        "value v{} committed twice in p{p}: at offset {other} and, by leader {node}, at {offset}",
                        record.1
                    ))
                }
                None => {
                    part.committed_values.insert(record.1, offset);
                }
            }
            part.committed.push(Committed { record, time: now, min_isr });
        }
        part.verified.insert(node, end);
        self.epoch_bump_duplicates += duplicates;
        self.retention_duplicates += retention_duplicates;
        Ok(())
    }

    /// An ISR or ELR member (whose state is current) must hold every committed record.
    pub(crate) fn check_member(&mut self, p: usize, node: NodeId, log: &SimLog, role: &str) -> Result<(), String> {
        let upto = self.committed_end(p);
        match self.compare(p, node, log, upto, true) {
            Some((offset, what)) if !self.excuse(p, offset) => Err(format!(
                "p{p}: {node} is in the {role} (committed image) but {what} at offset {offset} (committed prefix ends at {upto})"
            )),
            _ => Ok(()),
        }
    }

    /// Any replica's records below its own high watermark are committed ones.
    pub(crate) fn check_below_high_watermark(
        &mut self,
        p: usize,
        node: NodeId,
        log: &SimLog,
        hw: i64,
    ) -> Result<(), String> {
        if hw > self.committed_end(p) {
            return Err(format!(
                "p{p}: {node} has high watermark {hw}, beyond every HW a leader reported ({})",
                self.committed_end(p)
            ));
        }
        match self.compare(p, node, log, hw, true) {
            Some((offset, what)) if !self.excuse(p, offset) => {
                Err(format!("p{p}: {node} with high watermark {hw} {what} at offset {offset}"))
            }
            _ => Ok(()),
        }
    }

    /// After a cut at `from` somewhere: every committed record at or above it must still be
    /// held by some replica (up or down; a down broker keeps what it flushed).
    pub(crate) fn check_not_lost<'a>(
        &mut self,
        p: usize,
        from: i64,
        logs: impl Iterator<Item = &'a SimLog> + Clone,
    ) -> Result<(), String> {
        for offset in from.max(self.partitions[p].retained_start)..self.committed_end(p) {
            let committed = self.partitions[p].committed[offset as usize].record;
            if !logs.clone().any(|log| log.get(offset) == Some(committed)) && !self.excuse(p, offset) {
                let acked = if self.partitions[p].acked.contains_key(&committed.1) { "acknowledged " } else { "" };
                return Err(format!(
                    "committed {acked}record {} at p{p} offset {offset} is lost: no replica holds it ({} replica(s) lost a tail covering it since it was written)",
                    show(committed),
                    self.loss_count(p, offset)
                ));
            }
        }
        Ok(())
    }

    /// The producer heard that `value` is acknowledged at `offset`.
    pub(crate) fn record_ack(&mut self, p: usize, value: u64, offset: i64) -> Result<(), String> {
        if let Some(&first) = self.partitions[p].acked.get(&value) {
            if first != offset && self.partitions[p].resent.contains(&value) {
                self.epoch_bump_duplicates += 1;
            } else if first != offset && first < self.partitions[p].retained_start {
                self.retention_duplicates += 1;
            } else if first != offset {
                return Err(format!("v{value} acknowledged at p{p} offset {first} and again at {offset}"));
            }
            return Ok(());
        }
        match self.committed_at(p, offset) {
            Some((_, committed)) if committed == value => {}
            other if !self.excuse(p, offset) => {
                return Err(format!(
                    "v{value} acknowledged at p{p} offset {offset}, where the committed record is {}",
                    other.map_or("none".to_string(), show)
                ))
            }
            _ => {}
        }
        self.partitions[p].acked.insert(value, offset);
        Ok(())
    }

    /// A consumer read `record` at `offset`, below the HW its leader reported.
    pub(crate) fn check_read(&mut self, p: usize, offset: i64, record: Record) -> Result<(), String> {
        match self.committed_at(p, offset) {
            Some(committed) if committed == record => Ok(()),
            other if !self.excuse(p, offset) => Err(format!(
                "a consumer read {} at p{p} offset {offset}, where the committed record is {}",
                show(record),
                other.map_or("none".to_string(), show)
            )),
            _ => Ok(()),
        }
    }

    /// `node`'s log of partition `p` now starts at `log_start` (retention there, or a
    /// follower following its leader's log start): it may have removed committed records
    /// only.
    pub(crate) fn observe_log_start(&mut self, p: usize, node: NodeId, log_start: i64) -> Result<(), String> {
        let part = &mut self.partitions[p];
        if log_start > part.committed.len() as i64 && !part.replaced {
            return Err(format!(
                "p{p}: {node}'s log now starts at {log_start}, beyond the committed prefix (which ends at {}): \
                 records that were never committed are gone from it",
                part.committed.len()
            ));
        }
        part.retained_start = part.retained_start.max(log_start);
        Ok(())
    }

    /// The rule retention keeps (issue 17, F6): a leader's log never starts above its high
    /// watermark, so everything retention removed was on every in-sync replica.
    pub(crate) fn check_leader_log_start(&self, p: usize, node: NodeId, log: &SimLog, hw: i64) -> Result<(), String> {
        let start = log.log_start_offset();
        if start > hw {
            return Err(format!(
                "p{p}: leader {node}'s log starts at {start}, above its high watermark {hw}: retention deleted \
                 records that were not yet committed (log end {})",
                log.log_end()
            ));
        }
        Ok(())
    }

    /// Leader `node` acknowledges `value` at `offset` (its high watermark passed it): its log
    /// must hold the record, or, for a retry answered from the producer state after retention
    /// removed the original, the record must have been committed there.
    pub(crate) fn check_acknowledgement(
        &self,
        p: usize,
        node: NodeId,
        log: &SimLog,
        value: u64,
        offset: i64,
    ) -> Result<(), String> {
        let held = log.get(offset).is_some_and(|r| r.1 == value);
        let retained = offset < log.log_start_offset() && self.committed_at(p, offset).is_some_and(|r| r.1 == value);
        if held || retained {
            return Ok(());
        }
        Err(format!(
            "p{p}: leader {node} acknowledges v{value} at offset {offset}, but its log [{}, {}) does not hold it",
            log.log_start_offset(),
            log.log_end()
        ))
    }

    /// A consumer at `from` was answered OFFSET_OUT_OF_RANGE and moved to the leader's log
    /// start `to`: what it skips must be committed records retention removed.
    pub(crate) fn check_consumer_reset(&self, p: usize, from: i64, to: i64) -> Result<(), String> {
        let part = &self.partitions[p];
        if to > from && to > part.committed.len() as i64 && !part.replaced {
            return Err(format!(
                "a consumer of p{p} at offset {from} was moved to the log start {to}, beyond the committed prefix \
                 (which ends at {}): it skipped records that were never committed",
                part.committed.len()
            ));
        }
        Ok(())
    }

    /// Whether the acknowledged record at `offset` is still under the durability promise.
    pub(crate) fn promised(&self, p: usize, offset: i64) -> bool {
        self.loss_count(p, offset) <= self.loss_bound(p, offset)
    }

    /// Whether acknowledged `value` at `offset` is still promised: no more replicas than the
    /// bound (min ISR - 1, the smallest since it was written) lost a tail covering it since a
    /// leader first wrote it. Judged by the value, not by the record its offset holds now:
    /// after a loss beyond the bound (the only replica of a partition crashed and leads again)
    /// another record may commit at that offset.
    pub(crate) fn ack_promised(&self, p: usize, value: u64, offset: i64) -> bool {
        let part = &self.partitions[p];
        let Some(&since) = part.written.get(&value) else { return self.promised(p, offset) };
        let mut nodes: Vec<NodeId> =
            part.losses.iter().filter(|(time, _, cut)| *time >= since && *cut <= offset).map(|(_, n, _)| *n).collect();
        nodes.sort();
        nodes.dedup();
        let later = self.min_isr.iter().filter(|(at, _)| *at > since).map(|(_, m)| *m);
        let bound = later.fold(self.min_isr_at(since), usize::min).saturating_sub(1);
        nodes.len() <= bound
    }
}
