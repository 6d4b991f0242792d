//! One connection's SASL exchange, as Kafka's `SaslServerAuthenticator` runs it on a
//! `SASL_PLAINTEXT` or `SASL_SSL` listener: ApiVersions may come first; then SaslHandshake
//! (v1) names a mechanism; then SaslAuthenticate carries the mechanism's messages until the
//! client is authenticated or refused. Nothing else is served before that, and a refused
//! connection is closed after the answer.

use keel_types::{ErrorCode, Refusal};

use crate::{preferred_credential, KafkaPrincipal, PlainResponse, ScramCredential, ScramMechanism, ScramServer};

/// Kafka's API keys of the requests a connection may send before it is authenticated.
const API_VERSIONS: i16 = 18;
const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;

/// A SASL mechanism keel serves, by Kafka's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SaslMechanism {
    Plain,
    Scram(ScramMechanism),
}

impl SaslMechanism {
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(scram) => scram.name(),
        }
    }

    pub fn from_name(name: &str) -> Option<SaslMechanism> {
        match name {
            "PLAIN" => Some(SaslMechanism::Plain),
            other => ScramMechanism::from_name(other).map(SaslMechanism::Scram),
        }
    }
}

impl std::fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the caller provides for one SaslAuthenticate: a user's stored credentials, a fresh
/// server nonce (SCRAM), and the secret behind fake credentials for unknown users.
pub trait SaslContext {
    /// Every SCRAM credential `user` has (any mechanism).
    fn credentials(&self, user: &str) -> Vec<ScramCredential>;
    /// A fresh random nonce: at least 16 characters of printable ASCII without `,` (RFC 5802).
    fn server_nonce(&mut self) -> String;
    /// The secret [`ScramCredential::fake_for`] derives fake credentials from.
    fn fake_credential_secret(&self) -> Vec<u8>;
}

/// The answer to one SaslAuthenticate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SaslStep {
    /// Send these bytes; the exchange goes on.
    Challenge(Vec<u8>),
    /// Send these bytes (possibly none); the connection is `principal` from now on.
    Authenticated { principal: KafkaPrincipal, bytes: Vec<u8> },
    /// Answer with this refusal, then close the connection.
    Refused(Refusal),
}

#[derive(Debug)]
enum State {
    AwaitingHandshake,
    Handshaken(SaslMechanism),
    Scram(Box<ScramServer>),
    Authenticated(KafkaPrincipal),
    Refused,
}

/// One connection's place in the exchange.
#[derive(Debug)]
pub struct SaslSession {
    enabled: Vec<SaslMechanism>,
    state: State,
    /// Why the exchange failed, in detail, for the server's log (the client gets Kafka's
    /// generic message).
    failure: Option<String>,
}

impl SaslSession {
    /// A connection on a listener that offers `enabled` (in the order SaslHandshake lists
    /// them).
    pub fn new(enabled: Vec<SaslMechanism>) -> SaslSession {
        SaslSession { enabled, state: State::AwaitingHandshake, failure: None }
    }

    /// The mechanisms a SaslHandshake answer lists.
    pub fn enabled_names(&self) -> Vec<&'static str> {
        self.enabled.iter().map(|m| m.name()).collect()
    }

    /// Why the exchange failed, in more detail than the client is told: for the log.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Who the connection is, once authenticated.
    pub fn principal(&self) -> Option<&KafkaPrincipal> {
        match &self.state {
            State::Authenticated(principal) => Some(principal),
            _ => None,
        }
    }

    /// Whether a request with Kafka API key `api_key` may be served now. Before
    /// authentication only ApiVersions and the two SASL requests may; Kafka closes the
    /// connection on anything else, and so should the caller. After it every request may (a
    /// SASL request then gets ILLEGAL_SASL_STATE from the request handlers, as in Kafka).
    pub fn allows(&self, api_key: i16) -> bool {
        match self.state {
            State::Authenticated(_) => true,
            State::Refused => false,
            _ => matches!(api_key, API_VERSIONS | SASL_HANDSHAKE | SASL_AUTHENTICATE),
        }
    }

    /// SaslHandshake: the client names its mechanism. Refused with UNSUPPORTED_SASL_MECHANISM
    /// when this listener does not offer it (the answer lists what it does offer), or
    /// ILLEGAL_SASL_STATE when a handshake already happened.
    pub fn handshake(&mut self, mechanism: &str) -> Result<(), Refusal> {
        if !matches!(self.state, State::AwaitingHandshake) {
            self.state = State::Refused;
            return Err(Refusal::new(ErrorCode::IllegalSaslState, "Unexpected SaslHandshake request"));
        }
        match SaslMechanism::from_name(mechanism).filter(|m| self.enabled.contains(m)) {
            Some(chosen) => {
                self.state = State::Handshaken(chosen);
                Ok(())
            }
            None => Err(Refusal::new(
                ErrorCode::UnsupportedSaslMechanism,
                format!("Unsupported SASL mechanism {mechanism}"),
            )),
        }
    }

    /// SaslAuthenticate: one message of the chosen mechanism.
    pub fn authenticate(&mut self, bytes: &[u8], context: &mut impl SaslContext) -> SaslStep {
        let state = std::mem::replace(&mut self.state, State::Refused);
        let step = match state {
            State::Handshaken(SaslMechanism::Plain) => match plain(bytes, context) {
                Ok(principal) => SaslStep::Authenticated { principal, bytes: Vec::new() },
                Err(error) => {
                    self.failure = Some(error.to_string());
                    SaslStep::Refused(error.refusal())
                }
            },
            State::Handshaken(SaslMechanism::Scram(mechanism)) => {
                let mut server = Box::new(ScramServer::new(mechanism, context.server_nonce()));
                match scram_first(&mut server, mechanism, bytes, context) {
                    Ok(challenge) => {
                        self.state = State::Scram(server);
                        return SaslStep::Challenge(challenge);
                    }
                    Err(error) => {
                        self.failure = Some(error.to_string());
                        SaslStep::Refused(error.refusal(mechanism))
                    }
                }
            }
            State::Scram(mut server) => match server.handle_client_final(bytes) {
                Ok(success) => SaslStep::Authenticated {
                    principal: KafkaPrincipal::user(success.username),
                    bytes: success.server_final,
                },
                Err(error) => {
                    self.failure = Some(error.to_string());
                    SaslStep::Refused(error.refusal(server.mechanism()))
                }
            },
            State::AwaitingHandshake | State::Authenticated(_) | State::Refused => SaslStep::Refused(Refusal::new(
                ErrorCode::IllegalSaslState,
                "Unexpected SaslAuthenticate request: no SASL handshake is in progress",
            )),
        };
        if let SaslStep::Authenticated { principal, .. } = &step {
            self.state = State::Authenticated(principal.clone());
        }
        step
    }
}

fn plain(bytes: &[u8], context: &impl SaslContext) -> Result<KafkaPrincipal, crate::PlainError> {
    let response = PlainResponse::parse(bytes)?;
    let credentials = context.credentials(response.username());
    let credential = preferred_credential(&credentials).ok_or(crate::PlainError::InvalidCredentials)?;
    response.verify(credential)?;
    Ok(KafkaPrincipal::user(response.username()))
}

fn scram_first(
    server: &mut ScramServer,
    mechanism: ScramMechanism,
    bytes: &[u8],
    context: &impl SaslContext,
) -> Result<Vec<u8>, crate::ScramError> {
    let user = server.handle_client_first(bytes)?;
    let credential = context
        .credentials(&user)
        .into_iter()
        .find(|c| c.mechanism == mechanism)
        .unwrap_or_else(|| ScramCredential::fake_for(&user, mechanism, &context.fake_credential_secret()));
    server.server_first(&credential)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Users(Vec<(String, ScramCredential)>);

    impl SaslContext for Users {
        fn credentials(&self, user: &str) -> Vec<ScramCredential> {
            self.0.iter().filter(|(u, _)| u == user).map(|(_, c)| c.clone()).collect()
        }
        fn server_nonce(&mut self) -> String {
            "servernonce0123456789".to_string()
        }
        fn fake_credential_secret(&self) -> Vec<u8> {
            b"secret".to_vec()
        }
    }

    fn users() -> Users {
        let alice = |m| ScramCredential::from_password(m, "wonderland", b"salt-of-alice".to_vec(), 4096).unwrap();
        Users(vec![("alice".into(), alice(ScramMechanism::Sha256)), ("alice".into(), alice(ScramMechanism::Sha512))])
    }

    fn all() -> Vec<SaslMechanism> {
        vec![
            SaslMechanism::Scram(ScramMechanism::Sha256),
            SaslMechanism::Scram(ScramMechanism::Sha512),
            SaslMechanism::Plain,
        ]
    }

    /// A SCRAM client's messages for `password`, driven against `session`.
    fn scram_login(session: &mut SaslSession, mechanism: ScramMechanism, user: &str, password: &str) -> SaslStep {
        scram_login_echoing(session, mechanism, user, password, "")
    }

    /// As [`scram_login`], with `prefix` in front of the nonce the client-final-message
    /// echoes (librdkafka before 2.x sends its own nonce again there).
    fn scram_login_echoing(
        session: &mut SaslSession,
        mechanism: ScramMechanism,
        user: &str,
        password: &str,
        prefix: &str,
    ) -> SaslStep {
        let client_nonce = "clientnonce";
        let bare = format!("n={user},r={client_nonce}");
        let SaslStep::Challenge(first) = session.authenticate(format!("n,,{bare}").as_bytes(), &mut users()) else {
            panic!("no server-first-message")
        };
        let first = String::from_utf8(first).unwrap();
        let field = |key: &str| first.split(',').find_map(|f| f.strip_prefix(key)).unwrap().to_string();
        let (nonce, salt, iterations) = (field("r="), field("s="), field("i="));
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD.decode(salt).unwrap();
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations.parse().unwrap());
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={prefix}{nonce}");
        let auth_message = format!("{bare},{first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        let proof = base64::engine::general_purpose::STANDARD.encode(proof);
        session.authenticate(format!("{without_proof},p={proof}").as_bytes(), &mut users())
    }

    #[test]
    fn only_api_versions_and_sasl_requests_come_before_authentication() {
        let mut session = SaslSession::new(all());
        assert!(session.allows(API_VERSIONS) && session.allows(SASL_HANDSHAKE) && session.allows(SASL_AUTHENTICATE));
        assert!(!session.allows(0) && !session.allows(3), "Produce and Metadata wait for authentication");
        session.handshake("SCRAM-SHA-512").unwrap();
        assert!(matches!(
            scram_login(&mut session, ScramMechanism::Sha512, "alice", "wonderland"),
            SaslStep::Authenticated { .. }
        ));
        assert_eq!(session.principal(), Some(&KafkaPrincipal::user("alice")));
        assert!(session.allows(0) && session.allows(3));
    }

    #[test]
    fn scram_and_plain_log_in_with_the_right_password_only() {
        for mechanism in ScramMechanism::ALL {
            let mut session = SaslSession::new(all());
            session.handshake(mechanism.name()).unwrap();
            let SaslStep::Authenticated { principal, bytes } =
                scram_login(&mut session, mechanism, "alice", "wonderland")
            else {
                panic!("{mechanism}: the right password is refused")
            };
            assert_eq!((principal.to_string(), bytes.starts_with(b"v=")), ("User:alice".to_string(), true));

            let mut session = SaslSession::new(all());
            session.handshake(mechanism.name()).unwrap();
            let SaslStep::Refused(refusal) = scram_login(&mut session, mechanism, "alice", "looking-glass") else {
                panic!("{mechanism}: a wrong password is accepted")
            };
            assert_eq!(refusal.code, ErrorCode::SaslAuthenticationFailed);
            assert!(!session.allows(0) && !session.allows(SASL_AUTHENTICATE), "a refused connection is done");

            let mut session = SaslSession::new(all());
            session.handshake(mechanism.name()).unwrap();
            let unknown = scram_login(&mut session, mechanism, "mallory", "wonderland");
            assert!(matches!(unknown, SaslStep::Refused(r) if r.code == ErrorCode::SaslAuthenticationFailed));
        }
        let plain = |message: &[u8]| {
            let mut session = SaslSession::new(all());
            session.handshake("PLAIN").unwrap();
            session.authenticate(message, &mut users())
        };
        assert!(
            matches!(plain(b"\0alice\0wonderland"), SaslStep::Authenticated { principal, .. } if principal.name == "alice")
        );
        for wrong in [&b"\0alice\0rabbit"[..], b"\0mallory\0wonderland", b"alice"] {
            assert!(matches!(plain(wrong), SaslStep::Refused(r) if r.code == ErrorCode::SaslAuthenticationFailed));
        }
    }

    #[test]
    fn a_nonce_echoed_with_the_clients_own_in_front_is_accepted_as_kafka_does() {
        let mut session = SaslSession::new(all());
        session.handshake("SCRAM-SHA-512").unwrap();
        let step = scram_login_echoing(&mut session, ScramMechanism::Sha512, "alice", "wonderland", "clientnonce");
        assert!(matches!(step, SaslStep::Authenticated { .. }), "{step:?}");
        let mut session = SaslSession::new(all());
        session.handshake("SCRAM-SHA-512").unwrap();
        let step = scram_login_echoing(&mut session, ScramMechanism::Sha512, "alice", "looking-glass", "clientnonce");
        assert!(matches!(step, SaslStep::Refused(_)), "the proof still decides");
    }

    #[test]
    fn the_handshake_offers_only_what_the_listener_enables() {
        let mut session = SaslSession::new(vec![SaslMechanism::Scram(ScramMechanism::Sha256)]);
        assert_eq!(session.enabled_names(), vec!["SCRAM-SHA-256"]);
        for refused in ["PLAIN", "GSSAPI", "SCRAM-SHA-512"] {
            assert_eq!(session.handshake(refused).unwrap_err().code, ErrorCode::UnsupportedSaslMechanism);
        }
        let mut early = SaslSession::new(all());
        let step = early.authenticate(b"n,,n=alice,r=x", &mut users());
        assert!(matches!(step, SaslStep::Refused(r) if r.code == ErrorCode::IllegalSaslState));
        session.handshake("SCRAM-SHA-256").unwrap();
        assert_eq!(session.handshake("SCRAM-SHA-256").unwrap_err().code, ErrorCode::IllegalSaslState);
    }
}
