//! Kafka's group APIs, translated to and from the coordinator's requests and answers.

use std::collections::BTreeSet;

use bytes::Bytes;
use keel_groups::{JoinRequest, MemberIdentity, OffsetToCommit, PartitionResult, Response, SyncRequest};
use keel_kafka::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use keel_kafka::kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use keel_kafka::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use keel_kafka::kafka_protocol::messages::leave_group_response::MemberResponse;
use keel_kafka::kafka_protocol::messages::list_groups_response::ListedGroup;
use keel_kafka::kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use keel_kafka::kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use keel_kafka::kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::{Decodable, StrBytes};
use keel_types::ErrorCode;

use crate::broker::{Broker, Client};

fn s(value: impl Into<String>) -> StrBytes {
    StrBytes::from_string(value.into())
}

fn opt(value: Option<String>) -> Option<StrBytes> {
    value.map(s)
}

/// The topics a consumer-protocol member subscribes to, from its JoinGroup metadata.
pub fn subscribed_topics(metadata: &[u8]) -> Vec<String> {
    if metadata.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([metadata[0], metadata[1]]);
    let mut body = Bytes::copy_from_slice(&metadata[2..]);
    match ConsumerProtocolSubscription::decode(&mut body, version.clamp(0, 3)) {
        Ok(subscription) => subscription.topics.iter().map(|t| t.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

impl Broker {
    pub(crate) async fn join_group(
        &self,
        client: &Client,
        request: JoinGroupRequest,
        version: i16,
    ) -> JoinGroupResponse {
        let join = JoinRequest {
            group_id: request.group_id.to_string(),
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|i| i.to_string()),
            client_id: client.client_id.clone(),
            client_host: client.host.clone(),
            session_timeout_ms: request.session_timeout_ms,
            // v0 has no rebalance timeout: the session timeout serves.
            rebalance_timeout_ms: if version >= 1 { request.rebalance_timeout_ms } else { request.session_timeout_ms },
            protocol_type: request.protocol_type.to_string(),
            protocols: request.protocols.into_iter().map(|p| (p.name.to_string(), p.metadata)).collect(),
            require_known_member_id: version >= 4,
        };
        let group_id = join.group_id.clone();
        let r = match self.groups.call(&group_id, move |c, now, token| c.handle_join(now, token, join)).await {
            Ok(Response::Join(r)) => r,
            answer => return JoinGroupResponse::default().with_error_code(failure(answer).code()),
        };
        let members = r
            .members
            .into_iter()
            .map(|m| {
                let member =
                    JoinGroupResponseMember::default().with_member_id(s(m.member_id)).with_metadata(m.metadata);
                if version >= 5 {
                    member.with_group_instance_id(opt(m.group_instance_id))
                } else {
                    member
                }
            })
            .collect();
        let response = JoinGroupResponse::default()
            .with_error_code(r.error.code())
            .with_generation_id(r.generation_id)
            .with_protocol_name(if version >= 7 {
                opt(r.protocol_name)
            } else {
                Some(s(r.protocol_name.unwrap_or_default()))
            })
            .with_leader(s(r.leader))
            .with_member_id(s(r.member_id))
            .with_members(members);
        if version >= 7 {
            response.with_protocol_type(opt(r.protocol_type))
        } else {
            response
        }
    }

    pub(crate) async fn sync_group(&self, request: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let sync = SyncRequest {
            group_id: request.group_id.to_string(),
            generation_id: request.generation_id,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.map(|i| i.to_string()),
            protocol_type: request.protocol_type.map(|p| p.to_string()),
            protocol_name: request.protocol_name.map(|p| p.to_string()),
            assignments: request.assignments.into_iter().map(|a| (a.member_id.to_string(), a.assignment)).collect(),
        };
        let group_id = sync.group_id.clone();
        let r = match self.groups.call(&group_id, move |c, now, token| c.handle_sync(now, token, sync)).await {
            Ok(Response::Sync(r)) => r,
            answer => return SyncGroupResponse::default().with_error_code(failure(answer).code()),
        };
        let response = SyncGroupResponse::default().with_error_code(r.error.code()).with_assignment(r.assignment);
        if version >= 5 {
            response.with_protocol_type(opt(r.protocol_type)).with_protocol_name(opt(r.protocol_name))
        } else {
            response
        }
    }

    pub(crate) async fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let instance = request.group_instance_id.map(|i| i.to_string());
        let generation_id = request.generation_id;
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, now, token| {
                c.handle_heartbeat(now, token, &group_id, &member_id, instance.as_deref(), generation_id)
            })
            .await;
        let error = match answer {
            Ok(Response::Heartbeat(e)) => e,
            answer => failure(answer),
        };
        HeartbeatResponse::default().with_error_code(error.code())
    }

    pub(crate) async fn leave_group(&self, request: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let members: Vec<MemberIdentity> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| MemberIdentity {
                    member_id: m.member_id.to_string(),
                    group_instance_id: m.group_instance_id.as_ref().map(|i| i.to_string()),
                })
                .collect()
        } else {
            vec![MemberIdentity { member_id: request.member_id.to_string(), group_instance_id: None }]
        };
        let group_id = request.group_id.to_string();
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, now, token| c.handle_leave(now, token, &group_id, members))
            .await;
        let (error, members) = match answer {
            Ok(Response::Leave { error, members }) => (error, members),
            answer => return LeaveGroupResponse::default().with_error_code(failure(answer).code()),
        };
        if version < 3 {
            // One member: its result is the request's result.
            let error = members.first().map_or(error, |(_, e)| *e);
            return LeaveGroupResponse::default().with_error_code(error.code());
        }
        let members = members
            .into_iter()
            .map(|(identity, error)| {
                MemberResponse::default()
                    .with_member_id(s(identity.member_id))
                    .with_group_instance_id(opt(identity.group_instance_id))
                    .with_error_code(error.code())
            })
            .collect();
        LeaveGroupResponse::default().with_error_code(error.code()).with_members(members)
    }

    pub(crate) async fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let mut unknown = BTreeSet::new();
        let mut offsets = Vec::new();
        for topic in &request.topics {
            let known = self.topics.get(&topic.name.0);
            for p in &topic.partitions {
                if known.as_ref().and_then(|t| t.partition(p.partition_index)).is_none() {
                    unknown.insert((topic.name.to_string(), p.partition_index));
                }
                offsets.push(OffsetToCommit {
                    topic: topic.name.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                });
            }
        }
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let instance = request.group_instance_id.map(|i| i.to_string());
        let generation_id = request.generation_id_or_member_epoch;
        let requested: Vec<(String, i32)> = offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, now, token| {
                c.handle_offset_commit(
                    now,
                    token,
                    &group_id,
                    generation_id,
                    &member_id,
                    instance.as_deref(),
                    offsets,
                    &unknown,
                )
            })
            .await;
        let results = match answer {
            Ok(Response::OffsetCommit(results)) => results,
            answer => {
                // Every partition gets the request's error (NOT_COORDINATOR: the client looks
                // for the coordinator again).
                let error = failure(answer);
                requested.into_iter().map(|(topic, partition)| PartitionResult { topic, partition, error }).collect()
            }
        };
        let mut topics: Vec<OffsetCommitResponseTopic> = Vec::new();
        for r in results {
            let partition = OffsetCommitResponsePartition::default()
                .with_partition_index(r.partition)
                .with_error_code(r.error.code());
            match topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(s(r.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetCommitResponse::default().with_topics(topics)
    }

    pub(crate) fn offset_fetch(&self, request: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|g| {
                    let wanted: Option<Vec<(String, i32)>> = g.topics.map(|topics| {
                        topics
                            .iter()
                            .flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p)))
                            .collect()
                    });
                    let fetched =
                        match self.groups.read(&g.group_id, |c| c.offset_fetch(&g.group_id, wanted.as_deref())) {
                            Ok(fetched) => fetched,
                            Err(error) => {
                                return OffsetFetchResponseGroup::default()
                                    .with_group_id(g.group_id)
                                    .with_error_code(error.code())
                            }
                        };
                    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
                    for f in fetched {
                        let partition = OffsetFetchResponsePartitions::default()
                            .with_partition_index(f.partition)
                            .with_committed_offset(f.offset)
                            .with_committed_leader_epoch(f.leader_epoch)
                            .with_metadata(Some(s(f.metadata.unwrap_or_default())));
                        match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
                            Some(t) => t.partitions.push(partition),
                            None => topics.push(
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(f.topic)))
                                    .with_partitions(vec![partition]),
                            ),
                        }
                    }
                    OffsetFetchResponseGroup::default().with_group_id(g.group_id).with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted: Option<Vec<(String, i32)>> = request.topics.map(|topics| {
            topics.iter().flat_map(|t| t.partition_indexes.iter().map(move |p| (t.name.to_string(), *p))).collect()
        });
        let fetched =
            match self.groups.read(&request.group_id, |c| c.offset_fetch(&request.group_id, wanted.as_deref())) {
                Ok(fetched) => fetched,
                // v0 and v1 have no request-level error: the client sees none of its offsets and
                // finds the coordinator again on its next attempt.
                Err(error) => return OffsetFetchResponse::default().with_error_code(error.code()),
            };
        let mut topics: Vec<OffsetFetchResponseTopic> = Vec::new();
        for f in fetched {
            let mut partition = OffsetFetchResponsePartition::default()
                .with_partition_index(f.partition)
                .with_committed_offset(f.offset)
                .with_metadata(Some(s(f.metadata.unwrap_or_default())));
            if version >= 5 {
                partition = partition.with_committed_leader_epoch(f.leader_epoch);
            }
            match topics.iter_mut().find(|t| t.name.0.as_str() == f.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(f.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetFetchResponse::default().with_topics(topics)
    }

    pub(crate) fn list_groups(&self, request: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let states: Vec<String> = request.states_filter.iter().map(|s| s.to_string()).collect();
        let types: Vec<String> = request.types_filter.iter().map(|s| s.to_string()).collect();
        let groups = self
            .groups
            .read_all(|c| c.list_groups(&states))
            .into_iter()
            // The group type (KIP-848) of every keel group is "classic".
            .filter(|_| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case("classic")))
            .map(|g| {
                let listed =
                    ListedGroup::default().with_group_id(GroupId(s(g.group_id))).with_protocol_type(s(g.protocol_type));
                let listed = if version >= 4 { listed.with_group_state(s(g.state)) } else { listed };
                if version >= 5 {
                    listed.with_group_type(s("classic"))
                } else {
                    listed
                }
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    pub(crate) fn describe_groups(&self, request: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
        let groups = request
            .groups
            .into_iter()
            .map(|group_id| {
                let d = match self.groups.read(&group_id, |c| c.describe_group(&group_id)) {
                    Ok(d) => d,
                    Err(error) => {
                        return DescribedGroup::default().with_group_id(group_id).with_error_code(error.code())
                    }
                };
                let members = d
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = DescribedGroupMember::default()
                            .with_member_id(s(m.member_id))
                            .with_client_id(s(m.client_id))
                            .with_client_host(s(m.client_host))
                            .with_member_metadata(m.metadata)
                            .with_member_assignment(m.assignment);
                        if version >= 4 {
                            member.with_group_instance_id(opt(m.group_instance_id))
                        } else {
                            member
                        }
                    })
                    .collect();
                let described = DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_group_state(s(d.state))
                    .with_protocol_type(s(d.protocol_type))
                    .with_protocol_data(s(d.protocol_name))
                    .with_members(members);
                if version >= 3 && request.include_authorized_operations {
                    described.with_authorized_operations(GROUP_OPERATIONS_ALL)
                } else {
                    described
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(crate) async fn delete_groups(&self, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let ids: Vec<String> = request.groups_names.iter().map(|g| g.to_string()).collect();
        // Each coordinator deletes its own groups.
        let (here, elsewhere) = self.groups.split(&ids);
        let mut results: Vec<(String, ErrorCode)> =
            elsewhere.into_iter().map(|g| (g.clone(), ErrorCode::NotCoordinator)).collect();
        for ids in here {
            let key = ids[0].clone();
            let answer = self
                .groups
                .call(&key, {
                    let ids = ids.clone();
                    move |c, now, token| c.handle_delete_groups(now, token, ids)
                })
                .await;
            match answer {
                Ok(Response::DeleteGroups(deleted)) => results.extend(deleted),
                answer => {
                    let error = failure(answer);
                    results.extend(ids.into_iter().map(|g| (g, error)));
                }
            }
        }
        let results = results
            .into_iter()
            .map(|(g, e)| DeletableGroupResult::default().with_group_id(GroupId(s(g))).with_error_code(e.code()))
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }

    pub(crate) async fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        let partitions: Vec<(String, i32)> = request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.name.to_string(), p.partition_index)))
            .collect();
        let group_id = request.group_id.to_string();
        let answer = self
            .groups
            .call(&group_id.clone(), move |c, _now, token| {
                c.handle_offset_delete(token, &group_id, partitions, |metadata, topic| {
                    subscribed_topics(metadata).iter().any(|t| t == topic)
                })
            })
            .await;
        let (error, partitions) = match answer {
            Ok(Response::OffsetDelete { error, partitions }) => (error, partitions),
            answer => return OffsetDeleteResponse::default().with_error_code(failure(answer).code()),
        };
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for r in partitions {
            let partition = OffsetDeleteResponsePartition::default()
                .with_partition_index(r.partition)
                .with_error_code(r.error.code());
            match topics.iter_mut().find(|t| t.name.0.as_str() == r.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(s(r.topic)))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        OffsetDeleteResponse::default().with_error_code(error.code()).with_topics(topics)
    }
}

/// The error for a coordinator call that gave no fitting answer: the call's own error
/// (`NOT_COORDINATOR`), or a coordinator answer of the wrong kind (a bug, reported as such).
fn failure(answer: Result<Response, ErrorCode>) -> ErrorCode {
    match answer {
        Err(error) => error,
        Ok(other) => {
            tracing::error!(?other, "the group coordinator answered with the wrong kind of response");
            ErrorCode::UnknownServerError
        }
    }
}

/// READ, DELETE, DESCRIBE (bits of Kafka's AclOperation codes) for groups without an
/// authorizer.
const GROUP_OPERATIONS_ALL: i32 = (1 << 3) | (1 << 6) | (1 << 8);
