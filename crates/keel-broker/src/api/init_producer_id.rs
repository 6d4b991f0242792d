//! InitProducerId: producer ids in blocks from the controller.

use keel_kafka::kafka_protocol::messages::*;
use keel_types::ErrorCode;

use crate::broker::{code, Broker};

impl Broker {
    /// Hands out producer ids for idempotent producers. A producer that re-initialises with
    /// its id and epoch (KIP-360) keeps the id with the next epoch. In a cluster a new id may
    /// wait for a block from the controller, and is COORDINATOR_LOAD_IN_PROGRESS (retriable)
    /// if none comes in time.
    pub(crate) async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        if request.transactional_id.is_some() {
            return InitProducerIdResponse::default()
                .with_error_code(code(ErrorCode::TransactionalIdAuthorizationFailed))
                .with_producer_id(ProducerId(-1));
        }
        let (id, epoch) = if request.producer_id.0 >= 0 && (0..i16::MAX - 1).contains(&request.producer_epoch) {
            (request.producer_id.0, request.producer_epoch + 1)
        } else {
            match self.producer_ids.next().await {
                Ok(id) => (id, 0),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot hand out a producer id");
                    return InitProducerIdResponse::default()
                        .with_error_code(code(e.code()))
                        .with_producer_id(ProducerId(-1));
                }
            }
        };
        InitProducerIdResponse::default().with_producer_id(ProducerId(id)).with_producer_epoch(epoch)
    }
}
