//! Fuzzes the SASL messages a client sends before it is authenticated: PLAIN's response,
//! SCRAM's client-first and client-final messages, and a whole `SaslSession` exchange.
//!
//! Input: one mode byte, then the messages. PLAIN takes the rest as one message; the SCRAM
//! and session modes split the rest at 0xFF bytes (never part of a valid UTF-8 message).
#![no_main]

use std::sync::OnceLock;

use keel_auth::{
    PlainResponse, SaslContext, SaslMechanism, SaslSession, SaslStep, ScramCredential, ScramMechanism, ScramServer,
};
use libfuzzer_sys::fuzz_target;

/// The server's half of every nonce, fixed so that a seed can carry a valid client proof.
const SERVER_NONCE: &str = "fuzzservernonce01234";
const SEPARATOR: u8 = 0xff;

fn credential(mechanism: ScramMechanism) -> &'static ScramCredential {
    static SHA256: OnceLock<ScramCredential> = OnceLock::new();
    static SHA512: OnceLock<ScramCredential> = OnceLock::new();
    let cell = match mechanism {
        ScramMechanism::Sha256 => &SHA256,
        ScramMechanism::Sha512 => &SHA512,
    };
    cell.get_or_init(|| {
        ScramCredential::from_password(
            mechanism,
            "wonderland",
            b"salt-of-alice".to_vec(),
            ScramMechanism::ITERATIONS_MIN,
        )
        .expect("a valid credential")
    })
}

struct Users;

impl SaslContext for Users {
    fn credentials(&self, user: &str) -> Vec<ScramCredential> {
        if user == "alice" {
            vec![credential(ScramMechanism::Sha256).clone(), credential(ScramMechanism::Sha512).clone()]
        } else {
            Vec::new()
        }
    }
    fn server_nonce(&mut self) -> String {
        SERVER_NONCE.to_string()
    }
    fn fake_credential_secret(&self) -> Vec<u8> {
        b"fuzz secret".to_vec()
    }
}

fn mechanism(selector: u8) -> ScramMechanism {
    if selector & 1 == 0 {
        ScramMechanism::Sha256
    } else {
        ScramMechanism::Sha512
    }
}

fn plain(message: &[u8]) {
    if let Ok(response) = PlainResponse::parse(message) {
        let _ = response.username();
        let _ = response.verify(credential(ScramMechanism::Sha512));
    }
}

fn scram(selector: u8, messages: &[u8]) {
    let mechanism = mechanism(selector);
    let mut parts = messages.split(|&b| b == SEPARATOR);
    let first = parts.next().unwrap_or_default();
    let last = parts.next().unwrap_or_default();
    let mut server = ScramServer::new(mechanism, SERVER_NONCE.to_string());
    let Ok(_user) = server.handle_client_first(first) else { return };
    let Ok(_server_first) = server.server_first(credential(mechanism)) else { return };
    if let Ok(success) = server.handle_client_final(last) {
        assert_eq!(success.username, "alice", "only alice's password can produce a valid proof");
        assert!(server.is_complete());
    }
}

fn session(selector: u8, messages: &[u8]) {
    let names = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "GSSAPI"];
    let mut session = SaslSession::new(vec![
        SaslMechanism::Scram(ScramMechanism::Sha256),
        SaslMechanism::Scram(ScramMechanism::Sha512),
        SaslMechanism::Plain,
    ]);
    if session.handshake(names[usize::from(selector) % names.len()]).is_err() {
        return;
    }
    // At most a few steps: a valid exchange takes two.
    for message in messages.split(|&b| b == SEPARATOR).take(4) {
        match session.authenticate(message, &mut Users) {
            SaslStep::Challenge(_) => {}
            SaslStep::Authenticated { principal, .. } => {
                assert_eq!(session.principal(), Some(&principal));
                assert!(session.allows(0));
            }
            SaslStep::Refused(_) => assert!(session.principal().is_none()),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 3 {
        0 => plain(rest),
        1 => scram(mode / 3, rest),
        _ => session(mode / 3, rest),
    }
});
