//! The broker's replication shell: it makes the local replicas follow the metadata log, runs
//! the leaders' timers and ISR changes, and fetches for the followers.
//!
//! - Every replayed image is reconciled with the local store, once it holds this process's
//!   own registration ([`keel_replication::may_act_on`]): logs open for the partitions this
//!   broker is a replica of and close for the rest, and each replica takes the role its
//!   registration gives it ([`keel_replication::Replica::apply_image`]).
//! - Every tick, each leader checks lagging followers and acks=all deadlines; an ISR change it
//!   proposes goes to the active controller as AlterPartition, and the answer comes back to
//!   the core.
//! - One fetcher per leader broker sends Kafka Fetch requests (replica id, leader epoch, last
//!   fetched epoch) for every partition this broker follows there, and carries out what the
//!   follower core decides: append, truncate, or start over at the leader's log start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use keel_kafka::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ReplicaState};
use keel_kafka::kafka_protocol::messages::fetch_response::PartitionData;
use keel_kafka::kafka_protocol::messages::{BrokerId, FetchRequest as KafkaFetchRequest};
use keel_metadata::MetadataImage;
use keel_replication::{may_act_on, Config, FetchRequest, FetchResponse, FollowerAction, RoleChange};
use keel_storage::batch::{BatchHeader, BATCH_HEADER_BYTES};
use keel_types::{BrokerEpoch, ErrorCode, LeaderEpoch, NodeId, TopicId};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::kafka_client::KafkaConnection;
use super::protocol::{Request, Response};
use super::replica::{LogView, ReplicaRole, Role};
use super::ClusterLink;
use crate::broker::Broker;
use crate::clock::{monotonic, now_ms};
use crate::groups::OFFSETS_TOPIC;
use crate::topics::Partition;

/// How often leaders check their followers and deadlines.
const TICK: Duration = Duration::from_millis(20);
/// How long a replica fetch waits at the leader for new records.
const FETCH_MAX_WAIT_MS: i32 = 500;
const FETCH_PARTITION_BYTES_MAX: i32 = 4 << 20;
const FETCH_BYTES_MAX: i32 = 16 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A fetcher with nothing to fetch looks again after this long (backoffs, new roles).
const IDLE: Duration = Duration::from_millis(20);

/// Runs until shutdown: reconciles replicas with every new image, ticks leaders, and keeps
/// one fetcher per leader this broker follows.
pub async fn run(broker: Arc<Broker>, link: ClusterLink, mut shutdown: watch::Receiver<bool>) {
    let mut replayed = link.replayed.clone();
    let mut standing = link.standing.clone();
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fetchers: BTreeMap<NodeId, JoinHandle<()>> = BTreeMap::new();
    // The image replayed so far counts as a change: reconcile with it first.
    replayed.mark_changed();
    // The broker epoch the last reconcile saw: a registration may land after the image that
    // holds it was replayed, and then the gate opens without a new image. Heartbeats refresh
    // the standing every interval without changing it; those do not reconcile.
    let mut reconciled_epoch = None;
    loop {
        tokio::select! {
            changed = replayed.changed() => {
                if changed.is_err() {
                    return;
                }
                reconciled_epoch = link.standing.borrow().broker_epoch;
                let image = replayed.borrow_and_update().image.clone();
                reconcile_in_background(&broker, &link, image).await;
            }
            changed = standing.changed() => {
                if changed.is_err() {
                    return;
                }
                let epoch = standing.borrow_and_update().broker_epoch;
                if epoch != reconciled_epoch {
                    reconciled_epoch = epoch;
                    let image = replayed.borrow().image.clone();
                    reconcile_in_background(&broker, &link, image).await;
                }
            }
            _ = ticker.tick() => tick(&broker, &link),
            _ = shutdown.changed() => {
                for (_, fetcher) in fetchers {
                    fetcher.abort();
                }
                return;
            }
        }
        // Checked every round, not only after a reconcile: a fetcher that found nothing to
        // follow may end just after a reconcile gave its leader partitions again.
        fetchers.retain(|_, task| !task.is_finished());
        for leader in followed_leaders(&broker) {
            fetchers
                .entry(leader)
                .or_insert_with(|| tokio::spawn(fetcher(broker.clone(), link.clone(), leader, shutdown.clone())));
        }
    }
}

async fn reconcile_in_background(broker: &Arc<Broker>, link: &ClusterLink, image: Arc<MetadataImage>) {
    let (b, l) = (broker.clone(), link.clone());
    match tokio::task::spawn_blocking(move || reconcile(&b, &l, &image)).await {
        Ok(()) => {}
        Err(error) => tracing::error!(%error, "reconciling replicas failed"),
    }
    broker.appended.notify_waiters();
}

/// Makes the local store and roles match `image`.
fn reconcile(broker: &Broker, link: &ClusterLink, image: &MetadataImage) {
    let me = link.node;
    // Until the image holds this process's registration it may be older than what the quorum
    // committed (a snapshot replayed at restart): acting on it could lead or follow in an
    // epoch that is over.
    if !may_act_on(image, me, link.standing.borrow().broker_epoch) {
        return;
    }
    let now = monotonic();
    for topic in image.topics() {
        let hosted: Vec<i32> = (0..topic.partitions.len() as i32)
            .filter(|&i| topic.partitions[i as usize].replicas.contains(&me))
            .collect();
        if hosted.is_empty() {
            continue;
        }
        let local = match broker.topics.sync_replicas(
            &topic.name,
            Uuid::from_u128(topic.id.0),
            &hosted,
            &topic.configs,
            now_ms(),
        ) {
            Ok(local) => local,
            Err(error) => {
                tracing::error!(topic = %topic.name, %error, "cannot open local replicas");
                continue;
            }
        };
        for &index in &hosted {
            let Some(partition) = local.partition(index) else { continue };
            let registration = &topic.partitions[index as usize];
            let mut role = partition.role.lock();
            if !matches!(*role, Role::Replica(_)) {
                *role = Role::Replica(Box::new(ReplicaRole::new(replica_config(link), topic.id)));
            }
            let Some(replica) = role.replica() else { continue };
            let change = replica.engine.apply_image(now, image, topic.id, index, &LogView(&partition.log));
            replica.complete();
            match change {
                RoleChange::Unchanged => {}
                RoleChange::Refused(reason) => {
                    tracing::warn!(partition = %partition.name(), %reason, "replica role refused")
                }
                _ => tracing::info!(
                    partition = %partition.name(),
                    leader = ?registration.leader,
                    leader_epoch = registration.leader_epoch.0,
                    isr = ?registration.isr,
                    role = replica.engine.role_name(),
                    "replica role changed"
                ),
            }
        }
    }
    let result = broker.topics.retain(|name, id| {
        image
            .topic_by_name(name)
            .is_some_and(|t| t.id == TopicId(id.as_u128()) && t.partitions.iter().any(|p| p.replicas.contains(&me)))
    });
    if let Err(error) = result {
        tracing::error!(%error, "cannot remove deleted topics");
    }
    // Group coordinators follow the leadership of the offsets partitions.
    let led = broker.topics.get(OFFSETS_TOPIC).map_or_else(Vec::new, |offsets| {
        offsets
            .partitions
            .iter()
            .map(|p| {
                let epoch = p.role.lock().leader().map(|l| l.leader_epoch());
                (p.clone(), epoch)
            })
            .collect()
    });
    broker.groups.follow_leadership(led);
}

/// This node's replication settings (each image supplies the topic's min ISR).
fn replica_config(link: &ClusterLink) -> Config {
    Config {
        replica_lag_time_max: link.replica_lag_time_max,
        fetch_backoff: keel_types::Duration::from_millis(500),
        ..Config::new(link.node)
    }
}

/// Leader upkeep: ISR shrink and expand, acks=all deadlines, ISR changes to the controller.
fn tick(broker: &Arc<Broker>, link: &ClusterLink) {
    let now = monotonic();
    let mut advanced = false;
    for topic in broker.topics.list() {
        for partition in &topic.partitions {
            let mut role = partition.role.lock();
            let Some(replica) = role.replica() else { continue };
            let topic_id = replica.topic_id;
            let Some(leader) = replica.leader() else { continue };
            let before = leader.high_watermark();
            leader.handle_tick(now);
            advanced |= leader.high_watermark() > before;
            let proposal = leader.poll_isr_change(now);
            replica.complete();
            if let Some(proposal) = proposal {
                // KIP-903: each replica the change adds is vouched for by the broker epoch of
                // the process whose fetches caught it up, fixed when the change was proposed.
                let change = proposal.request;
                let request = Request::AlterPartition {
                    node: link.node,
                    broker_epoch: link.standing.borrow().broker_epoch.unwrap_or(BrokerEpoch::UNKNOWN),
                    topic_id,
                    partition: partition.index,
                    change: change.clone(),
                    added: proposal.added,
                };
                tracing::info!(partition = %partition.name(), isr = ?change.new_isr, "proposing ISR change");
                let (partition, client, broker) = (partition.clone(), link.client.clone(), broker.clone());
                tokio::spawn(async move {
                    let answer = client.call_active(request, Duration::from_secs(5)).await;
                    let result = match answer {
                        Ok(Response::AlterPartition { registration }) => {
                            Ok((registration.partition_epoch, registration.isr))
                        }
                        Ok(Response::Error { code, message }) => {
                            tracing::info!(partition = %partition.name(), code, %message, "ISR change refused");
                            Err(ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError))
                        }
                        Ok(other) => {
                            tracing::warn!(?other, "unexpected answer to AlterPartition");
                            Err(ErrorCode::UnknownServerError)
                        }
                        Err(error) => {
                            tracing::debug!(%error, "AlterPartition failed");
                            Err(ErrorCode::RequestTimedOut)
                        }
                    };
                    let mut role = partition.role.lock();
                    if let Some(replica) = role.replica() {
                        if let Some(leader) = replica.leader() {
                            leader.handle_isr_change_result(monotonic(), &change, result);
                        }
                        replica.complete();
                    }
                    drop(role);
                    broker.appended.notify_waiters();
                });
            }
        }
    }
    if advanced {
        broker.appended.notify_waiters();
    }
}

/// The leaders of the partitions this broker follows.
fn followed_leaders(broker: &Broker) -> Vec<NodeId> {
    let mut leaders = Vec::new();
    for topic in broker.topics.list() {
        for partition in &topic.partitions {
            let mut role = partition.role.lock();
            if let Some(follower) = role.replica().and_then(|r| r.engine.follower()) {
                if !leaders.contains(&follower.leader()) {
                    leaders.push(follower.leader());
                }
            }
        }
    }
    leaders
}

/// One partition in a replica fetch.
struct Fetching {
    topic_id: Uuid,
    partition: Arc<Partition>,
    request: FetchRequest,
}

/// Fetches from `leader` for every partition this broker follows there, until none is left.
async fn fetcher(broker: Arc<Broker>, link: ClusterLink, leader: NodeId, mut shutdown: watch::Receiver<bool>) {
    let mut connection: Option<KafkaConnection> = None;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = monotonic();
        let mut fetching = Vec::new();
        let mut following = false;
        for topic in broker.topics.list() {
            for partition in &topic.partitions {
                let mut role = partition.role.lock();
                let Some(replica) = role.replica() else { continue };
                if replica.engine.follower().is_none_or(|f| f.leader() != leader) {
                    continue;
                }
                following = true;
                // Fetch v15 carries this process's broker epoch (KIP-903); a node fetches only
                // once registered (it takes roles only then).
                let broker_epoch = link.standing.borrow().broker_epoch;
                if let Some(request) = replica.engine.next_fetch(now, broker_epoch, &LogView(&partition.log)) {
                    fetching.push(Fetching { topic_id: topic.id, partition: partition.clone(), request });
                }
            }
        }
        if !following {
            return;
        }
        if fetching.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(IDLE) => {}
                _ = shutdown.changed() => return,
            }
            continue;
        }
        if connection.is_none() {
            let address = {
                let replayed = link.replayed.borrow();
                replayed
                    .image
                    .broker(leader)
                    .and_then(|b| b.listeners.first())
                    .map(|l| format!("{}:{}", l.host, l.port))
            };
            let connected = match address {
                Some(address) => {
                    KafkaConnection::connect(&address, format!("keel-replica-{}", link.node), CONNECT_TIMEOUT).await
                }
                None => Err(format!("leader {leader} has no registered listener")),
            };
            match connected {
                Ok(c) => connection = Some(c),
                Err(error) => {
                    tracing::debug!(%leader, %error, "replica fetcher cannot connect");
                    fail_all(&fetching);
                    continue;
                }
            }
        }
        let request = fetch_request(link.node, &fetching);
        let timeout = Duration::from_millis(FETCH_MAX_WAIT_MS as u64) + Duration::from_secs(5);
        let exchange = connection.as_mut().expect("connected").fetch(&request, timeout);
        let response = tokio::select! {
            response = exchange => response,
            _ = shutdown.changed() => return,
        };
        let response = match response {
            Ok(response) if response.error_code == 0 => response,
            Ok(response) => {
                tracing::debug!(%leader, error = response.error_code, "replica fetch refused");
                connection = None;
                fail_all(&fetching);
                continue;
            }
            Err(error) => {
                tracing::debug!(%leader, %error, "replica fetch failed");
                connection = None;
                fail_all(&fetching);
                continue;
            }
        };
        let mut answers: BTreeMap<(Uuid, i32), PartitionData> = BTreeMap::new();
        for topic in response.responses {
            for data in topic.partitions {
                answers.insert((topic.topic_id, data.partition_index), data);
            }
        }
        let applied = tokio::task::spawn_blocking(move || {
            for fetched in fetching {
                let key = (fetched.topic_id, fetched.partition.index);
                match answers.remove(&key) {
                    Some(data) => apply_fetched(&fetched, data),
                    None => fail_all(std::slice::from_ref(&fetched)),
                }
            }
        })
        .await;
        if let Err(error) = applied {
            tracing::error!(%error, "applying fetched records failed");
        }
    }
}

fn fail_all(fetching: &[Fetching]) {
    let now = monotonic();
    for fetched in fetching {
        if let Some(follower) = fetched.partition.role.lock().replica().and_then(|r| r.engine.follower_mut()) {
            follower.handle_fetch_failed(now);
        }
    }
}

/// A Fetch v15 request: this broker's id and broker epoch, the partitions by topic id.
fn fetch_request(me: NodeId, fetching: &[Fetching]) -> KafkaFetchRequest {
    let broker_epoch = fetching.first().and_then(|f| f.request.broker_epoch).unwrap_or(BrokerEpoch::UNKNOWN);
    let mut topics: Vec<FetchTopic> = Vec::new();
    for fetched in fetching {
        let partition = FetchPartition::default()
            .with_partition(fetched.partition.index)
            .with_current_leader_epoch(fetched.request.current_leader_epoch.map_or(-1, |e| e.0))
            .with_fetch_offset(fetched.request.fetch_offset)
            .with_last_fetched_epoch(fetched.request.last_fetched_epoch.map_or(-1, |e| e.0))
            .with_log_start_offset(-1)
            .with_partition_max_bytes(FETCH_PARTITION_BYTES_MAX);
        match topics.iter_mut().find(|t| t.topic_id == fetched.topic_id) {
            Some(topic) => topic.partitions.push(partition),
            None => topics.push(FetchTopic::default().with_topic_id(fetched.topic_id).with_partitions(vec![partition])),
        }
    }
    KafkaFetchRequest::default()
        .with_replica_state(ReplicaState::default().with_replica_id(BrokerId(me.0)).with_replica_epoch(broker_epoch.0))
        .with_max_wait_ms(FETCH_MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_BYTES_MAX)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Turns the leader's answer into the follower core's terms and carries out its decision.
fn apply_fetched(fetched: &Fetching, data: PartitionData) {
    let partition = &fetched.partition;
    let log = &partition.log;
    let mut records = data.records.unwrap_or_default();
    let response = match ErrorCode::from_code(data.error_code).unwrap_or(ErrorCode::UnknownServerError) {
        ErrorCode::None if data.diverging_epoch.epoch >= 0 => FetchResponse::Diverging {
            epoch: LeaderEpoch(data.diverging_epoch.epoch),
            end_offset: data.diverging_epoch.end_offset,
        },
        ErrorCode::None => match whole_batches(&records, fetched.request.fetch_offset) {
            Ok((records_end, whole)) => {
                records = records.slice(..whole);
                FetchResponse::Records {
                    high_watermark: data.high_watermark,
                    log_start_offset: data.log_start_offset,
                    records_end,
                }
            }
            Err(error) => {
                tracing::warn!(partition = %partition.name(), %error, "leader sent records keel cannot read");
                FetchResponse::Error(ErrorCode::CorruptMessage)
            }
        },
        // The response has no log end offset: the leader's high watermark stands in for it
        // (cutting back to a committed offset is always safe; the rest is fetched again).
        ErrorCode::OffsetOutOfRange => FetchResponse::OffsetOutOfRange {
            log_start_offset: data.log_start_offset,
            log_end_offset: data.high_watermark,
        },
        error => FetchResponse::Error(error),
    };
    let now = monotonic();
    let mut role = partition.role.lock();
    let Some(replica) = role.replica() else { return };
    let mut view = LogView(log);
    match replica.engine.handle_fetched(now, &fetched.request, response, &records[..], &mut view) {
        Ok(FollowerAction::Truncate { offset }) => {
            tracing::info!(partition = %partition.name(), offset, "truncated a divergent tail");
        }
        Ok(FollowerAction::ResetTo { offset }) => {
            tracing::info!(partition = %partition.name(), offset, "started the log over at the leader's log start");
        }
        Ok(_) => {}
        Err(error) => tracing::error!(partition = %partition.name(), %error, "follower could not update its log"),
    }
}

/// The offset after the last whole batch in `records` (`fetch_offset` if there is none), and
/// the bytes those whole batches take (a size-limited answer may end in part of a batch).
fn whole_batches(records: &Bytes, fetch_offset: i64) -> Result<(i64, usize), String> {
    let mut end = fetch_offset;
    let mut position = 0;
    while records.len() - position >= BATCH_HEADER_BYTES {
        let header = BatchHeader::parse(&records[position..]).map_err(|e| e.to_string())?;
        if position + header.size() > records.len() {
            break;
        }
        end = header.last_offset() + 1;
        position += header.size();
    }
    Ok((end, position))
}
