//! JoinGroup.

use bytes::Bytes;
use keel_groups::{JoinRequest, Response};
use keel_kafka::kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::kafka_protocol::protocol::Decodable;

use super::*;
use crate::broker::{Broker, Client};

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
