//! Kafka principals: who a connection is, in Kafka's `Type:name` form.

use std::fmt;

/// An authenticated identity, as Kafka's `KafkaPrincipal`: a type (`User` for every principal
/// SASL produces) and a name. It prints and parses as `"User:alice"`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct KafkaPrincipal {
    pub principal_type: String,
    pub name: String,
}

/// A principal string without the `:` that separates the type from the name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a string in format principalType:principalName but got {input:?}")]
pub struct PrincipalError {
    pub input: String,
}

impl KafkaPrincipal {
    /// The principal type of every SASL-authenticated identity (Kafka's `USER_TYPE`).
    pub const USER_TYPE: &'static str = "User";
    /// The name that, with type `User`, matches every principal in an ACL.
    pub const WILDCARD_NAME: &'static str = "*";
    /// The name of the principal an unauthenticated (PLAINTEXT) connection gets.
    pub const ANONYMOUS_NAME: &'static str = "ANONYMOUS";

    pub fn new(principal_type: impl Into<String>, name: impl Into<String>) -> KafkaPrincipal {
        KafkaPrincipal { principal_type: principal_type.into(), name: name.into() }
    }

    /// `User:<name>`, the principal a SASL exchange for `name` produces.
    pub fn user(name: impl Into<String>) -> KafkaPrincipal {
        KafkaPrincipal::new(KafkaPrincipal::USER_TYPE, name)
    }

    /// `User:ANONYMOUS`, Kafka's principal for connections that did not authenticate.
    pub fn anonymous() -> KafkaPrincipal {
        KafkaPrincipal::user(KafkaPrincipal::ANONYMOUS_NAME)
    }

    /// `User:*`, the ACL principal that matches every principal.
    pub fn wildcard() -> KafkaPrincipal {
        KafkaPrincipal::user(KafkaPrincipal::WILDCARD_NAME)
    }

    /// Parses `Type:name`, splitting at the first `:` as Kafka's
    /// `SecurityUtils.parseKafkaPrincipal` does; the name may itself contain `:`.
    pub fn parse(input: &str) -> Result<KafkaPrincipal, PrincipalError> {
        match input.split_once(':') {
            Some((principal_type, name)) => Ok(KafkaPrincipal::new(principal_type, name)),
            None => Err(PrincipalError { input: input.to_owned() }),
        }
    }

    pub fn is_wildcard(&self) -> bool {
        self.principal_type == KafkaPrincipal::USER_TYPE && self.name == KafkaPrincipal::WILDCARD_NAME
    }
}

impl fmt::Display for KafkaPrincipal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.principal_type, self.name)
    }
}

impl std::str::FromStr for KafkaPrincipal {
    type Err = PrincipalError;

    fn from_str(input: &str) -> Result<KafkaPrincipal, PrincipalError> {
        KafkaPrincipal::parse(input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kafka_form() {
        let cases = [
            ("User:alice", "User", "alice"),
            ("User:*", "User", "*"),
            ("User:ANONYMOUS", "User", "ANONYMOUS"),
            ("Group:a:b", "Group", "a:b"),
            ("User:", "User", ""),
        ];
        for (input, principal_type, name) in cases {
            let principal = KafkaPrincipal::parse(input).unwrap();
            assert_eq!(principal, KafkaPrincipal::new(principal_type, name), "{input}");
            assert_eq!(principal.to_string(), input);
        }
    }

    #[test]
    fn refuses_strings_without_a_type() {
        for input in ["", "alice", "User-alice"] {
            let error = KafkaPrincipal::parse(input).unwrap_err();
            assert_eq!(error.input, input);
            assert!(error.to_string().contains("principalType:principalName"));
        }
    }

    #[test]
    fn well_known_principals() {
        assert_eq!(KafkaPrincipal::anonymous().to_string(), "User:ANONYMOUS");
        assert_eq!(KafkaPrincipal::wildcard().to_string(), "User:*");
        assert!(KafkaPrincipal::wildcard().is_wildcard());
        assert!(!KafkaPrincipal::new("Group", "*").is_wildcard());
        assert!(!KafkaPrincipal::user("alice").is_wildcard());
    }
}
