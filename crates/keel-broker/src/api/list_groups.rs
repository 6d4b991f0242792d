//! ListGroups.

use keel_kafka::kafka_protocol::messages::list_groups_response::ListedGroup;
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
