//! SyncGroup.

use keel_groups::{Response, SyncRequest};
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
