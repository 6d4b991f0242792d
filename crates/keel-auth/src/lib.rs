//! keel's security decisions: who a connection is and what it may do.
//!
//! It owns Kafka principals ([`KafkaPrincipal`], `User:alice`), the server side of SASL/SCRAM
//! ([`ScramServer`], RFC 5802 and RFC 7677, as Kafka's `ScramSaslServer`), the stored SCRAM
//! credentials that AlterUserScramCredentials writes to the metadata log
//! ([`ScramCredential`]), SASL/PLAIN checked against those same credentials
//! ([`PlainResponse`]), ACL bindings and filters with Kafka's protocol values and matching
//! rules ([`AclBinding`], [`AclBindingFilter`]), and the authorization decision with the
//! semantics of Kafka's `StandardAuthorizer` ([`Authorizer`]).
//!
//! It is pure: it never does IO, reads a clock, spawns threads, draws randomness or logs.
//! Anything random (the server nonce, salts, the secret behind fake credentials) is passed in
//! by the caller, and collections are ordered (`BTreeMap`), so the same inputs give the same
//! answers everywhere: in the broker, in keel-sim and in tests. The broker wires it to
//! SaslHandshake, SaslAuthenticate, the ACL and SCRAM admin requests, and every request's
//! authorization check; the controller stores its credentials and bindings in the metadata
//! log. Protocol outcomes are values (`Refusal`s with Kafka's error codes), never panics.

mod acl;
mod authorizer;
mod credential;
mod mechanism;
mod plain;
mod principal;
mod scram;

pub use acl::{
    AclBinding, AclBindingFilter, AclOperation, AclPermissionType, PatternType, ResourceType, CLUSTER_NAME,
    WILDCARD_HOST, WILDCARD_RESOURCE,
};
pub use authorizer::{acl_host, AclSet, Authorizer};
pub use credential::{validate_scram_username, ScramCredential};
pub use mechanism::ScramMechanism;
pub use plain::{preferred_credential, PlainError, PlainResponse, PLAIN_MESSAGE_BYTES_MAX};
pub use principal::{KafkaPrincipal, PrincipalError};
pub use scram::{encode_saslname, ScramError, ScramServer, ScramSuccess, CLIENT_MESSAGE_BYTES_MAX};
