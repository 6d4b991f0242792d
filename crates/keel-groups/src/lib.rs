//! keel's group coordinator: Kafka's classic consumer-group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, offset commits) as a pure state machine.
//!
//! It owns group membership, generations, rebalances and committed offsets. It never does IO
//! or reads a clock: requests come in through `handle_*` with `now` and a token chosen by the
//! shell; answers and records to persist come out as [`Effect`]s. An answer that depends on
//! persisted state (a commit, a completed rebalance) is released only after the shell reports
//! the persist done with [`Coordinator::handle_persisted`].
//!
//! Persisted records go to `__consumer_offsets` partition [`offsets_partition`] of the group,
//! as in Kafka, so once that partition is replicated the coordinator for a group is simply its
//! leader.

mod records;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use keel_types::{Duration, ErrorCode, Instant, Rng};

pub use records::{CommittedOffset, GroupRecord, MemberRecord, Record};

/// Which `__consumer_offsets` partition holds a group (Kafka: `abs(groupId.hashCode) % n`).
pub fn offsets_partition(group_id: &str, partitions: u32) -> u32 {
    let hash = group_id.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c as i16)));
    // Kafka's Utils.abs maps i32::MIN to 0.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive as u32 % partitions
}

/// Coordinator configuration (Kafka's `group.*` and `offsets.*` broker settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub session_timeout_ms_min: i32,
    pub session_timeout_ms_max: i32,
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members.
    pub initial_rebalance_delay_ms: i32,
    /// `group.max.size`.
    pub group_size_max: usize,
    /// `offsets.retention.minutes`, in milliseconds.
    pub offsets_retention_ms: i64,
    /// `offset.metadata.max.bytes`.
    pub offset_metadata_bytes_max: usize,
    /// `__consumer_offsets` partitions.
    pub offsets_partitions: u32,
    /// Largest member metadata (subscription) accepted per protocol.
    pub member_metadata_bytes_max: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            group_size_max: 1_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            offset_metadata_bytes_max: 4096,
            offsets_partitions: 50,
            member_metadata_bytes_max: 1 << 20,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if self.session_timeout_ms_min <= 0 || self.session_timeout_ms_min > self.session_timeout_ms_max {
            return Err("group session timeout bounds must satisfy 0 < min <= max".to_string());
        }
        if self.offsets_partitions == 0 {
            return Err("offsets partitions must be at least 1".to_string());
        }
        if self.initial_rebalance_delay_ms < 0 || self.offsets_retention_ms <= 0 {
            return Err("initial rebalance delay must be >= 0 and offsets retention > 0".to_string());
        }
        Ok(())
    }
}

/// Chosen by the shell to match answers to requests.
pub type Token = u64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a member without an id gets MEMBER_ID_REQUIRED and one to rejoin with.
    pub require_known_member_id: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JoinResponse {
    pub error: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only.
    pub members: Vec<JoinedMember>,
}

impl JoinResponse {
    fn error(error: ErrorCode, member_id: &str) -> JoinResponse {
        JoinResponse {
            error,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SyncResponse {
    pub error: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    fn error(error: ErrorCode) -> SyncResponse {
        SyncResponse { error, protocol_type: None, protocol_name: None, assignment: Bytes::new() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberIdentity {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A partition's answer to OffsetCommit / OffsetDelete.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartitionResult {
    pub topic: String,
    pub partition: i32,
    pub error: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OffsetToCommit {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    /// -1 when nothing is committed.
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol_name: String,
    pub members: Vec<MemberDescription>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: &'static str,
}

/// An answer to a request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Response {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(ErrorCode),
    Leave { error: ErrorCode, members: Vec<(MemberIdentity, ErrorCode)> },
    OffsetCommit(Vec<PartitionResult>),
    OffsetDelete { error: ErrorCode, partitions: Vec<PartitionResult> },
    DeleteGroups(Vec<(String, ErrorCode)>),
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Effect {
    Respond {
        token: Token,
        response: Response,
    },
    /// Append `records` to `__consumer_offsets` partition `partition`, then call
    /// [`Coordinator::handle_persisted`] with `id`.
    Persist {
        id: u64,
        partition: u32,
        records: Vec<Record>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Member {
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout_ms: i32,
    rebalance_timeout_ms: i32,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    awaiting_join: Option<Token>,
    awaiting_sync: Option<Token>,
    /// When the member is removed unless it heartbeats (not while awaiting a join answer).
    session_deadline: Instant,
    /// Joined during the current rebalance (or did not exist before it).
    is_new: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Group {
    state: GroupState,
    protocol_type: String,
    protocol_name: Option<String>,
    generation_id: i32,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// Static membership: instance id -> current member id.
    static_members: BTreeMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, valid until the deadline.
    pending_members: BTreeMap<String, Instant>,
    /// When the join phase of the current rebalance ends at the latest.
    join_deadline: Option<Instant>,
    /// When the state last changed (offset expiry of empty groups counts from here).
    state_since: Instant,
    offsets: BTreeMap<(String, i32), CommittedOffset>,
    /// Commits written but not yet persisted, so fetches see them only once durable.
    pending_commits: u32,
    /// When the rebalance under way started, and when a member last joined it.
    rebalance_started: Option<Instant>,
    last_joined: Option<Instant>,
    last_rebalance: Option<Rebalance>,
}

/// How a rebalance went, for benchmarks and operators: from its start (a member joined, left
/// or failed) and from the last member's JoinGroup to the moment the group was stable again
/// (its assignment persisted and every member answered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rebalance {
    pub generation_id: i32,
    pub members: usize,
    pub started: Instant,
    pub last_joined: Instant,
    pub stable: Instant,
}

impl Group {
    fn new(now: Instant) -> Group {
        Group {
            state: GroupState::Empty,
            protocol_type: String::new(),
            protocol_name: None,
            generation_id: 0,
            leader: None,
            members: BTreeMap::new(),
            static_members: BTreeMap::new(),
            pending_members: BTreeMap::new(),
            join_deadline: None,
            state_since: now,
            offsets: BTreeMap::new(),
            pending_commits: 0,
            rebalance_started: None,
            last_joined: None,
            last_rebalance: None,
        }
    }

    fn transition(&mut self, state: GroupState, now: Instant) {
        self.state = state;
        self.state_since = now;
    }

    /// The protocol every member supports, chosen by the members' votes (each votes for its
    /// most preferred protocol among those all support), ties to the lexically first.
    fn select_protocol(&self) -> Option<String> {
        let mut candidates: Option<BTreeSet<&str>> = None;
        for m in self.members.values() {
            let names: BTreeSet<&str> = m.protocols.iter().map(|(n, _)| n.as_str()).collect();
            candidates = Some(match candidates {
                None => names,
                Some(c) => c.intersection(&names).copied().collect(),
            });
        }
        let candidates = candidates?;
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((name, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(n.as_str())) {
                *votes.entry(name.as_str()).or_default() += 1;
            }
        }
        // max_by_key keeps the last maximum; iterate in reverse to prefer the first name.
        votes.into_iter().rev().max_by_key(|&(_, v)| v).map(|(n, _)| n.to_string())
    }

    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        if self.protocol_type != protocol_type {
            return false;
        }
        let common: BTreeSet<&str> = self
            .members
            .values()
            .map(|m| m.protocols.iter().map(|(n, _)| n.as_str()).collect::<BTreeSet<_>>())
            .reduce(|a, b| a.intersection(&b).copied().collect())
            .unwrap_or_default();
        protocols.iter().any(|(n, _)| common.contains(n.as_str()))
    }

    fn record(&self, now_ms: i64) -> GroupRecord {
        GroupRecord {
            protocol_type: self.protocol_type.clone(),
            generation_id: self.generation_id,
            protocol_name: self.protocol_name.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: now_ms,
            members: self
                .members
                .iter()
                .map(|(id, m)| MemberRecord {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    metadata: self.protocol_name.as_deref().map(|p| m.metadata_for(p)).unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// The coordinator for every group on this broker.
#[derive(Debug, Clone)]
pub struct Coordinator {
    config: Config,
    groups: BTreeMap<String, Group>,
    rng: Rng,
    effects: Vec<Effect>,
    next_persist: u64,
    /// Answers held until a persist completes, with group bookkeeping to finish then.
    awaiting_persist: BTreeMap<u64, PendingPersist>,
    /// Wall-clock milliseconds at `Instant::ZERO`, for commit timestamps.
    epoch_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum PendingPersist {
    Commit {
        group_id: String,
        token: Token,
        results: Vec<PartitionResult>,
        offsets: Vec<((String, i32), CommittedOffset)>,
    },
    /// A rebalance's assignment: answer every member waiting on SyncGroup.
    Sync {
        group_id: String,
        generation_id: i32,
    },
    Plain {
        token: Token,
        response: Response,
    },
}

impl Coordinator {
    /// `epoch_ms` is the wall-clock time (ms since the Unix epoch) that `Instant::ZERO`
    /// stands for; commit timestamps are `epoch_ms + now`.
    pub fn new(config: Config, seed: u64, epoch_ms: i64) -> Result<Coordinator, String> {
        config.validate()?;
        Ok(Coordinator {
            config,
            groups: BTreeMap::new(),
            rng: Rng::new(seed),
            effects: Vec::new(),
            next_persist: 0,
            awaiting_persist: BTreeMap::new(),
            epoch_ms,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn drain_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    fn now_ms(&self, now: Instant) -> i64 {
        self.epoch_ms + now.as_millis() as i64
    }

    fn respond(&mut self, token: Token, response: Response) {
        self.effects.push(Effect::Respond { token, response });
    }

    fn persist(&mut self, group_id: &str, records: Vec<Record>, then: PendingPersist) {
        let id = self.next_persist;
        self.next_persist += 1;
        let partition = offsets_partition(group_id, self.config.offsets_partitions);
        self.effects.push(Effect::Persist { id, partition, records });
        self.awaiting_persist.insert(id, then);
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        format!("{client_id}-{:016x}{:016x}", self.rng.next_u64(), self.rng.next_u64())
    }

    /// Rebuilds state from `__consumer_offsets` records, replayed in log order, at startup.
    /// Members of a restored group must heartbeat within their session timeout from `now`.
    pub fn load(&mut self, record: Record, now: Instant) {
        match record {
            Record::Offset { group_id, topic, partition, value } => {
                let group = self.groups.entry(group_id).or_insert_with(|| Group::new(now));
                match value {
                    Some(v) => group.offsets.insert((topic, partition), v),
                    None => group.offsets.remove(&(topic, partition)),
                };
            }
            Record::Group { group_id, value: None } => {
                self.groups.remove(&group_id);
            }
            Record::Group { group_id, value: Some(v) } => {
                let group = self.groups.entry(group_id).or_insert_with(|| Group::new(now));
                group.protocol_type = v.protocol_type;
                group.generation_id = v.generation_id;
                group.protocol_name = v.protocol_name.clone();
                group.leader = v.leader;
                group.members.clear();
                group.static_members.clear();
                for m in v.members {
                    if let Some(instance) = &m.group_instance_id {
                        group.static_members.insert(instance.clone(), m.member_id.clone());
                    }
                    let protocols = v.protocol_name.iter().map(|p| (p.clone(), m.metadata.clone())).collect();
                    let session = Duration::from_millis(m.session_timeout_ms.max(0) as u64);
                    group.members.insert(
                        m.member_id,
                        Member {
                            group_instance_id: m.group_instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols,
                            assignment: m.assignment,
                            awaiting_join: None,
                            awaiting_sync: None,
                            session_deadline: now + session,
                            is_new: false,
                        },
                    );
                }
                let state = if group.members.is_empty() { GroupState::Empty } else { GroupState::Stable };
                group.transition(state, now);
            }
        }
    }

    /// Reports a persist done (`ok`) or failed; releases the answers that waited for it.
    pub fn handle_persisted(&mut self, id: u64, ok: bool, now: Instant) {
        let Some(pending) = self.awaiting_persist.remove(&id) else { return };
        match pending {
            PendingPersist::Commit { group_id, token, mut results, offsets } => {
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.pending_commits = group.pending_commits.saturating_sub(1);
                    if ok {
                        group.offsets.extend(offsets);
                    }
                }
                if !ok {
                    for r in results.iter_mut().filter(|r| r.error == ErrorCode::None) {
                        r.error = ErrorCode::CoordinatorNotAvailable;
                    }
                }
                self.respond(token, Response::OffsetCommit(results));
            }
            PendingPersist::Sync { group_id, generation_id } => {
                let Some(group) = self.groups.get_mut(&group_id) else { return };
                if group.generation_id != generation_id || group.state != GroupState::CompletingRebalance {
                    return; // a newer rebalance took over; its own flow answers the members
                }
                let mut answers = Vec::new();
                for member in group.members.values_mut() {
                    if let Some(token) = member.awaiting_sync.take() {
                        let response = if ok {
                            SyncResponse {
                                error: ErrorCode::None,
                                protocol_type: Some(group.protocol_type.clone()),
                                protocol_name: group.protocol_name.clone(),
                                assignment: member.assignment.clone(),
                            }
                        } else {
                            SyncResponse::error(ErrorCode::CoordinatorNotAvailable)
                        };
                        answers.push((token, response));
                    }
                }
                if ok {
                    group.transition(GroupState::Stable, now);
                    if let Some(started) = group.rebalance_started.take() {
                        group.last_rebalance = Some(Rebalance {
                            generation_id,
                            members: group.members.len(),
                            started,
                            last_joined: group.last_joined.take().unwrap_or(started),
                            stable: now,
                        });
                    }
                    for member in group.members.values_mut() {
                        member.session_deadline = now + Duration::from_millis(member.session_timeout_ms as u64);
                    }
                } else {
                    self.prepare_rebalance(&group_id, now);
                }
                for (token, response) in answers {
                    self.respond(token, Response::Sync(response));
                }
            }
            PendingPersist::Plain { token, response } => self.respond(token, response),
        }
    }

    pub fn handle_join(&mut self, now: Instant, token: Token, request: JoinRequest) {
        let reject = |error| Response::Join(JoinResponse::error(error, &request.member_id));
        if request.group_id.is_empty() {
            return self.respond(token, reject(ErrorCode::InvalidGroupId));
        }
        if request.session_timeout_ms < self.config.session_timeout_ms_min
            || request.session_timeout_ms > self.config.session_timeout_ms_max
        {
            return self.respond(token, reject(ErrorCode::InvalidSessionTimeout));
        }
        let metadata_bytes: usize = request.protocols.iter().map(|(n, m)| n.len() + m.len()).sum();
        if request.protocol_type.is_empty()
            || request.protocols.is_empty()
            || metadata_bytes > self.config.member_metadata_bytes_max
        {
            return self.respond(token, reject(ErrorCode::InconsistentGroupProtocol));
        }
        let group = self.groups.entry(request.group_id.clone()).or_insert_with(|| Group::new(now));
        if !group.supports(&request.protocol_type, &request.protocols) {
            return self.respond(token, reject(ErrorCode::InconsistentGroupProtocol));
        }
        let group_id = request.group_id.clone();
        if request.member_id.is_empty() {
            self.join_unknown_member(now, token, request, &group_id);
        } else {
            self.join_known_member(now, token, request, &group_id);
        }
    }

    fn join_unknown_member(&mut self, now: Instant, token: Token, request: JoinRequest, group_id: &str) {
        let member_id = self.new_member_id(&request.client_id);
        let now_ms = self.now_ms(now);
        let group = self.groups.get_mut(group_id).expect("created by handle_join");
        if let Some(instance) = request.group_instance_id.clone() {
            if let Some(old_id) = group.static_members.get(&instance).cloned() {
                // A static member coming back: it takes over its old identity (and fences it).
                let mut member = group.members.remove(&old_id).expect("static members are members");
                if let Some(pending) = member.awaiting_join.take() {
                    self.effects.push(Effect::Respond {
                        token: pending,
                        response: Response::Join(JoinResponse::error(ErrorCode::FencedInstanceId, &old_id)),
                    });
                }
                if let Some(pending) = member.awaiting_sync.take() {
                    self.effects.push(Effect::Respond {
                        token: pending,
                        response: Response::Sync(SyncResponse::error(ErrorCode::FencedInstanceId)),
                    });
                }
                let was_leader = group.leader.as_deref() == Some(old_id.as_str());
                let same_protocols = member.protocols == request.protocols;
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                member.protocols = request.protocols.clone();
                member.session_deadline = now + Duration::from_millis(request.session_timeout_ms as u64);
                group.members.insert(member_id.clone(), member);
                group.static_members.insert(instance, member_id.clone());
                if was_leader {
                    group.leader = Some(member_id.clone());
                }
                if group.state == GroupState::Stable && same_protocols && !was_leader {
                    let response = JoinResponse {
                        error: ErrorCode::None,
                        generation_id: group.generation_id,
                        protocol_type: Some(group.protocol_type.clone()),
                        protocol_name: group.protocol_name.clone(),
                        leader: group.leader.clone().unwrap_or_default(),
                        member_id: member_id.clone(),
                        members: Vec::new(),
                    };
                    let record = Record::Group { group_id: group_id.to_string(), value: Some(group.record(now_ms)) };
                    return self.persist(
                        group_id,
                        vec![record],
                        PendingPersist::Plain { token, response: Response::Join(response) },
                    );
                }
                group.members.get_mut(&member_id).expect("inserted").awaiting_join = Some(token);
                return self.rebalance_or_check(group_id, now);
            }
        } else if request.require_known_member_id {
            // KIP-394: hand out an id; the member must come back with it.
            let deadline = now + Duration::from_millis(request.session_timeout_ms as u64);
            group.pending_members.insert(member_id.clone(), deadline);
            return self.respond(token, Response::Join(JoinResponse::error(ErrorCode::MemberIdRequired, &member_id)));
        }
        self.add_member(now, token, request, group_id, member_id);
    }

    fn join_known_member(&mut self, now: Instant, token: Token, request: JoinRequest, group_id: &str) {
        let group = self.groups.get_mut(group_id).expect("created by handle_join");
        let member_id = request.member_id.clone();
        if let Some(instance) = &request.group_instance_id {
            if group.static_members.get(instance).is_some_and(|current| *current != member_id) {
                return self
                    .respond(token, Response::Join(JoinResponse::error(ErrorCode::FencedInstanceId, &member_id)));
            }
        }
        if group.pending_members.remove(&member_id).is_some() {
            return self.add_member(now, token, request, group_id, member_id);
        }
        let Some(member) = group.members.get_mut(&member_id) else {
            return self.respond(token, Response::Join(JoinResponse::error(ErrorCode::UnknownMemberId, &member_id)));
        };
        let same_protocols = member.protocols == request.protocols;
        if let Some(previous) = member.awaiting_join.replace(token) {
            // A client that retried its JoinGroup: the older request is superseded.
            self.effects.push(Effect::Respond {
                token: previous,
                response: Response::Join(JoinResponse::error(ErrorCode::RebalanceInProgress, &member_id)),
            });
        }
        let member = group.members.get_mut(&member_id).expect("present");
        member.protocols = request.protocols;
        member.session_timeout_ms = request.session_timeout_ms;
        member.rebalance_timeout_ms = request.rebalance_timeout_ms;
        group.last_joined = Some(now);
        let is_leader = group.leader.as_deref() == Some(member_id.as_str());
        match group.state {
            GroupState::PreparingRebalance => self.check_join_complete(group_id, now),
            GroupState::CompletingRebalance | GroupState::Stable if same_protocols && !is_leader => {
                // Nothing changed: answer with the current generation, no rebalance.
                let member = group.members.get_mut(&member_id).expect("present");
                member.awaiting_join = None;
                let response = JoinResponse {
                    error: ErrorCode::None,
                    generation_id: group.generation_id,
                    protocol_type: Some(group.protocol_type.clone()),
                    protocol_name: group.protocol_name.clone(),
                    leader: group.leader.clone().unwrap_or_default(),
                    member_id,
                    members: Vec::new(),
                };
                self.respond(token, Response::Join(response));
            }
            _ => self.prepare_rebalance(group_id, now),
        }
    }

    fn add_member(&mut self, now: Instant, token: Token, request: JoinRequest, group_id: &str, member_id: String) {
        let group = self.groups.get_mut(group_id).expect("created by handle_join");
        if group.members.len() >= self.config.group_size_max {
            return self
                .respond(token, Response::Join(JoinResponse::error(ErrorCode::GroupMaxSizeReached, &member_id)));
        }
        if group.members.is_empty() {
            group.protocol_type = request.protocol_type.clone();
        }
        if let Some(instance) = &request.group_instance_id {
            group.static_members.insert(instance.clone(), member_id.clone());
        }
        group.members.insert(
            member_id,
            Member {
                group_instance_id: request.group_instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                awaiting_join: Some(token),
                awaiting_sync: None,
                session_deadline: now + Duration::from_millis(request.session_timeout_ms as u64),
                is_new: true,
            },
        );
        self.rebalance_or_check(group_id, now);
    }

    fn rebalance_or_check(&mut self, group_id: &str, now: Instant) {
        self.groups.get_mut(group_id).expect("group exists").last_joined = Some(now);
        match self.groups[group_id].state {
            GroupState::PreparingRebalance => self.check_join_complete(group_id, now),
            _ => self.prepare_rebalance(group_id, now),
        }
    }

    /// Starts a rebalance: members must rejoin before the join deadline.
    fn prepare_rebalance(&mut self, group_id: &str, now: Instant) {
        let initial_delay = self.config.initial_rebalance_delay_ms;
        let group = self.groups.get_mut(group_id).expect("group exists");
        // Members waiting for a sync of the aborted round learn of the rebalance now.
        let mut answers = Vec::new();
        for member in group.members.values_mut() {
            if let Some(token) = member.awaiting_sync.take() {
                answers.push((token, Response::Sync(SyncResponse::error(ErrorCode::RebalanceInProgress))));
            }
        }
        let timeout = group.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0).max(0);
        let was_empty = group.state == GroupState::Empty;
        let delay = if was_empty { initial_delay.min(timeout) } else { timeout };
        group.join_deadline = Some(now + Duration::from_millis(delay as u64));
        group.rebalance_started.get_or_insert(now);
        group.transition(GroupState::PreparingRebalance, now);
        for (token, response) in answers {
            self.respond(token, response);
        }
        if !was_empty || initial_delay == 0 {
            self.check_join_complete(group_id, now);
        }
    }

    /// Completes the join phase once every member has rejoined (or the deadline passed).
    fn check_join_complete(&mut self, group_id: &str, now: Instant) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let deadline_passed = group.join_deadline.is_some_and(|d| now >= d);
        let all_joined = group.members.values().all(|m| m.awaiting_join.is_some());
        let in_initial_delay =
            group.generation_id == 0 && !deadline_passed && self.config.initial_rebalance_delay_ms > 0;
        if !(deadline_passed || all_joined && !in_initial_delay) {
            return;
        }
        // Members that did not rejoin in time are out.
        let gone: Vec<String> =
            group.members.iter().filter(|(_, m)| m.awaiting_join.is_none()).map(|(id, _)| id.clone()).collect();
        for id in &gone {
            if let Some(m) = group.members.remove(id) {
                if let Some(instance) = m.group_instance_id {
                    group.static_members.remove(&instance);
                }
            }
        }
        group.generation_id += 1;
        group.join_deadline = None;
        if group.members.is_empty() {
            group.protocol_name = None;
            group.leader = None;
            group.rebalance_started = None;
            group.transition(GroupState::Empty, now);
            let record = Record::Group {
                group_id: group_id.to_string(),
                value: Some(group.record(self.epoch_ms + now.as_millis() as i64)),
            };
            let id = self.next_persist;
            self.next_persist += 1;
            let partition = offsets_partition(group_id, self.config.offsets_partitions);
            self.effects.push(Effect::Persist { id, partition, records: vec![record] });
            return;
        }
        group.protocol_name = group.select_protocol();
        if group.leader.as_ref().is_none_or(|l| !group.members.contains_key(l)) {
            group.leader = group.members.keys().next().cloned();
        }
        group.transition(GroupState::CompletingRebalance, now);
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let leader = group.leader.clone().unwrap_or_default();
        let roster: Vec<JoinedMember> = group
            .members
            .iter()
            .map(|(id, m)| JoinedMember {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata_for(&protocol),
            })
            .collect();
        let mut answers = Vec::new();
        for (id, member) in group.members.iter_mut() {
            member.is_new = false;
            member.assignment = Bytes::new();
            member.session_deadline = now + Duration::from_millis(member.session_timeout_ms as u64);
            if let Some(token) = member.awaiting_join.take() {
                let response = JoinResponse {
                    error: ErrorCode::None,
                    generation_id: group.generation_id,
                    protocol_type: Some(group.protocol_type.clone()),
                    protocol_name: Some(protocol.clone()),
                    leader: leader.clone(),
                    member_id: id.clone(),
                    members: if *id == leader { roster.clone() } else { Vec::new() },
                };
                answers.push((token, Response::Join(response)));
            }
        }
        for (token, response) in answers {
            self.respond(token, response);
        }
    }

    /// Checks the member and generation of a Sync, Heartbeat, Commit or Leave.
    fn check_member(group: &Group, member_id: &str, instance: Option<&str>, generation_id: Option<i32>) -> ErrorCode {
        if let Some(instance) = instance {
            match group.static_members.get(instance) {
                Some(current) if current != member_id => return ErrorCode::FencedInstanceId,
                None if group.members.contains_key(member_id) => {}
                None => return ErrorCode::UnknownMemberId,
                Some(_) => {}
            }
        }
        if !group.members.contains_key(member_id) {
            return ErrorCode::UnknownMemberId;
        }
        match generation_id {
            Some(g) if g != group.generation_id => ErrorCode::IllegalGeneration,
            _ => ErrorCode::None,
        }
    }

    pub fn handle_sync(&mut self, now: Instant, token: Token, request: SyncRequest) {
        let Some(group) = self.groups.get_mut(&request.group_id) else {
            return self.respond(token, Response::Sync(SyncResponse::error(ErrorCode::UnknownMemberId)));
        };
        let check = Self::check_member(
            group,
            &request.member_id,
            request.group_instance_id.as_deref(),
            Some(request.generation_id),
        );
        if check != ErrorCode::None {
            return self.respond(token, Response::Sync(SyncResponse::error(check)));
        }
        let mismatch = request.protocol_type.as_ref().is_some_and(|t| *t != group.protocol_type)
            || request.protocol_name.as_ref().is_some_and(|n| Some(n) != group.protocol_name.as_ref());
        if mismatch {
            return self.respond(token, Response::Sync(SyncResponse::error(ErrorCode::InconsistentGroupProtocol)));
        }
        match group.state {
            GroupState::Empty => self.respond(token, Response::Sync(SyncResponse::error(ErrorCode::UnknownMemberId))),
            GroupState::PreparingRebalance => {
                self.respond(token, Response::Sync(SyncResponse::error(ErrorCode::RebalanceInProgress)))
            }
            GroupState::Stable => {
                let member = &group.members[&request.member_id];
                let response = SyncResponse {
                    error: ErrorCode::None,
                    protocol_type: Some(group.protocol_type.clone()),
                    protocol_name: group.protocol_name.clone(),
                    assignment: member.assignment.clone(),
                };
                self.respond(token, Response::Sync(response));
            }
            GroupState::CompletingRebalance => {
                let member = group.members.get_mut(&request.member_id).expect("checked");
                member.awaiting_sync = Some(token);
                member.session_deadline = now + Duration::from_millis(member.session_timeout_ms as u64);
                if group.leader.as_deref() != Some(request.member_id.as_str()) {
                    return;
                }
                // The leader's assignment: store it (unassigned members get nothing), persist
                // the group, then answer everyone.
                let assignments: BTreeMap<String, Bytes> = request.assignments.into_iter().collect();
                for (id, member) in group.members.iter_mut() {
                    member.assignment = assignments.get(id).cloned().unwrap_or_default();
                }
                let generation_id = group.generation_id;
                let record = Record::Group {
                    group_id: request.group_id.clone(),
                    value: Some(group.record(self.epoch_ms + now.as_millis() as i64)),
                };
                let group_id = request.group_id;
                self.persist(&group_id.clone(), vec![record], PendingPersist::Sync { group_id, generation_id });
            }
        }
    }

    pub fn handle_heartbeat(
        &mut self,
        now: Instant,
        token: Token,
        group_id: &str,
        member_id: &str,
        instance: Option<&str>,
        generation_id: i32,
    ) {
        let error = match self.groups.get_mut(group_id) {
            None => ErrorCode::UnknownMemberId,
            Some(group) => {
                let check = Self::check_member(group, member_id, instance, None);
                if check != ErrorCode::None {
                    check
                } else {
                    let member = group.members.get_mut(member_id).expect("checked");
                    member.session_deadline = now + Duration::from_millis(member.session_timeout_ms as u64);
                    match group.state {
                        GroupState::PreparingRebalance => ErrorCode::RebalanceInProgress,
                        _ if generation_id != group.generation_id => ErrorCode::IllegalGeneration,
                        _ => ErrorCode::None,
                    }
                }
            }
        };
        self.respond(token, Response::Heartbeat(error));
    }

    pub fn handle_leave(&mut self, now: Instant, token: Token, group_id: &str, members: Vec<MemberIdentity>) {
        let Some(group) = self.groups.get_mut(group_id) else {
            let results = members.into_iter().map(|m| (m, ErrorCode::UnknownMemberId)).collect();
            return self.respond(token, Response::Leave { error: ErrorCode::None, members: results });
        };
        let mut results = Vec::new();
        let mut left = false;
        for identity in members {
            // A static member may leave by instance id alone (its member id unknown to it).
            let member_id = match (&identity.group_instance_id, identity.member_id.is_empty()) {
                (Some(instance), true) => group.static_members.get(instance).cloned().unwrap_or_default(),
                _ => identity.member_id.clone(),
            };
            let error = Self::check_member(group, &member_id, identity.group_instance_id.as_deref(), None);
            if error == ErrorCode::None {
                let member = group.members.remove(&member_id).expect("checked");
                if let Some(instance) = &member.group_instance_id {
                    group.static_members.remove(instance);
                }
                if let Some(pending) = member.awaiting_join {
                    self.effects.push(Effect::Respond {
                        token: pending,
                        response: Response::Join(JoinResponse::error(ErrorCode::UnknownMemberId, &member_id)),
                    });
                }
                if let Some(pending) = member.awaiting_sync {
                    self.effects.push(Effect::Respond {
                        token: pending,
                        response: Response::Sync(SyncResponse::error(ErrorCode::UnknownMemberId)),
                    });
                }
                left = true;
            }
            results.push((identity, error));
        }
        self.respond(token, Response::Leave { error: ErrorCode::None, members: results });
        if left {
            self.members_changed(group_id, now);
        }
    }

    /// After members left or expired: rebalance (or finish the one in progress).
    fn members_changed(&mut self, group_id: &str, now: Instant) {
        let group = self.groups.get_mut(group_id).expect("group exists");
        match group.state {
            GroupState::Empty => {}
            GroupState::PreparingRebalance => self.check_join_complete(group_id, now),
            GroupState::CompletingRebalance | GroupState::Stable => self.prepare_rebalance(group_id, now),
        }
    }

    /// OffsetCommit. `unknown_partitions` (topics or partitions the broker does not have) are
    /// answered with UNKNOWN_TOPIC_OR_PARTITION and not stored.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_offset_commit(
        &mut self,
        now: Instant,
        token: Token,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        instance: Option<&str>,
        offsets: Vec<OffsetToCommit>,
        unknown_partitions: &BTreeSet<(String, i32)>,
    ) {
        let results = |error: ErrorCode, offsets: &[OffsetToCommit]| -> Vec<PartitionResult> {
            offsets.iter().map(|o| PartitionResult { topic: o.topic.clone(), partition: o.partition, error }).collect()
        };
        if group_id.is_empty() {
            return self.respond(token, Response::OffsetCommit(results(ErrorCode::InvalidGroupId, &offsets)));
        }
        let group = self.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(now));
        let error = if generation_id < 0 && member_id.is_empty() {
            // A commit from outside group management (admin tools, assign()-only consumers):
            // allowed while the group has no members.
            if group.members.is_empty() {
                ErrorCode::None
            } else {
                ErrorCode::UnknownMemberId
            }
        } else {
            match Self::check_member(group, member_id, instance, Some(generation_id)) {
                ErrorCode::None if group.state == GroupState::CompletingRebalance => ErrorCode::RebalanceInProgress,
                other => other,
            }
        };
        if error != ErrorCode::None {
            return self.respond(token, Response::OffsetCommit(results(error, &offsets)));
        }
        let commit_timestamp_ms = self.epoch_ms + now.as_millis() as i64;
        let mut answer = Vec::with_capacity(offsets.len());
        let mut records = Vec::new();
        let mut stored = Vec::new();
        for o in offsets {
            let metadata = o.metadata.unwrap_or_default();
            let error = if unknown_partitions.contains(&(o.topic.clone(), o.partition)) {
                ErrorCode::UnknownTopicOrPartition
            } else if metadata.len() > self.config.offset_metadata_bytes_max {
                ErrorCode::OffsetMetadataTooLarge
            } else {
                let value =
                    CommittedOffset { offset: o.offset, leader_epoch: o.leader_epoch, metadata, commit_timestamp_ms };
                records.push(Record::Offset {
                    group_id: group_id.to_string(),
                    topic: o.topic.clone(),
                    partition: o.partition,
                    value: Some(value.clone()),
                });
                stored.push(((o.topic.clone(), o.partition), value));
                ErrorCode::None
            };
            answer.push(PartitionResult { topic: o.topic, partition: o.partition, error });
        }
        if records.is_empty() {
            return self.respond(token, Response::OffsetCommit(answer));
        }
        group.pending_commits += 1;
        let then = PendingPersist::Commit { group_id: group_id.to_string(), token, results: answer, offsets: stored };
        self.persist(group_id, records, then);
    }

    /// OffsetFetch: committed offsets for `partitions` (all of the group's if `None`).
    pub fn offset_fetch(&self, group_id: &str, partitions: Option<&[(String, i32)]>) -> Vec<FetchedOffset> {
        let group = self.groups.get(group_id);
        let fetched = |topic: &str, partition: i32| {
            let committed = group.and_then(|g| g.offsets.get(&(topic.to_string(), partition)));
            FetchedOffset {
                topic: topic.to_string(),
                partition,
                offset: committed.map_or(-1, |c| c.offset),
                leader_epoch: committed.map_or(-1, |c| c.leader_epoch),
                metadata: committed.map(|c| c.metadata.clone()),
            }
        };
        match partitions {
            Some(partitions) => partitions.iter().map(|(t, p)| fetched(t, *p)).collect(),
            None => group.map(|g| g.offsets.keys().map(|(t, p)| fetched(t, *p)).collect()).unwrap_or_default(),
        }
    }

    pub fn list_groups(&self, states: &[String]) -> Vec<GroupListing> {
        self.groups
            .iter()
            .filter(|(_, g)| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state.name())))
            .map(|(id, g)| GroupListing {
                group_id: id.clone(),
                protocol_type: g.protocol_type.clone(),
                state: g.state.name(),
            })
            .collect()
    }

    /// DescribeGroups: an unknown group is described as `Dead`, as Kafka does.
    pub fn describe_group(&self, group_id: &str) -> GroupDescription {
        let Some(group) = self.groups.get(group_id) else {
            return GroupDescription {
                group_id: group_id.to_string(),
                state: "Dead",
                protocol_type: String::new(),
                protocol_name: String::new(),
                members: Vec::new(),
            };
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        GroupDescription {
            group_id: group_id.to_string(),
            state: group.state.name(),
            protocol_type: group.protocol_type.clone(),
            protocol_name: if group.state == GroupState::Stable { protocol.clone() } else { String::new() },
            members: group
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: m.metadata_for(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    /// The state of a group, if it exists.
    pub fn group_state(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    /// The group's last completed rebalance.
    pub fn last_rebalance(&self, group_id: &str) -> Option<Rebalance> {
        self.groups.get(group_id).and_then(|g| g.last_rebalance)
    }

    pub fn handle_delete_groups(&mut self, now: Instant, token: Token, group_ids: Vec<String>) {
        let _ = now;
        let mut results = Vec::new();
        let mut by_partition: BTreeMap<u32, Vec<Record>> = BTreeMap::new();
        for group_id in group_ids {
            let error = match self.groups.get(&group_id) {
                None => ErrorCode::GroupIdNotFound,
                Some(g) if !g.members.is_empty() || g.state != GroupState::Empty => ErrorCode::NonEmptyGroup,
                Some(g) => {
                    let partition = offsets_partition(&group_id, self.config.offsets_partitions);
                    let records = by_partition.entry(partition).or_default();
                    for (topic, p) in g.offsets.keys() {
                        records.push(Record::Offset {
                            group_id: group_id.clone(),
                            topic: topic.clone(),
                            partition: *p,
                            value: None,
                        });
                    }
                    records.push(Record::Group { group_id: group_id.clone(), value: None });
                    self.groups.remove(&group_id);
                    ErrorCode::None
                }
            };
            results.push((group_id, error));
        }
        self.persist_grouped(by_partition, token, Response::DeleteGroups(results));
    }

    /// Persists records that may span partitions, answering once all are written.
    fn persist_grouped(&mut self, by_partition: BTreeMap<u32, Vec<Record>>, token: Token, response: Response) {
        if by_partition.is_empty() {
            return self.respond(token, response);
        }
        // The answer rides on the last persist; earlier ones carry none.
        let count = by_partition.len();
        for (i, (partition, records)) in by_partition.into_iter().enumerate() {
            let id = self.next_persist;
            self.next_persist += 1;
            self.effects.push(Effect::Persist { id, partition, records });
            if i + 1 == count {
                self.awaiting_persist.insert(id, PendingPersist::Plain { token, response: response.clone() });
            }
        }
    }

    /// OffsetDelete: removes committed offsets of topics the group no longer consumes.
    /// `subscribed` says whether an active member subscribes to a topic (the shell decodes
    /// consumer subscriptions).
    pub fn handle_offset_delete(
        &mut self,
        token: Token,
        group_id: &str,
        partitions: Vec<(String, i32)>,
        subscribed: impl Fn(&[u8], &str) -> bool,
    ) {
        let Some(group) = self.groups.get_mut(group_id) else {
            return self
                .respond(token, Response::OffsetDelete { error: ErrorCode::GroupIdNotFound, partitions: Vec::new() });
        };
        let protocol = group.protocol_name.clone().unwrap_or_default();
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (topic, partition) in partitions {
            let in_use = group.state != GroupState::Empty
                && group.members.values().any(|m| subscribed(&m.metadata_for(&protocol), &topic));
            let error = if in_use {
                ErrorCode::GroupSubscribedToTopic
            } else {
                if group.offsets.remove(&(topic.clone(), partition)).is_some() {
                    records.push(Record::Offset {
                        group_id: group_id.to_string(),
                        topic: topic.clone(),
                        partition,
                        value: None,
                    });
                }
                ErrorCode::None
            };
            results.push(PartitionResult { topic, partition, error });
        }
        let response = Response::OffsetDelete { error: ErrorCode::None, partitions: results };
        if records.is_empty() {
            return self.respond(token, response);
        }
        self.persist(group_id, records, PendingPersist::Plain { token, response });
    }

    /// Time passes: expire sessions, pending member ids, join deadlines, and the offsets of
    /// groups empty for longer than the retention.
    pub fn handle_tick(&mut self, now: Instant) {
        let ids: Vec<String> = self.groups.keys().cloned().collect();
        for group_id in ids {
            let group = self.groups.get_mut(&group_id).expect("listed");
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|(_, m)| m.awaiting_join.is_none() && m.session_deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            let mut changed = false;
            for id in expired {
                let member = group.members.remove(&id).expect("listed");
                if let Some(instance) = &member.group_instance_id {
                    group.static_members.remove(instance);
                }
                if let Some(pending) = member.awaiting_sync {
                    self.effects.push(Effect::Respond {
                        token: pending,
                        response: Response::Sync(SyncResponse::error(ErrorCode::UnknownMemberId)),
                    });
                }
                changed = true;
            }
            if changed {
                self.members_changed(&group_id, now);
            } else if self.groups[&group_id].join_deadline.is_some_and(|d| now >= d) {
                self.check_join_complete(&group_id, now);
            }
            self.expire_offsets(&group_id, now);
        }
    }

    fn expire_offsets(&mut self, group_id: &str, now: Instant) {
        let retention = Duration::from_millis(self.config.offsets_retention_ms as u64);
        let group = &self.groups[group_id];
        let idle = group.state == GroupState::Empty && group.pending_commits == 0 && group.pending_members.is_empty();
        if !idle || now.saturating_since(group.state_since) < retention {
            return;
        }
        let now_ms = self.now_ms(now);
        let stale: Vec<(String, i32)> = group
            .offsets
            .iter()
            .filter(|(_, c)| now_ms - c.commit_timestamp_ms >= self.config.offsets_retention_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let mut records: Vec<Record> = stale
            .iter()
            .map(|(t, p)| Record::Offset {
                group_id: group_id.to_string(),
                topic: t.clone(),
                partition: *p,
                value: None,
            })
            .collect();
        let group = self.groups.get_mut(group_id).expect("exists");
        for key in &stale {
            group.offsets.remove(key);
        }
        if group.offsets.is_empty() {
            records.push(Record::Group { group_id: group_id.to_string(), value: None });
            self.groups.remove(group_id);
        }
        if !records.is_empty() {
            let id = self.next_persist;
            self.next_persist += 1;
            let partition = offsets_partition(group_id, self.config.offsets_partitions);
            self.effects.push(Effect::Persist { id, partition, records });
        }
    }

    /// Every record needed to rebuild the groups of `partition` from nothing: used to start
    /// the partition's log afresh (keel's stand-in for log compaction).
    pub fn snapshot(&self, partition: u32, now: Instant) -> Vec<Record> {
        let now_ms = self.now_ms(now);
        let mut records = Vec::new();
        for (group_id, group) in &self.groups {
            if offsets_partition(group_id, self.config.offsets_partitions) != partition {
                continue;
            }
            records.push(Record::Group { group_id: group_id.clone(), value: Some(group.record(now_ms)) });
            for ((topic, p), committed) in &group.offsets {
                records.push(Record::Offset {
                    group_id: group_id.clone(),
                    topic: topic.clone(),
                    partition: *p,
                    value: Some(committed.clone()),
                });
            }
        }
        records
    }

    /// Safety properties the simulator and tests check after every step.
    pub fn check_invariants(&self) {
        for (group_id, group) in &self.groups {
            for (instance, member_id) in &group.static_members {
                let member = group.members.get(member_id);
                assert!(
                    member.is_some_and(|m| m.group_instance_id.as_deref() == Some(instance.as_str())),
                    "{group_id}: static member {instance} maps to a missing member"
                );
            }
            if let Some(leader) = &group.leader {
                assert!(
                    group.state == GroupState::Empty
                        || group.state == GroupState::PreparingRebalance
                        || group.members.contains_key(leader),
                    "{group_id}: leader {leader} is not a member"
                );
            }
            match group.state {
                GroupState::Empty => assert!(group.members.is_empty(), "{group_id}: empty group with members"),
                GroupState::Stable | GroupState::CompletingRebalance => {
                    assert!(!group.members.is_empty(), "{group_id}: {:?} without members", group.state);
                    assert!(
                        group.members.values().all(|m| m.awaiting_join.is_none()),
                        "{group_id}: a member awaits a join answer outside a rebalance"
                    );
                }
                GroupState::PreparingRebalance => {
                    assert!(group.join_deadline.is_some(), "{group_id}: rebalance without deadline")
                }
            }
            if group.state != GroupState::CompletingRebalance {
                assert!(
                    group.members.values().all(|m| m.awaiting_sync.is_none()),
                    "{group_id}: a member awaits sync outside CompletingRebalance"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests;
