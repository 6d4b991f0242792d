//! Heartbeat.

use keel_groups::Response;
use keel_kafka::kafka_protocol::messages::*;

use super::*;
use crate::broker::Broker;

impl Broker {
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
}
