//! Kafka's wire error codes, by their Kafka names.

macro_rules! error_codes {
    ($($name:ident = $code:expr, $retriable:expr;)*) => {
        /// A Kafka protocol error code. Protocol outcomes are values of this type, mapped onto the
        /// wire unchanged; see Kafka's `org.apache.kafka.common.protocol.Errors`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(i16)]
        pub enum ErrorCode {
            $($name = $code,)*
        }

        impl ErrorCode {
            /// The code as sent on the wire.
            pub fn code(self) -> i16 {
                self as i16
            }

            /// The error for a wire code, if keel knows it.
            pub fn from_code(code: i16) -> Option<ErrorCode> {
                match code {
                    $($code => Some(ErrorCode::$name),)*
                    _ => None,
                }
            }

            /// Whether Kafka clients retry on this error.
            pub fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$name => $retriable,)*
                }
            }

            /// Every code keel knows, in code order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];
        }
    };
}

error_codes! {
    UnknownServerError = -1, false;
    None = 0, false;
    OffsetOutOfRange = 1, false;
    CorruptMessage = 2, true;
    UnknownTopicOrPartition = 3, true;
    InvalidFetchSize = 4, false;
    LeaderNotAvailable = 5, true;
    NotLeaderOrFollower = 6, true;
    RequestTimedOut = 7, true;
    BrokerNotAvailable = 8, false;
    ReplicaNotAvailable = 9, true;
    MessageTooLarge = 10, false;
    StaleControllerEpoch = 11, false;
    OffsetMetadataTooLarge = 12, false;
    NetworkException = 13, true;
    CoordinatorLoadInProgress = 14, true;
    CoordinatorNotAvailable = 15, true;
    NotCoordinator = 16, true;
    InvalidTopicException = 17, false;
    RecordListTooLarge = 18, false;
    NotEnoughReplicas = 19, true;
    NotEnoughReplicasAfterAppend = 20, true;
    InvalidRequiredAcks = 21, false;
    IllegalGeneration = 22, false;
    InconsistentGroupProtocol = 23, false;
    InvalidGroupId = 24, false;
    UnknownMemberId = 25, false;
    InvalidSessionTimeout = 26, false;
    RebalanceInProgress = 27, false;
    InvalidCommitOffsetSize = 28, false;
    TopicAuthorizationFailed = 29, false;
    GroupAuthorizationFailed = 30, false;
    ClusterAuthorizationFailed = 31, false;
    InvalidTimestamp = 32, false;
    UnsupportedSaslMechanism = 33, false;
    IllegalSaslState = 34, false;
    UnsupportedVersion = 35, false;
    TopicAlreadyExists = 36, false;
    InvalidPartitions = 37, false;
    InvalidReplicationFactor = 38, false;
    InvalidReplicaAssignment = 39, false;
    InvalidConfig = 40, false;
    NotController = 41, true;
    InvalidRequest = 42, false;
    UnsupportedForMessageFormat = 43, false;
    PolicyViolation = 44, false;
    OutOfOrderSequenceNumber = 45, false;
    DuplicateSequenceNumber = 46, false;
    InvalidProducerEpoch = 47, false;
    InvalidTxnState = 48, false;
    InvalidProducerIdMapping = 49, false;
    InvalidTransactionTimeout = 50, false;
    ConcurrentTransactions = 51, true;
    TransactionCoordinatorFenced = 52, false;
    TransactionalIdAuthorizationFailed = 53, false;
    SecurityDisabled = 54, false;
    OperationNotAttempted = 55, false;
    KafkaStorageError = 56, true;
    LogDirNotFound = 57, false;
    SaslAuthenticationFailed = 58, false;
    UnknownProducerId = 59, false;
    ReassignmentInProgress = 60, false;
    DelegationTokenAuthDisabled = 61, false;
    DelegationTokenNotFound = 62, false;
    DelegationTokenOwnerMismatch = 63, false;
    DelegationTokenRequestNotAllowed = 64, false;
    DelegationTokenAuthorizationFailed = 65, false;
    DelegationTokenExpired = 66, false;
    InvalidPrincipalType = 67, false;
    NonEmptyGroup = 68, false;
    GroupIdNotFound = 69, false;
    FetchSessionIdNotFound = 70, true;
    InvalidFetchSessionEpoch = 71, true;
    ListenerNotFound = 72, true;
    TopicDeletionDisabled = 73, false;
    FencedLeaderEpoch = 74, true;
    UnknownLeaderEpoch = 75, true;
    UnsupportedCompressionType = 76, false;
    StaleBrokerEpoch = 77, false;
    OffsetNotAvailable = 78, true;
    MemberIdRequired = 79, false;
    PreferredLeaderNotAvailable = 80, true;
    GroupMaxSizeReached = 81, false;
    FencedInstanceId = 82, false;
    EligibleLeadersNotAvailable = 83, true;
    ElectionNotNeeded = 84, true;
    NoReassignmentInProgress = 85, false;
    GroupSubscribedToTopic = 86, false;
    InvalidRecord = 87, false;
    UnstableOffsetCommit = 88, true;
    ThrottlingQuotaExceeded = 89, true;
    ProducerFenced = 90, false;
    ResourceNotFound = 91, false;
    DuplicateResource = 92, false;
    UnacceptableCredential = 93, false;
    InconsistentVoterSet = 94, false;
    InvalidUpdateVersion = 95, false;
    FeatureUpdateFailed = 96, false;
    PrincipalDeserializationFailure = 97, false;
    SnapshotNotFound = 98, false;
    PositionOutOfRange = 99, false;
    UnknownTopicId = 100, true;
    DuplicateBrokerRegistration = 101, false;
    BrokerIdNotRegistered = 102, false;
    InconsistentTopicId = 103, true;
    InconsistentClusterId = 104, false;
    TransactionalIdNotFound = 105, false;
    FetchSessionTopicIdError = 106, true;
    IneligibleReplica = 107, false;
    NewLeaderElected = 108, false;
    OffsetMovedToTieredStorage = 109, false;
    FencedMemberEpoch = 110, false;
    UnreleasedInstanceId = 111, false;
    UnsupportedAssignor = 112, false;
    StaleMemberEpoch = 113, false;
}

#[cfg(test)]
mod tests {
    use super::ErrorCode;

    #[test]
    fn codes_round_trip_and_are_sorted_and_unique() {
        for pair in ErrorCode::ALL.windows(2) {
            assert!(pair[0].code() < pair[1].code(), "{:?} then {:?}", pair[0], pair[1]);
        }
        for &error in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(error.code()), Some(error));
        }
        assert_eq!(ErrorCode::from_code(30_000), None);
    }

    #[test]
    fn well_known_codes_match_kafka() {
        assert_eq!(ErrorCode::CorruptMessage.code(), 2);
        assert_eq!(ErrorCode::UnknownTopicOrPartition.code(), 3);
        assert_eq!(ErrorCode::NotLeaderOrFollower.code(), 6);
        assert_eq!(ErrorCode::UnsupportedVersion.code(), 35);
        assert_eq!(ErrorCode::OutOfOrderSequenceNumber.code(), 45);
        assert_eq!(ErrorCode::KafkaStorageError.code(), 56);
        assert_eq!(ErrorCode::FencedLeaderEpoch.code(), 74);
        assert_eq!(ErrorCode::InvalidRecord.code(), 87);
        assert_eq!(ErrorCode::ProducerFenced.code(), 90);
        assert!(ErrorCode::NotLeaderOrFollower.is_retriable());
        assert!(!ErrorCode::InvalidRecord.is_retriable());
    }
}
