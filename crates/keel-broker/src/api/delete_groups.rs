//! DeleteGroups.

use keel_groups::Response;
use keel_kafka::kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
