//! Cluster calls mapped onto the active controller's decisions.

use keel_metadata::{BrokerRegistrationRequest, Controller, MetadataRecord};
use keel_types::ErrorCode;
use keel_types::Refusal;
use keel_types::{Instant, Rng};

use super::protocol::{Request, Response};

/// What a decision produced: the answer to give once its records commit, and the records.
pub type Decided = Result<(Response, Vec<MetadataRecord>), Refusal>;

pub fn decide(controller: &mut Controller, now: Instant, rng: &mut Rng, request: Request) -> Decided {
    Ok(match request {
        Request::RegisterBroker { node, listeners, rack, previous_broker_epoch, process_id, incarnation } => {
            let request =
                BrokerRegistrationRequest { node, listeners, rack, previous_broker_epoch, process_id, incarnation };
            let d = controller.register_broker(now, request)?;
            // The index is filled in when the registration commits.
            (Response::Registered { broker_epoch: d.reply, metadata_index: 0 }, d.records)
        }
        Request::Heartbeat { node, broker_epoch, caught_up, want_shutdown, .. } => {
            let d = controller.heartbeat(now, node, broker_epoch, caught_up, want_shutdown)?;
            let reply = Response::Heartbeat { fenced: d.reply.fenced, should_shut_down: d.reply.should_shut_down };
            (reply, d.records)
        }
        Request::AlterPartition { node, broker_epoch, topic_id, partition, change, added } => {
            let d = controller.alter_partition(node, broker_epoch, topic_id, partition, &change, &added)?;
            (Response::AlterPartition { registration: d.reply }, d.records)
        }
        Request::AllocateProducerIds { node, broker_epoch } => {
            let d = controller.allocate_producer_ids(node, broker_epoch)?;
            (Response::ProducerIds { block: d.reply }, d.records)
        }
        Request::CreateTopic { name, partitions, replication_factor, configs, assignment } => {
            let d = if assignment.is_empty() {
                controller.create_topic(&name, partitions, replication_factor, configs, rng)?
            } else {
                controller.create_topic_assigned(&name, assignment, configs, rng)?
            };
            (Response::TopicCreated { topic_id: d.reply }, d.records)
        }
        Request::DeleteTopic { name } => (Response::Done, controller.delete_topic(&name)?.records),
        Request::CreatePartitions { name, total, assignment } if assignment.is_empty() => {
            (Response::Done, controller.create_partitions(&name, total, rng)?.records)
        }
        Request::CreatePartitions { name, assignment, .. } => {
            (Response::Done, controller.create_partitions_assigned(&name, assignment)?.records)
        }
        Request::AlterConfigs { name, configs } => (Response::Done, controller.alter_configs(&name, configs)?.records),
        Request::AlterScramCredentials { deletions, upsertions } => {
            let d = controller.alter_scram_credentials(&deletions, &upsertions);
            let results = d
                .reply
                .into_iter()
                .map(|(user, result)| match result {
                    Ok(()) => (user, ErrorCode::None.code(), String::new()),
                    Err(refusal) => (user, refusal.code.code(), refusal.message),
                })
                .collect();
            (Response::ScramAltered { results }, d.records)
        }
        Request::FetchMetadata { .. } | Request::Status => {
            unreachable!("the controller task answers metadata fetches and status itself")
        }
    })
}
