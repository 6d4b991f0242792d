//! SASL/PLAIN (RFC 4616) checked against the stored SCRAM credentials, so a cluster keeps one
//! credential store for both mechanisms. (Kafka's own PLAIN server checks passwords from a
//! static JAAS file instead.)

use std::fmt;

use keel_types::{ErrorCode, Refusal};
use subtle::ConstantTimeEq as _;

use crate::{ScramCredential, ScramMechanism};

/// The largest PLAIN message accepted, bounding what a client can make the server scan.
pub const PLAIN_MESSAGE_BYTES_MAX: usize = 8192;

/// Why a PLAIN authentication failed. Kafka sends these messages to the client as they are
/// (its `PlainSaslServer` raises `SaslAuthenticationException`), and so does keel: none tells a
/// wrong password from an unknown user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlainError {
    #[error("Invalid SASL/PLAIN response: expected 3 tokens, got {tokens}")]
    WrongTokenCount { tokens: usize },
    #[error("Invalid SASL/PLAIN response: {bytes} bytes is more than the {PLAIN_MESSAGE_BYTES_MAX} accepted")]
    TooLarge { bytes: usize },
    #[error("Invalid SASL/PLAIN response: not UTF-8")]
    NotUtf8,
    #[error("Authentication failed: username not specified")]
    UsernameMissing,
    #[error("Authentication failed: password not specified")]
    PasswordMissing,
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthorizationIdMismatch,
    #[error("Authentication failed: Invalid username or password")]
    InvalidCredentials,
}

impl PlainError {
    /// The SaslAuthenticate answer: SASL_AUTHENTICATION_FAILED with this message.
    pub fn refusal(&self) -> Refusal {
        Refusal::new(ErrorCode::SaslAuthenticationFailed, self.to_string())
    }
}

/// A parsed PLAIN message: `[authzid] NUL authcid NUL passwd`. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainResponse {
    username: String,
    password: String,
}

impl PlainResponse {
    /// Parses the client's single PLAIN message. As Kafka, it refuses a message that is not
    /// exactly three NUL-separated tokens, an empty user name or password, and an
    /// authorization id other than the user name.
    pub fn parse(message: &[u8]) -> Result<PlainResponse, PlainError> {
        if message.len() > PLAIN_MESSAGE_BYTES_MAX {
            return Err(PlainError::TooLarge { bytes: message.len() });
        }
        let text = std::str::from_utf8(message).map_err(|_| PlainError::NotUtf8)?;
        // Kafka stops counting at four tokens, so its message never says more.
        let tokens: Vec<&str> = text.split('\0').take(4).collect();
        let [authzid, username, password] = tokens[..] else {
            return Err(PlainError::WrongTokenCount { tokens: tokens.len() });
        };
        if username.is_empty() {
            return Err(PlainError::UsernameMissing);
        }
        if password.is_empty() {
            return Err(PlainError::PasswordMissing);
        }
        if !authzid.is_empty() && authzid != username {
            return Err(PlainError::AuthorizationIdMismatch);
        }
        Ok(PlainResponse { username: username.to_owned(), password: password.to_owned() })
    }

    /// The user name to look the credential up by; the principal is `User:<username>`.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// Checks the password against a stored SCRAM credential: it derives the salted password
    /// with the credential's salt and iterations and compares the resulting StoredKey in
    /// constant time.
    ///
    /// The caller passes [`ScramCredential::fake_for`] the user when there is no credential,
    /// so an unknown user costs the same PBKDF2 work as a known one and fails the same way.
    /// When a user has both mechanisms, pick with [`preferred_credential`].
    pub fn verify(&self, credential: &ScramCredential) -> Result<(), PlainError> {
        let mechanism = credential.mechanism;
        let salted_password =
            mechanism.salted_password(self.password.as_bytes(), &credential.salt, credential.iterations);
        let stored_key = mechanism.stored_key(&salted_password);
        if bool::from(stored_key.ct_eq(&credential.stored_key)) {
            Ok(())
        } else {
            Err(PlainError::InvalidCredentials)
        }
    }
}

/// Which of a user's credentials PLAIN checks against: SCRAM-SHA-512 when the user has one,
/// else SCRAM-SHA-256. Either proves the password equally; SHA-512 is chosen so the answer
/// does not depend on the order the credentials are listed in, and because it is the
/// stronger hash should one mechanism's credential ever be the weaker secret.
pub fn preferred_credential(credentials: &[ScramCredential]) -> Option<&ScramCredential> {
    let of = |mechanism: ScramMechanism| credentials.iter().find(|credential| credential.mechanism == mechanism);
    of(ScramMechanism::Sha512).or_else(|| of(ScramMechanism::Sha256))
}

impl fmt::Debug for PlainResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainResponse").field("username", &self.username).field("password", &"[hidden]").finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(mechanism: ScramMechanism, password: &str) -> ScramCredential {
        ScramCredential::from_password(mechanism, password, b"pepper".to_vec(), 4096).unwrap()
    }

    #[test]
    fn parses_rfc_4616_messages() {
        let response = PlainResponse::parse(b"\0alice\0secret").unwrap();
        assert_eq!(response.username(), "alice");
        let with_authzid = PlainResponse::parse(b"alice\0alice\0secret").unwrap();
        assert_eq!(with_authzid, response);
        assert!(!format!("{response:?}").contains("secret"));
    }

    #[test]
    fn refuses_malformed_messages_as_kafka() {
        let too_large = vec![b'a'; PLAIN_MESSAGE_BYTES_MAX + 1];
        let cases: [(&[u8], PlainError); 10] = [
            (b"", PlainError::WrongTokenCount { tokens: 1 }),
            (b"alice\0secret", PlainError::WrongTokenCount { tokens: 2 }),
            (b"\0alice\0secret\0", PlainError::WrongTokenCount { tokens: 4 }),
            (b"\0\0secret", PlainError::UsernameMissing),
            (b"\0alice\0", PlainError::PasswordMissing),
            (b"admin\0alice\0secret", PlainError::AuthorizationIdMismatch),
            (b"\0al\xffice\0secret", PlainError::NotUtf8),
            (&too_large, PlainError::TooLarge { bytes: PLAIN_MESSAGE_BYTES_MAX + 1 }),
            (b"\0\0", PlainError::UsernameMissing),
            (b"a\0b\0c\0d\0e\0f", PlainError::WrongTokenCount { tokens: 4 }),
        ];
        for (message, expected) in cases {
            let error = PlainResponse::parse(message).unwrap_err();
            assert_eq!(error, expected, "{:?}", String::from_utf8_lossy(message));
            assert_eq!(error.refusal().code, ErrorCode::SaslAuthenticationFailed);
        }
        assert_eq!(
            PlainError::WrongTokenCount { tokens: 2 }.to_string(),
            "Invalid SASL/PLAIN response: expected 3 tokens, got 2"
        );
    }

    #[test]
    fn verifies_against_either_scram_mechanism() {
        let response = PlainResponse::parse(b"\0alice\0secret").unwrap();
        for mechanism in ScramMechanism::ALL {
            assert_eq!(response.verify(&credential(mechanism, "secret")), Ok(()));
            assert_eq!(response.verify(&credential(mechanism, "Secret")), Err(PlainError::InvalidCredentials));
            let fake = ScramCredential::fake_for("alice", mechanism, b"cluster secret");
            assert_eq!(response.verify(&fake), Err(PlainError::InvalidCredentials));
        }
        assert_eq!(
            PlainError::InvalidCredentials.refusal().message,
            "Authentication failed: Invalid username or password"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any bytes from a client give an answer, never a panic; a message that parses
            /// names a non-empty user.
            #[test]
            fn arbitrary_messages_never_panic(message in proptest::collection::vec(
                prop_oneof![Just(0u8), Just(b'a'), any::<u8>()], 0..32)) {
                if let Ok(response) = PlainResponse::parse(&message) {
                    prop_assert!(!response.username().is_empty());
                }
            }
        }
    }

    #[test]
    fn prefers_sha_512() {
        let sha256 = credential(ScramMechanism::Sha256, "a");
        let sha512 = credential(ScramMechanism::Sha512, "b");
        let both = [sha256.clone(), sha512.clone()];
        assert_eq!(preferred_credential(&both), Some(&sha512));
        assert_eq!(preferred_credential(&[sha512.clone(), sha256.clone()]), Some(&sha512));
        assert_eq!(preferred_credential(std::slice::from_ref(&sha256)), Some(&sha256));
        assert_eq!(preferred_credential(&[]), None);
    }
}
