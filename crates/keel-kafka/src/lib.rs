//! The Kafka wire protocol as keel speaks it: length-prefixed frames with a size limit, request
//! headers v0-v2, request bodies decoded into the `kafka-protocol` crate's message types, and
//! responses encoded with the right header version.
//!
//! This crate owns bytes-to-messages and back, the table of API versions keel advertises, and
//! Kafka's request rules that are pure functions (when a long-polling Fetch answers:
//! [`fetch_wait`]). It does no IO and knows nothing of topics or logs; the broker decides what
//! a request means.

pub mod fetch_wait;
mod frame;
mod request;
mod versions;

pub use frame::{FrameDecoder, FrameError, FRAME_LENGTH_BYTES};
pub use request::{decode_request, encode_response, DecodeError, Request, RequestHeader};
pub use versions::{supported, SupportedVersions, SUPPORTED_APIS};

pub use kafka_protocol;
