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
//!
//! Where it differs from Kafka, on purpose:
//!
//! - SCRAM refuses `tokenauth=true` (keel has no delegation tokens) and a mandatory
//!   extension `m=` (RFC 5802 requires it; Kafka ignores it), accepts the gs2 flag `y`
//!   (RFC 5802 allows it when no `-PLUS` mechanism is offered; Kafka refuses it), and checks
//!   that `c=` encodes the client's gs2 header (Kafka relies on the proof covering it).
//! - An unknown user gets a server-first-message from [`ScramCredential::fake_for`] and fails
//!   at the proof, where Kafka fails at once; client messages are bounded at 8 KiB.
//! - Refusals of unsupported features tell the client what happened; credential failures get
//!   Kafka's one generic message.
//! - SASL/PLAIN checks the stored SCRAM credentials (Kafka's checks a JAAS file), preferring
//!   SCRAM-SHA-512 ([`preferred_credential`]).
//! - A credential with an empty salt is refused; CreateAcls refuses a principal that does not
//!   parse with INVALID_REQUEST (Kafka's controller fails later, with a less helpful error).

mod acl;
mod authorizer;
mod credential;
mod mechanism;
mod plain;
mod principal;
mod sasl;
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
pub use sasl::{SaslContext, SaslMechanism, SaslSession, SaslStep};
pub use scram::{encode_saslname, ScramError, ScramServer, ScramSuccess, CLIENT_MESSAGE_BYTES_MAX};
