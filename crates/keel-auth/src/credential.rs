//! Stored SCRAM credentials: what the metadata log keeps for a user instead of a password.

use std::fmt;

use keel_types::{ErrorCode, Refusal};

use crate::ScramMechanism;

/// One user's SCRAM credential for one mechanism, as Kafka's `UserScramCredentialRecord`:
/// the salt and iteration count the client needs, and the two keys the server needs to
/// verify a proof and sign its answer. The password itself is never kept.
///
/// `Debug` hides the salt and keys, as Kafka's `ScramCredentialValue.toString` does.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ScramCredential {
    pub mechanism: ScramMechanism,
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

impl ScramCredential {
    /// The credential for `password`, with a salt the caller drew. Refused with
    /// UNACCEPTABLE_CREDENTIAL when the iterations are out of Kafka's range or the salt is empty.
    pub fn from_password(
        mechanism: ScramMechanism,
        password: &str,
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<ScramCredential, Refusal> {
        validate_salt_and_iterations(&salt, iterations)?;
        let salted_password = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        ScramCredential::from_salted_password(mechanism, &salted_password, salt, iterations)
    }

    /// The credential for a salted password, as an AlterUserScramCredentials upsertion
    /// carries it (the client salts and hashes; the password never reaches the broker).
    /// Refused as [`ScramCredential::from_password`] is.
    pub fn from_salted_password(
        mechanism: ScramMechanism,
        salted_password: &[u8],
        salt: Vec<u8>,
        iterations: u32,
    ) -> Result<ScramCredential, Refusal> {
        validate_salt_and_iterations(&salt, iterations)?;
        Ok(ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key: mechanism.stored_key(salted_password),
            server_key: mechanism.server_key(salted_password),
        })
    }

    /// A credential to run the exchange with when `username` has none, so that the
    /// server-first-message does not tell an unknown user from a known one: the salt is an
    /// HMAC of the username under `secret` (stable across attempts and restarts, as a real
    /// salt is), and the exchange then fails at the proof. `secret` is a server-side secret
    /// the caller keeps (for example drawn once at cluster creation); without it an attacker
    /// could compute the fake salt and tell the two apart.
    ///
    /// The keys are HMACs under the same secret, so no client can produce a matching proof
    /// without inverting the hash. The iteration count is [`ScramMechanism::ITERATIONS_MIN`],
    /// the count Kafka's tools use by default; a cluster whose real credentials use another
    /// count leaks that difference, which Kafka's own fake-credential-free server leaks more
    /// plainly by refusing at once.
    pub fn fake_for(username: &str, mechanism: ScramMechanism, secret: &[u8]) -> ScramCredential {
        let derive = |purpose: &str, len: usize| -> Vec<u8> {
            let mut input = Vec::with_capacity(purpose.len() + username.len() + 32);
            input.extend_from_slice(b"keel fake SCRAM credential\0");
            input.extend_from_slice(mechanism.name().as_bytes());
            input.push(0);
            input.extend_from_slice(purpose.as_bytes());
            input.push(0);
            input.extend_from_slice(username.as_bytes());
            let mut derived = ScramMechanism::Sha512.hmac(secret, &input);
            derived.truncate(len);
            derived
        };
        ScramCredential {
            mechanism,
            salt: derive("salt", FAKE_SALT_BYTES),
            iterations: ScramMechanism::ITERATIONS_MIN,
            stored_key: derive("stored key", mechanism.hash_len()),
            server_key: derive("server key", mechanism.hash_len()),
        }
    }
}

/// The length of a fake credential's salt: 32 bytes, as many clients draw for real ones.
const FAKE_SALT_BYTES: usize = 32;

/// Kafka's checks on an upserted credential (`ScramControlManager.validateUpsertion`), plus a
/// non-empty salt, which RFC 5802 requires and Kafka does not check.
fn validate_salt_and_iterations(salt: &[u8], iterations: u32) -> Result<(), Refusal> {
    if iterations < ScramMechanism::ITERATIONS_MIN {
        return Err(Refusal::new(ErrorCode::UnacceptableCredential, "Too few iterations"));
    }
    if iterations > ScramMechanism::ITERATIONS_MAX {
        return Err(Refusal::new(ErrorCode::UnacceptableCredential, "Too many iterations"));
    }
    if salt.is_empty() {
        return Err(Refusal::new(ErrorCode::UnacceptableCredential, "Salt must not be empty"));
    }
    Ok(())
}

/// Kafka's check on the user name of an AlterUserScramCredentials upsertion or deletion.
pub fn validate_scram_username(username: &str) -> Result<(), Refusal> {
    if username.is_empty() {
        return Err(Refusal::new(ErrorCode::UnacceptableCredential, "Username must not be empty"));
    }
    Ok(())
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("mechanism", &self.mechanism)
            .field("salt", &"[hidden]")
            .field("iterations", &self.iterations)
            .field("stored_key", &"[hidden]")
            .field("server_key", &"[hidden]")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterations_outside_kafkas_range_are_refused() {
        let cases = [
            (4095, Some("Too few iterations")),
            (4096, None),
            (16384, None),
            (16385, Some("Too many iterations")),
            (0, Some("Too few iterations")),
        ];
        for (iterations, refusal) in cases {
            let result =
                ScramCredential::from_salted_password(ScramMechanism::Sha256, b"salted", b"salt".to_vec(), iterations);
            match refusal {
                None => assert_eq!(result.unwrap().iterations, iterations),
                Some(message) => {
                    assert_eq!(result.unwrap_err(), Refusal::new(ErrorCode::UnacceptableCredential, message));
                }
            }
        }
        let empty_salt = ScramCredential::from_password(ScramMechanism::Sha256, "pw", Vec::new(), 4096);
        assert_eq!(empty_salt.unwrap_err().code, ErrorCode::UnacceptableCredential);
        assert_eq!(validate_scram_username("").unwrap_err().code, ErrorCode::UnacceptableCredential);
        assert!(validate_scram_username("alice").is_ok());
    }

    #[test]
    fn from_password_equals_from_salted_password() {
        for mechanism in ScramMechanism::ALL {
            let salt = b"0123456789abcdef".to_vec();
            let salted = mechanism.salted_password(b"secret", &salt, 4096);
            let direct = ScramCredential::from_password(mechanism, "secret", salt.clone(), 4096).unwrap();
            let upserted = ScramCredential::from_salted_password(mechanism, &salted, salt, 4096).unwrap();
            assert_eq!(direct, upserted);
            assert_eq!(direct.stored_key.len(), mechanism.hash_len());
            assert_eq!(direct.server_key.len(), mechanism.hash_len());
            assert_ne!(direct.stored_key, direct.server_key);
        }
    }

    #[test]
    fn fake_credentials_are_deterministic_per_user_mechanism_and_secret() {
        let fake = |user: &str, mechanism, secret: &[u8]| ScramCredential::fake_for(user, mechanism, secret);
        let alice = fake("alice", ScramMechanism::Sha256, b"secret");
        assert_eq!(alice, fake("alice", ScramMechanism::Sha256, b"secret"));
        assert_ne!(alice.salt, fake("bob", ScramMechanism::Sha256, b"secret").salt);
        assert_ne!(alice.salt, fake("alice", ScramMechanism::Sha512, b"secret").salt);
        assert_ne!(alice.salt, fake("alice", ScramMechanism::Sha256, b"other").salt);
        assert_eq!(alice.salt.len(), FAKE_SALT_BYTES);
        assert_eq!(alice.iterations, ScramMechanism::ITERATIONS_MIN);
        assert_eq!(fake("alice", ScramMechanism::Sha512, b"secret").stored_key.len(), 64);
    }

    #[test]
    fn debug_hides_secrets() {
        let credential = ScramCredential::from_password(ScramMechanism::Sha256, "pw", vec![0xAB; 16], 4096).unwrap();
        let printed = format!("{credential:?}");
        assert!(printed.contains("[hidden]"));
        assert!(!printed.contains("171"), "salt bytes leaked: {printed}");
    }

    #[test]
    fn serde_round_trip() {
        let credential = ScramCredential::from_password(ScramMechanism::Sha512, "pw", vec![1, 2, 3], 8192).unwrap();
        let encoded = serde_json::to_string(&credential).unwrap();
        let decoded: ScramCredential = serde_json::from_str(&encoded).unwrap();
        assert_eq!(decoded, credential);
    }
}
