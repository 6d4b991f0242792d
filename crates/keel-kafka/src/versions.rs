//! The APIs and versions keel implements, as advertised in ApiVersions.

use kafka_protocol::messages::ApiKey;

/// An inclusive version range keel serves for one API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedVersions {
    pub api_key: ApiKey,
    /// The lowest version keel decodes.
    pub min: i16,
    pub max: i16,
    /// The lowest version keel advertises; below `min` only where clients need it (Produce).
    pub advertised_min: i16,
}

const fn api(api_key: ApiKey, min: i16, max: i16) -> SupportedVersions {
    SupportedVersions { api_key, min, max, advertised_min: min }
}

/// Every API keel answers. A request for anything else closes the connection (ApiVersions of
/// an unsupported version is answered with UNSUPPORTED_VERSION, as Kafka does).
///
/// Minimum versions are those the `kafka-protocol` crate can decode (Kafka 4.0's baseline,
/// KIP-896): Produce v0-2 and Fetch v0-3 are gone there too. Produce is still advertised from
/// v0, as Kafka 4.0 does (KAFKA-18659): librdkafka before 2.11.1 checks compression support
/// against Produce v0 and would silently stop compressing otherwise. A Produce v0-2 request
/// that actually arrives closes the connection, as in Kafka.
pub const SUPPORTED_APIS: &[SupportedVersions] = &[
    SupportedVersions { api_key: ApiKey::Produce, min: 3, max: 12, advertised_min: 0 },
    api(ApiKey::Fetch, 4, 16),
    api(ApiKey::ListOffsets, 1, 8),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::InitProducerId, 0, 5),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DescribeGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::DescribeLogDirs, 1, 4),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    // v0 (bare SASL frames after it) stays, as in Kafka 4.0: older kafka-python sends it, and
    // librdkafka before 2.6.1 looks for v0 before it will authenticate at all.
    api(ApiKey::SaslHandshake, 0, 1),
    api(ApiKey::SaslAuthenticate, 0, 2),
];

/// The range keel serves for `api_key`, if it serves it at all.
pub fn supported(api_key: ApiKey) -> Option<SupportedVersions> {
    SUPPORTED_APIS.iter().copied().find(|s| s.api_key == api_key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Message;

    /// Every advertised range must be decodable by the message types keel uses.
    #[test]
    fn advertised_versions_are_within_what_the_codec_handles() {
        let codec = |key: ApiKey| match key {
            ApiKey::Produce => ProduceRequest::VERSIONS,
            ApiKey::Fetch => FetchRequest::VERSIONS,
            ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
            ApiKey::Metadata => MetadataRequest::VERSIONS,
            ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
            ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
            ApiKey::DeleteTopics => DeleteTopicsRequest::VERSIONS,
            ApiKey::DescribeConfigs => DescribeConfigsRequest::VERSIONS,
            ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
            ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
            ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
            ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
            ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
            ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
            ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
            ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
            ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
            ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
            ApiKey::DeleteGroups => DeleteGroupsRequest::VERSIONS,
            ApiKey::OffsetDelete => OffsetDeleteRequest::VERSIONS,
            ApiKey::CreatePartitions => CreatePartitionsRequest::VERSIONS,
            ApiKey::AlterConfigs => AlterConfigsRequest::VERSIONS,
            ApiKey::IncrementalAlterConfigs => IncrementalAlterConfigsRequest::VERSIONS,
            ApiKey::DeleteRecords => DeleteRecordsRequest::VERSIONS,
            ApiKey::DescribeCluster => DescribeClusterRequest::VERSIONS,
            ApiKey::DescribeLogDirs => DescribeLogDirsRequest::VERSIONS,
            ApiKey::DescribeUserScramCredentials => DescribeUserScramCredentialsRequest::VERSIONS,
            ApiKey::AlterUserScramCredentials => AlterUserScramCredentialsRequest::VERSIONS,
            ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
            ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
            other => panic!("add {other:?} to this test"),
        };
        for s in SUPPORTED_APIS {
            let range = codec(s.api_key);
            assert!(s.min >= range.min && s.max <= range.max && s.min <= s.max, "{s:?} vs {range:?}");
            assert!(s.advertised_min <= s.min);
        }
    }
}
