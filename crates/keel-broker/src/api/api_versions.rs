//! ApiVersions.

use keel_kafka::kafka_protocol::messages::api_versions_response::ApiVersion;
use keel_kafka::kafka_protocol::messages::*;
use keel_kafka::SUPPORTED_APIS;
use keel_types::ErrorCode;

use crate::broker::code;

/// The ApiVersions answer: every API and version range keel serves.
pub fn api_versions(error: ErrorCode) -> ApiVersionsResponse {
    let api_keys = SUPPORTED_APIS
        .iter()
        .map(|s| {
            ApiVersion::default()
                .with_api_key(s.api_key as i16)
                .with_min_version(s.advertised_min)
                .with_max_version(s.max)
        })
        .collect();
    ApiVersionsResponse::default().with_error_code(code(error)).with_api_keys(api_keys)
}
