//! ACL bindings and filters with Kafka's protocol values, names and matching rules
//! (`org.apache.kafka.common.acl` and `org.apache.kafka.common.resource`).

use std::fmt;

use keel_types::{ErrorCode, Refusal};

use crate::KafkaPrincipal;

/// The only name a CLUSTER resource can have (Kafka's `Resource.CLUSTER_NAME`).
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// A LITERAL resource name that matches every resource of its type.
pub const WILDCARD_RESOURCE: &str = "*";

/// An ACL host that matches every client address.
pub const WILDCARD_HOST: &str = "*";

/// A Kafka enum carried as an `i8` on the wire: every value the protocol defines, the name
/// Kafka prints, and `Unknown` for values this version does not know (as Kafka's `fromCode`).
macro_rules! protocol_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $value:literal, $kafka_name:literal;)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name {
            $($variant,)*
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The value for a wire code; codes Kafka has not defined are `Unknown`.
            pub fn from_i8(code: i8) -> $name {
                match code {
                    $($value => $name::$variant,)*
                    _ => $name::Unknown,
                }
            }

            /// The wire code.
            pub fn as_i8(self) -> i8 {
                match self {
                    $($name::$variant => $value,)*
                }
            }

            /// The name Kafka prints (`TOPIC`, `DESCRIBE_CONFIGS`).
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $kafka_name,)*
                }
            }

            /// The value for a name, ignoring case, as Kafka's `fromString`; `Unknown` for
            /// names it does not know.
            pub fn from_name(name: &str) -> $name {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|value| value.name().eq_ignore_ascii_case(name))
                    .unwrap_or($name::Unknown)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

protocol_enum! {
    /// What kind of resource an ACL protects (Kafka's `ResourceType`).
    ResourceType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
        DelegationToken = 6, "DELEGATION_TOKEN";
        User = 7, "USER";
    }
}

protocol_enum! {
    /// How an ACL's resource name matches (Kafka's `PatternType`). Stored ACLs are LITERAL or
    /// PREFIXED; ANY and MATCH exist only in filters.
    PatternType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Match = 2, "MATCH";
        Literal = 3, "LITERAL";
        Prefixed = 4, "PREFIXED";
    }
}

protocol_enum! {
    /// What an ACL allows or denies (Kafka's `AclOperation`).
    AclOperation {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
        CreateTokens = 13, "CREATE_TOKENS";
        DescribeTokens = 14, "DESCRIBE_TOKENS";
    }
}

protocol_enum! {
    /// Whether an ACL allows or denies (Kafka's `AclPermissionType`).
    AclPermissionType {
        Unknown = 0, "UNKNOWN";
        Any = 1, "ANY";
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
}

/// One ACL, as CreateAcls carries it and the metadata log stores it: a resource pattern and
/// an access control entry. `principal` is kept as the client sent it (`User:alice`), as
/// Kafka's `AccessControlEntry` keeps it; [`AclBinding::validate`] checks that it parses.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    pub principal: String,
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBinding {
    /// Checks a binding from CreateAcls as Kafka's broker (`AclApis.handleCreateAcls`) and
    /// controller (`AclControlManager.validateNewAcl`) do, in their order, with their
    /// messages; every refusal is INVALID_REQUEST. keel also refuses a principal that does not
    /// parse, which Kafka's controller only finds when it builds the ACL.
    pub fn validate(&self) -> Result<(), Refusal> {
        let invalid = |message: String| Err(Refusal::new(ErrorCode::InvalidRequest, message));
        if self.resource_type == ResourceType::Cluster && self.resource_name != CLUSTER_NAME {
            return invalid(format!("The only valid name for the CLUSTER resource is {CLUSTER_NAME}"));
        }
        if self.resource_name.is_empty() {
            return invalid("Invalid empty resource name".to_owned());
        }
        if matches!(self.resource_type, ResourceType::Unknown | ResourceType::Any) {
            return invalid(format!("Invalid resourceType {}", self.resource_type));
        }
        if !matches!(self.pattern_type, PatternType::Literal | PatternType::Prefixed) {
            return invalid(format!("Invalid patternType {}", self.pattern_type));
        }
        if matches!(self.operation, AclOperation::Unknown | AclOperation::Any) {
            return invalid(format!("Invalid operation {}", self.operation));
        }
        if !matches!(self.permission, AclPermissionType::Allow | AclPermissionType::Deny) {
            return invalid(format!("Invalid permissionType {}", self.permission));
        }
        if let Err(error) = KafkaPrincipal::parse(&self.principal) {
            return invalid(format!("Invalid principal: {error}"));
        }
        Ok(())
    }
}

impl fmt::Display for AclBinding {
    /// Kafka's `AclBinding.toString`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "(pattern=ResourcePattern(resourceType={}, name={}, patternType={}), \
             entry=(principal={}, host={}, operation={}, permissionType={}))",
            self.resource_type,
            self.resource_name,
            self.pattern_type,
            self.principal,
            self.host,
            self.operation,
            self.permission
        )
    }
}

/// A DescribeAcls or DeleteAcls filter (Kafka's `AclBindingFilter`). `None` fields match
/// anything, as Kafka's null fields do; ANY matches every value of an enum field.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclBindingFilter {
    pub resource_type: ResourceType,
    pub resource_name: Option<String>,
    /// ANY: any pattern with exactly this name. MATCH: every ACL that would apply to a
    /// resource of this name (the LITERAL name, the LITERAL `*`, PREFIXED patterns that
    /// start the name). LITERAL or PREFIXED: only that pattern type, with exactly this name.
    pub pattern_type: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermissionType,
}

impl AclBindingFilter {
    /// The filter that matches every binding.
    pub fn any() -> AclBindingFilter {
        AclBindingFilter {
            resource_type: ResourceType::Any,
            resource_name: None,
            pattern_type: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermissionType::Any,
        }
    }

    /// Checks a DeleteAcls filter as Kafka's `AclControlManager.validateFilter`: a filter
    /// with an UNKNOWN field is refused with INVALID_REQUEST.
    pub fn validate(&self) -> Result<(), Refusal> {
        if self.resource_type == ResourceType::Unknown || self.pattern_type == PatternType::Unknown {
            return Err(Refusal::new(ErrorCode::InvalidRequest, "Unknown patternFilter."));
        }
        if self.operation == AclOperation::Unknown || self.permission == AclPermissionType::Unknown {
            return Err(Refusal::new(ErrorCode::InvalidRequest, "Unknown entryFilter."));
        }
        Ok(())
    }

    /// Whether the filter matches the binding: Kafka's `ResourcePatternFilter.matches` and
    /// `AccessControlEntryFilter.matches`.
    pub fn matches(&self, binding: &AclBinding) -> bool {
        self.matches_pattern(binding) && self.matches_entry(binding)
    }

    fn matches_pattern(&self, binding: &AclBinding) -> bool {
        if self.resource_type != ResourceType::Any && self.resource_type != binding.resource_type {
            return false;
        }
        if !matches!(self.pattern_type, PatternType::Any | PatternType::Match)
            && self.pattern_type != binding.pattern_type
        {
            return false;
        }
        let Some(name) = &self.resource_name else {
            return true;
        };
        if self.pattern_type == PatternType::Any || self.pattern_type == binding.pattern_type {
            return *name == binding.resource_name;
        }
        // MATCH against a stored pattern.
        match binding.pattern_type {
            PatternType::Literal => *name == binding.resource_name || binding.resource_name == WILDCARD_RESOURCE,
            PatternType::Prefixed => name.starts_with(&binding.resource_name),
            // Stored bindings are LITERAL or PREFIXED; Kafka throws on anything else.
            PatternType::Unknown | PatternType::Any | PatternType::Match => false,
        }
    }

    fn matches_entry(&self, binding: &AclBinding) -> bool {
        self.principal.as_ref().is_none_or(|principal| *principal == binding.principal)
            && self.host.as_ref().is_none_or(|host| *host == binding.host)
            && (self.operation == AclOperation::Any || self.operation == binding.operation)
            && (self.permission == AclPermissionType::Any || self.permission == binding.permission)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(resource_type: ResourceType, name: &str, pattern_type: PatternType) -> AclBinding {
        AclBinding {
            resource_type,
            resource_name: name.to_owned(),
            pattern_type,
            principal: "User:alice".to_owned(),
            host: "*".to_owned(),
            operation: AclOperation::Read,
            permission: AclPermissionType::Allow,
        }
    }

    #[test]
    fn protocol_values_and_names_match_kafka() {
        let resource_types = [
            (ResourceType::Unknown, 0, "UNKNOWN"),
            (ResourceType::Any, 1, "ANY"),
            (ResourceType::Topic, 2, "TOPIC"),
            (ResourceType::Group, 3, "GROUP"),
            (ResourceType::Cluster, 4, "CLUSTER"),
            (ResourceType::TransactionalId, 5, "TRANSACTIONAL_ID"),
            (ResourceType::DelegationToken, 6, "DELEGATION_TOKEN"),
            (ResourceType::User, 7, "USER"),
        ];
        for (value, code, name) in resource_types {
            assert_eq!((value.as_i8(), value.name()), (code, name));
            assert_eq!(ResourceType::from_i8(code), value);
            assert_eq!(ResourceType::from_name(&name.to_lowercase()), value);
        }
        let pattern_types = [
            (PatternType::Unknown, 0, "UNKNOWN"),
            (PatternType::Any, 1, "ANY"),
            (PatternType::Match, 2, "MATCH"),
            (PatternType::Literal, 3, "LITERAL"),
            (PatternType::Prefixed, 4, "PREFIXED"),
        ];
        for (value, code, name) in pattern_types {
            assert_eq!((value.as_i8(), value.name()), (code, name));
            assert_eq!(PatternType::from_i8(code), value);
        }
        let operations = [
            (AclOperation::Unknown, 0, "UNKNOWN"),
            (AclOperation::Any, 1, "ANY"),
            (AclOperation::All, 2, "ALL"),
            (AclOperation::Read, 3, "READ"),
            (AclOperation::Write, 4, "WRITE"),
            (AclOperation::Create, 5, "CREATE"),
            (AclOperation::Delete, 6, "DELETE"),
            (AclOperation::Alter, 7, "ALTER"),
            (AclOperation::Describe, 8, "DESCRIBE"),
            (AclOperation::ClusterAction, 9, "CLUSTER_ACTION"),
            (AclOperation::DescribeConfigs, 10, "DESCRIBE_CONFIGS"),
            (AclOperation::AlterConfigs, 11, "ALTER_CONFIGS"),
            (AclOperation::IdempotentWrite, 12, "IDEMPOTENT_WRITE"),
            (AclOperation::CreateTokens, 13, "CREATE_TOKENS"),
            (AclOperation::DescribeTokens, 14, "DESCRIBE_TOKENS"),
        ];
        for (value, code, name) in operations {
            assert_eq!((value.as_i8(), value.name()), (code, name));
            assert_eq!(AclOperation::from_i8(code), value);
            assert_eq!(AclOperation::from_name(name), value);
        }
        let permissions = [
            (AclPermissionType::Unknown, 0, "UNKNOWN"),
            (AclPermissionType::Any, 1, "ANY"),
            (AclPermissionType::Deny, 2, "DENY"),
            (AclPermissionType::Allow, 3, "ALLOW"),
        ];
        for (value, code, name) in permissions {
            assert_eq!((value.as_i8(), value.name()), (code, name));
            assert_eq!(AclPermissionType::from_i8(code), value);
        }
        assert_eq!(ResourceType::from_i8(8), ResourceType::Unknown);
        assert_eq!(AclOperation::from_i8(-1), AclOperation::Unknown);
        assert_eq!(PatternType::from_name("nonsense"), PatternType::Unknown);
        assert_eq!(AclOperation::ALL.len(), 15);
    }

    #[test]
    fn create_acls_validation_as_kafka() {
        let valid = binding(ResourceType::Topic, "orders", PatternType::Literal);
        assert_eq!(valid.validate(), Ok(()));
        type Change = fn(&mut AclBinding);
        let with = |change: Change| {
            let mut changed = valid.clone();
            change(&mut changed);
            changed.validate()
        };
        let cases: [(Change, Option<&str>); 14] = [
            (|b| b.pattern_type = PatternType::Prefixed, None),
            (
                |b| b.resource_type = ResourceType::Cluster,
                Some("The only valid name for the CLUSTER resource is kafka-cluster"),
            ),
            (
                |b| {
                    b.resource_type = ResourceType::Cluster;
                    b.resource_name = CLUSTER_NAME.to_owned()
                },
                None,
            ),
            (|b| b.resource_name.clear(), Some("Invalid empty resource name")),
            (|b| b.resource_type = ResourceType::Any, Some("Invalid resourceType ANY")),
            (|b| b.resource_type = ResourceType::Unknown, Some("Invalid resourceType UNKNOWN")),
            (|b| b.pattern_type = PatternType::Match, Some("Invalid patternType MATCH")),
            (|b| b.pattern_type = PatternType::Any, Some("Invalid patternType ANY")),
            (|b| b.pattern_type = PatternType::Unknown, Some("Invalid patternType UNKNOWN")),
            (|b| b.operation = AclOperation::Any, Some("Invalid operation ANY")),
            (|b| b.operation = AclOperation::Unknown, Some("Invalid operation UNKNOWN")),
            (|b| b.permission = AclPermissionType::Any, Some("Invalid permissionType ANY")),
            (|b| b.permission = AclPermissionType::Unknown, Some("Invalid permissionType UNKNOWN")),
            (
                |b| b.principal = "alice".to_owned(),
                Some("Invalid principal: expected a string in format principalType:principalName but got \"alice\""),
            ),
        ];
        for (index, (change, expected)) in cases.into_iter().enumerate() {
            let result = with(change);
            match expected {
                None => assert_eq!(result, Ok(()), "case {index}"),
                Some(message) => {
                    assert_eq!(result, Err(Refusal::new(ErrorCode::InvalidRequest, message)), "case {index}")
                }
            }
        }
        // Wildcards are valid bindings.
        assert_eq!(
            with(|b| {
                b.principal = "User:*".to_owned();
                b.resource_name = "*".to_owned()
            }),
            Ok(())
        );
    }

    #[test]
    fn pattern_filters_match_as_kafka() {
        let literal = binding(ResourceType::Topic, "orders", PatternType::Literal);
        let wildcard = binding(ResourceType::Topic, "*", PatternType::Literal);
        let prefixed = binding(ResourceType::Topic, "ord", PatternType::Prefixed);
        let other_prefix = binding(ResourceType::Topic, "pay", PatternType::Prefixed);
        let group = binding(ResourceType::Group, "orders", PatternType::Literal);
        let filter = |resource_type, name: Option<&str>, pattern_type| AclBindingFilter {
            resource_type,
            resource_name: name.map(str::to_owned),
            pattern_type,
            ..AclBindingFilter::any()
        };
        use PatternType::{Any, Literal, Match, Prefixed};
        use ResourceType::Topic;
        // (filter, [literal, wildcard, prefixed, other_prefix, group])
        let cases = [
            (AclBindingFilter::any(), [true, true, true, true, true]),
            (filter(Topic, None, Any), [true, true, true, true, false]),
            (filter(ResourceType::Any, Some("orders"), Any), [true, false, false, false, true]),
            (filter(Topic, Some("orders"), Literal), [true, false, false, false, false]),
            (filter(Topic, Some("ord"), Prefixed), [false, false, true, false, false]),
            (filter(Topic, Some("ord"), Literal), [false, false, false, false, false]),
            (filter(Topic, Some("orders"), Match), [true, true, true, false, false]),
            (filter(Topic, Some("payments"), Match), [false, true, false, true, false]),
            (filter(Topic, Some("*"), Match), [false, true, false, false, false]),
            (filter(Topic, Some("*"), Literal), [false, true, false, false, false]),
            (filter(Topic, None, Match), [true, true, true, true, false]),
            (filter(Topic, None, Prefixed), [false, false, true, true, false]),
        ];
        let bindings = [&literal, &wildcard, &prefixed, &other_prefix, &group];
        for (index, (filter, expected)) in cases.iter().enumerate() {
            let actual = bindings.map(|binding| filter.matches(binding));
            assert_eq!(actual, *expected, "case {index}: {filter:?}");
        }
    }

    #[test]
    fn entry_filters_match_as_kafka() {
        let acl = binding(ResourceType::Topic, "orders", PatternType::Literal);
        let cases = [
            (AclBindingFilter { principal: Some("User:alice".to_owned()), ..AclBindingFilter::any() }, true),
            (AclBindingFilter { principal: Some("User:bob".to_owned()), ..AclBindingFilter::any() }, false),
            // A filter's User:* is a literal string: it finds only wildcard ACLs.
            (AclBindingFilter { principal: Some("User:*".to_owned()), ..AclBindingFilter::any() }, false),
            (AclBindingFilter { host: Some("*".to_owned()), ..AclBindingFilter::any() }, true),
            (AclBindingFilter { host: Some("10.0.0.1".to_owned()), ..AclBindingFilter::any() }, false),
            (AclBindingFilter { operation: AclOperation::Read, ..AclBindingFilter::any() }, true),
            (AclBindingFilter { operation: AclOperation::All, ..AclBindingFilter::any() }, false),
            (AclBindingFilter { permission: AclPermissionType::Allow, ..AclBindingFilter::any() }, true),
            (AclBindingFilter { permission: AclPermissionType::Deny, ..AclBindingFilter::any() }, false),
        ];
        for (index, (filter, expected)) in cases.iter().enumerate() {
            assert_eq!(filter.matches(&acl), *expected, "case {index}");
        }
    }

    #[test]
    fn filters_with_unknown_fields_are_refused() {
        assert_eq!(AclBindingFilter::any().validate(), Ok(()));
        let unknown_pattern = AclBindingFilter { pattern_type: PatternType::Unknown, ..AclBindingFilter::any() };
        assert_eq!(unknown_pattern.validate().unwrap_err().message, "Unknown patternFilter.");
        let unknown_resource = AclBindingFilter { resource_type: ResourceType::Unknown, ..AclBindingFilter::any() };
        assert_eq!(unknown_resource.validate().unwrap_err().code, ErrorCode::InvalidRequest);
        let unknown_operation = AclBindingFilter { operation: AclOperation::Unknown, ..AclBindingFilter::any() };
        assert_eq!(unknown_operation.validate().unwrap_err().message, "Unknown entryFilter.");
        let unknown_permission = AclBindingFilter { permission: AclPermissionType::Unknown, ..AclBindingFilter::any() };
        assert_eq!(unknown_permission.validate().unwrap_err().message, "Unknown entryFilter.");
    }

    #[test]
    fn serde_round_trip() {
        let acl = binding(ResourceType::Group, "consumers-", PatternType::Prefixed);
        let encoded = serde_json::to_string(&acl).unwrap();
        assert_eq!(serde_json::from_str::<AclBinding>(&encoded).unwrap(), acl);
    }

    #[test]
    fn prints_as_kafka() {
        let acl = binding(ResourceType::TransactionalId, "tx", PatternType::Prefixed);
        assert_eq!(
            acl.to_string(),
            "(pattern=ResourcePattern(resourceType=TRANSACTIONAL_ID, name=tx, patternType=PREFIXED), \
             entry=(principal=User:alice, host=*, operation=READ, permissionType=ALLOW))"
        );
    }
}
