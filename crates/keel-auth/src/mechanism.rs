//! The SCRAM mechanisms Kafka offers and the hash functions behind them (RFC 5802 section 2.2).

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

/// A SASL/SCRAM mechanism, as Kafka's `ScramMechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub enum ScramMechanism {
    Sha256,
    Sha512,
}

impl ScramMechanism {
    pub const ALL: [ScramMechanism; 2] = [ScramMechanism::Sha256, ScramMechanism::Sha512];

    /// The fewest iterations Kafka accepts for a credential of either mechanism, both when a
    /// credential is stored and when it is used.
    pub const ITERATIONS_MIN: u32 = 4096;

    /// The most iterations Kafka's controller accepts in AlterUserScramCredentials.
    pub const ITERATIONS_MAX: u32 = 16384;

    /// The SASL mechanism name (`SCRAM-SHA-256`), as in SaslHandshake and the client config.
    pub fn name(self) -> &'static str {
        match self {
            ScramMechanism::Sha256 => "SCRAM-SHA-256",
            ScramMechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism for a SASL mechanism name; names are case-sensitive, as in Kafka.
    pub fn from_name(name: &str) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|mechanism| mechanism.name() == name)
    }

    /// The mechanism type in DescribeUserScramCredentials and AlterUserScramCredentials
    /// (Kafka's admin `ScramMechanism.type()`; 0 is UNKNOWN there).
    pub fn type_id(self) -> i8 {
        match self {
            ScramMechanism::Sha256 => 1,
            ScramMechanism::Sha512 => 2,
        }
    }

    /// The mechanism for a wire type id; `None` for Kafka's UNKNOWN (0) and unassigned ids.
    pub fn from_type_id(type_id: i8) -> Option<ScramMechanism> {
        ScramMechanism::ALL.into_iter().find(|mechanism| mechanism.type_id() == type_id)
    }

    /// The length of the hash's output, and so of keys, signatures and proofs.
    pub fn hash_len(self) -> usize {
        match self {
            ScramMechanism::Sha256 => 32,
            ScramMechanism::Sha512 => 64,
        }
    }

    /// RFC 5802's `H(data)`.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => Sha256::digest(data).to_vec(),
            ScramMechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's `HMAC(key, data)`.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            ScramMechanism::Sha256 => {
                let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
            ScramMechanism::Sha512 => {
                let mut mac = Hmac::<Sha512>::new_from_slice(key).expect("HMAC accepts keys of any length");
                mac.update(data);
                mac.finalize().into_bytes().to_vec()
            }
        }
    }

    /// RFC 5802's `SaltedPassword := Hi(Normalize(password), salt, i)`, which is PBKDF2 with
    /// this mechanism's HMAC. Like Kafka, keel does not apply SASLprep: the password's UTF-8
    /// bytes are used as they are.
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        assert!(iterations > 0, "PBKDF2 needs at least one iteration");
        let mut salted = vec![0; self.hash_len()];
        match self {
            ScramMechanism::Sha256 => pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut salted),
            ScramMechanism::Sha512 => pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut salted),
        }
        salted
    }

    /// `ClientKey := HMAC(SaltedPassword, "Client Key")`.
    pub(crate) fn client_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Client Key")
    }

    /// `ServerKey := HMAC(SaltedPassword, "Server Key")`.
    pub(crate) fn server_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hmac(salted_password, b"Server Key")
    }

    /// `StoredKey := H(ClientKey)`.
    pub(crate) fn stored_key(self, salted_password: &[u8]) -> Vec<u8> {
        self.hash(&self.client_key(salted_password))
    }
}

impl fmt::Display for ScramMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_type_ids_match_kafka() {
        let cases =
            [(ScramMechanism::Sha256, "SCRAM-SHA-256", 1, 32), (ScramMechanism::Sha512, "SCRAM-SHA-512", 2, 64)];
        for (mechanism, name, type_id, hash_len) in cases {
            assert_eq!(mechanism.name(), name);
            assert_eq!(mechanism.to_string(), name);
            assert_eq!(ScramMechanism::from_name(name), Some(mechanism));
            assert_eq!(mechanism.type_id(), type_id);
            assert_eq!(ScramMechanism::from_type_id(type_id), Some(mechanism));
            assert_eq!(mechanism.hash_len(), hash_len);
            assert_eq!(mechanism.hash(b"").len(), hash_len);
            assert_eq!(mechanism.hmac(b"key", b"data").len(), hash_len);
        }
        assert_eq!(ScramMechanism::from_type_id(0), None);
        assert_eq!(ScramMechanism::from_type_id(3), None);
        assert_eq!(ScramMechanism::from_name("scram-sha-256"), None);
        assert_eq!(ScramMechanism::from_name("PLAIN"), None);
    }

    #[test]
    fn hash_and_hmac_match_known_answers() {
        // FIPS 180-2 "abc" and RFC 4231 test case 2.
        let hex = |bytes: Vec<u8>| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(
            hex(ScramMechanism::Sha256.hash(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(ScramMechanism::Sha256.hmac(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
