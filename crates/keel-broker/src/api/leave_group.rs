//! LeaveGroup.

use keel_groups::{MemberIdentity, Response};
use keel_kafka::kafka_protocol::messages::leave_group_response::MemberResponse;
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
