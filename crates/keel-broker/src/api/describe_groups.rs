//! DescribeGroups.

use keel_kafka::kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
