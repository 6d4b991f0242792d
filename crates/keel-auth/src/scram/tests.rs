use super::*;

const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const SERVER_NONCE: &str = "0123456789abcdefghijklmnopqrstuv";

/// The credential of RFC 7677's example: user "user", password "pencil".
fn rfc_credential() -> ScramCredential {
    let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    ScramCredential::from_password(ScramMechanism::Sha256, "pencil", salt, 4096).unwrap()
}

#[test]
fn rfc_7677_example_exchange_byte_for_byte() {
    let mut server = ScramServer::new(ScramMechanism::Sha256, RFC_SERVER_NONCE.to_owned());
    let username = server.handle_client_first(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO").unwrap();
    assert_eq!(username, "user");
    let server_first = server.server_first(&rfc_credential()).unwrap();
    assert_eq!(
        String::from_utf8(server_first).unwrap(),
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    );
    assert!(!server.is_complete());
    let success = server
        .handle_client_final(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        )
        .unwrap();
    assert_eq!(String::from_utf8(success.server_final).unwrap(), "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
    assert_eq!(success.username, "user");
    assert!(server.is_complete());
    // A finished exchange takes no more messages.
    let error = server.handle_client_final(b"c=biws,r=x,p=AAAA").unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::IllegalSaslState);
}

/// A SCRAM client, written from RFC 5802 section 3, to run exchanges against the server.
struct TestClient {
    mechanism: ScramMechanism,
    gs2_header: String,
    bare: String,
    client_nonce: String,
}

impl TestClient {
    fn new(mechanism: ScramMechanism, username: &str, client_nonce: &str) -> TestClient {
        TestClient::with_gs2_header(mechanism, "n,,", username, client_nonce)
    }

    fn with_gs2_header(mechanism: ScramMechanism, gs2_header: &str, username: &str, client_nonce: &str) -> TestClient {
        TestClient {
            mechanism,
            gs2_header: gs2_header.to_owned(),
            bare: format!("n={},r={client_nonce}", encode_saslname(username)),
            client_nonce: client_nonce.to_owned(),
        }
    }

    fn first(&self) -> Vec<u8> {
        format!("{}{}", self.gs2_header, self.bare).into_bytes()
    }

    /// The client-final-message, and the server signature the client expects back.
    fn final_message(&self, server_first: &[u8], password: &str) -> (Vec<u8>, String) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut fields = server_first.split(',');
        let nonce = fields.next().unwrap().strip_prefix("r=").unwrap();
        let salt = BASE64.decode(fields.next().unwrap().strip_prefix("s=").unwrap()).unwrap();
        let iterations: u32 = fields.next().unwrap().strip_prefix("i=").unwrap().parse().unwrap();
        assert!(nonce.starts_with(&self.client_nonce), "the server must echo the client nonce");
        let without_proof = format!("c={},r={nonce}", BASE64.encode(&self.gs2_header));
        let auth_message = format!("{},{server_first},{without_proof}", self.bare);
        let mechanism = self.mechanism;
        let salted = mechanism.salted_password(password.as_bytes(), &salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let client_signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&client_signature).map(|(k, s)| k ^ s).collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let server_signature = mechanism.hmac(&server_key, auth_message.as_bytes());
        let message = format!("{without_proof},p={}", BASE64.encode(proof)).into_bytes();
        (message, format!("v={}", BASE64.encode(server_signature)))
    }
}

/// Runs a whole exchange for `username` with `password` against `credential`.
fn exchange(client: &TestClient, credential: &ScramCredential, password: &str) -> Result<ScramSuccess, ScramError> {
    let mut server = ScramServer::new(client.mechanism, SERVER_NONCE.to_owned());
    server.handle_client_first(&client.first())?;
    let server_first = server.server_first(credential)?;
    let (client_final, _) = client.final_message(&server_first, password);
    server.handle_client_final(&client_final)
}

#[test]
fn sha_512_round_trip_with_a_test_client() {
    let credential =
        ScramCredential::from_password(ScramMechanism::Sha512, "s3cret", b"some salt".to_vec(), 8192).unwrap();
    let client = TestClient::new(ScramMechanism::Sha512, "alice", "clientnonce123");
    let mut server = ScramServer::new(ScramMechanism::Sha512, SERVER_NONCE.to_owned());
    assert_eq!(server.handle_client_first(&client.first()).unwrap(), "alice");
    let server_first = server.server_first(&credential).unwrap();
    let (client_final, expected_server_final) = client.final_message(&server_first, "s3cret");
    let success = server.handle_client_final(&client_final).unwrap();
    assert_eq!(String::from_utf8(success.server_final).unwrap(), expected_server_final);
    assert_eq!(success.username, "alice");
    assert!(server.is_complete());
}

#[test]
fn wrong_password_fails_at_the_proof() {
    for mechanism in ScramMechanism::ALL {
        let credential = ScramCredential::from_password(mechanism, "right", b"salt".to_vec(), 4096).unwrap();
        let client = TestClient::new(mechanism, "alice", "nonce");
        assert_eq!(exchange(&client, &credential, "wrong").unwrap_err(), ScramError::InvalidProof);
        assert!(exchange(&client, &credential, "right").is_ok());
    }
}

#[test]
fn refusals_hide_credential_failures_like_kafka() {
    let refusal = ScramError::InvalidProof.refusal(ScramMechanism::Sha256);
    assert_eq!(refusal.code, ErrorCode::SaslAuthenticationFailed);
    assert_eq!(
        refusal.message,
        "Authentication failed during authentication due to invalid credentials with SASL mechanism SCRAM-SHA-256"
    );
    let refusal = ScramError::AuthorizationIdMismatch.refusal(ScramMechanism::Sha512);
    assert_eq!(
        refusal.message,
        "Authentication failed: Client requested an authorization id that is different from username"
    );
}

#[test]
fn unknown_user_with_a_fake_credential_fails_at_the_proof_and_looks_like_a_real_user() {
    let secret = b"cluster secret";
    let fake = ScramCredential::fake_for("mallory", ScramMechanism::Sha256, secret);
    let client = TestClient::new(ScramMechanism::Sha256, "mallory", "nonce");
    // The server-first answer is stable across attempts, as it is for a real user.
    let server_first = |credential: &ScramCredential| {
        let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
        server.handle_client_first(&client.first()).unwrap();
        server.server_first(credential).unwrap()
    };
    assert_eq!(
        server_first(&fake),
        server_first(&ScramCredential::fake_for("mallory", ScramMechanism::Sha256, secret))
    );
    let answer = String::from_utf8(server_first(&fake)).unwrap();
    assert!(answer.contains(",s=") && answer.ends_with(",i=4096"), "{answer}");
    for password in ["", "guess", "mallory"] {
        assert_eq!(exchange(&client, &fake, password).unwrap_err(), ScramError::InvalidProof);
    }
}

#[test]
fn wrong_nonce_is_refused() {
    let credential = rfc_credential();
    let client = TestClient::new(ScramMechanism::Sha256, "user", "rOprNGfwEbeRWgbNEkqO");
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    server.handle_client_first(&client.first()).unwrap();
    let server_first = server.server_first(&credential).unwrap();
    let (client_final, _) = client.final_message(&server_first, "pencil");
    let tampered = String::from_utf8(client_final).unwrap().replace(SERVER_NONCE, "another-server-nonce-0000000000");
    assert_eq!(server.handle_client_final(tampered.as_bytes()).unwrap_err(), ScramError::NonceMismatch);
    // The failed exchange accepts nothing more.
    assert!(matches!(server.handle_client_final(b"c=biws").unwrap_err(), ScramError::UnexpectedMessage { .. }));
}

#[test]
fn channel_binding_is_refused_and_checked() {
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    let error = server.handle_client_first(b"p=tls-unique,,n=user,r=abc").unwrap_err();
    assert_eq!(error, ScramError::ChannelBindingNotSupported);
    assert_eq!(error.refusal(ScramMechanism::Sha256).code, ErrorCode::SaslAuthenticationFailed);

    // c= must encode the gs2 header the client sent ("n,," is "biws").
    let credential = rfc_credential();
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    server.handle_client_first(b"n,,n=user,r=abc").unwrap();
    let server_first = String::from_utf8(server.server_first(&credential).unwrap()).unwrap();
    let nonce = server_first.split(',').next().unwrap();
    let message = format!("c=eSws,{nonce},p={}", BASE64.encode([0; 32]));
    assert_eq!(server.handle_client_final(message.as_bytes()).unwrap_err(), ScramError::ChannelBindingMismatch);

    // "y,," (client could bind, thinks the server cannot) is accepted, with c=eSws.
    let client = TestClient::with_gs2_header(ScramMechanism::Sha256, "y,,", "user", "abc");
    assert!(exchange(&client, &credential, "pencil").is_ok());
}

#[test]
fn authorization_id_must_be_the_user_name() {
    let credential = rfc_credential();
    let same = TestClient::with_gs2_header(ScramMechanism::Sha256, "n,a=user,", "user", "abc");
    assert_eq!(exchange(&same, &credential, "pencil").unwrap().username, "user");
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    let error = server.handle_client_first(b"n,a=admin,n=user,r=abc").unwrap_err();
    assert_eq!(error, ScramError::AuthorizationIdMismatch);
}

#[test]
fn delegation_tokens_and_mandatory_extensions_are_refused() {
    let cases: [(&[u8], ScramError); 3] = [
        (b"n,,n=user,r=abc,tokenauth=true", ScramError::DelegationTokensNotSupported),
        (b"n,,n=user,r=abc,tokenauth=TRUE", ScramError::DelegationTokensNotSupported),
        (b"n,,m=ext,n=user,r=abc", ScramError::MandatoryExtensionNotSupported),
    ];
    for (message, expected) in cases {
        let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
        assert_eq!(server.handle_client_first(message).unwrap_err(), expected, "{}", String::from_utf8_lossy(message));
    }
    // Other well-formed extensions are ignored, as Kafka ignores unsupported ones.
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    assert_eq!(server.handle_client_first(b"n,,n=user,r=abc,tokenauth=false,foo=bar").unwrap(), "user");
}

#[test]
fn malformed_client_first_messages_are_refused() {
    let long = format!("n,,n=user,r={}", "a".repeat(CLIENT_MESSAGE_BYTES_MAX));
    let cases: Vec<&[u8]> = vec![
        b"",
        b"n",
        b"n,",
        b"x,,n=user,r=abc",
        b"n,b=user,n=user,r=abc",
        b"n,,",
        b"n,,n=user",
        b"n,,r=abc,n=user",
        b"n,,n=,r=abc",
        b"n,,n=user,r=",
        b"n,,n=us=er,r=abc",
        b"n,,n=us=2,r=abc",
        b"n,,n=user,r=ab\x01c",
        b"n,,n=user,r=abc,=x",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=user,r=abc,novalue",
        b"n,,n=\xff,r=abc",
        long.as_bytes(),
    ];
    for message in cases {
        let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
        let error = server.handle_client_first(message).unwrap_err();
        assert!(matches!(error, ScramError::Malformed { .. }), "{:?}: {error:?}", String::from_utf8_lossy(message));
        assert!(server.server_first(&rfc_credential()).is_err(), "a failed exchange must stay failed");
    }
}

#[test]
fn malformed_client_final_messages_are_refused() {
    let nonce = format!("r=abc{SERVER_NONCE}");
    let proof = BASE64.encode([0; 32]);
    let cases = [
        String::new(),
        format!("c=biws,{nonce}"),
        format!("c=biws,{nonce},p=not base64!"),
        format!("{nonce},c=biws,p={proof}"),
        format!("c=biws,p={proof}"),
        format!("c=bi,ws,{nonce},p={proof}"),
        format!("c=biws,{nonce},bad extension,p={proof}"),
        format!("x=biws,{nonce},p={proof}"),
    ];
    for message in cases {
        let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        server.server_first(&rfc_credential()).unwrap();
        let error = server.handle_client_final(message.as_bytes()).unwrap_err();
        assert!(matches!(error, ScramError::Malformed { .. }), "{message:?}: {error:?}");
    }
    // A proof of the wrong length is a failed proof, not a crash.
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    server.handle_client_first(b"n,,n=user,r=abc").unwrap();
    server.server_first(&rfc_credential()).unwrap();
    let short = format!("c=biws,{nonce},p={}", BASE64.encode([0; 5]));
    assert_eq!(server.handle_client_final(short.as_bytes()).unwrap_err(), ScramError::InvalidProof);
}

#[test]
fn user_names_with_comma_and_equals_are_escaped() {
    let cases = [("a,b", "a=2Cb"), ("a=b", "a=3Db"), ("=,=", "=3D=2C=3D"), ("plain", "plain"), ("ünï", "ünï")];
    for (username, escaped) in cases {
        assert_eq!(encode_saslname(username), escaped);
        assert_eq!(decode_saslname(CLIENT_FIRST, escaped).unwrap(), username);
        let credential = ScramCredential::from_password(ScramMechanism::Sha256, "pw", b"salt".to_vec(), 4096).unwrap();
        let client = TestClient::new(ScramMechanism::Sha256, username, "nonce");
        assert_eq!(exchange(&client, &credential, "pw").unwrap().username, username);
    }
}

#[test]
fn credential_checks_before_the_server_first_message() {
    let mut server = ScramServer::new(ScramMechanism::Sha512, SERVER_NONCE.to_owned());
    server.handle_client_first(b"n,,n=user,r=abc").unwrap();
    let error = server.server_first(&rfc_credential()).unwrap_err();
    assert!(matches!(error, ScramError::CredentialMechanismMismatch { .. }));

    let mut weak = rfc_credential();
    weak.iterations = 1000;
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    server.handle_client_first(b"n,,n=user,r=abc").unwrap();
    let error = server.server_first(&weak).unwrap_err();
    assert_eq!(error.to_string(), "Iterations 1000 is less than the minimum 4096 for SCRAM-SHA-256");
}

#[test]
fn steps_out_of_order_are_illegal_sasl_state() {
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    let error = server.server_first(&rfc_credential()).unwrap_err();
    assert_eq!(error.error_code(), ErrorCode::IllegalSaslState);
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    let error = server.handle_client_final(b"c=biws,r=abc,p=AAAA").unwrap_err();
    assert_eq!(error.refusal(ScramMechanism::Sha256).code, ErrorCode::IllegalSaslState);
    let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
    server.handle_client_first(b"n,,n=user,r=abc").unwrap();
    assert!(matches!(
        server.handle_client_first(b"n,,n=user,r=abc").unwrap_err(),
        ScramError::UnexpectedMessage { .. }
    ));
}

#[test]
#[should_panic(expected = "printable")]
fn a_server_nonce_with_a_comma_is_a_bug() {
    let _ = ScramServer::new(ScramMechanism::Sha256, "0123456789,abcdefgh".to_owned());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    /// A valid message with one byte replaced, inserted or removed, to reach past the first
    /// checks more often than random bytes do.
    fn mutated(valid: &'static [u8]) -> impl Strategy<Value = Vec<u8>> {
        (any::<prop::sample::Index>(), any::<u8>(), 0..3u8).prop_map(move |(index, byte, kind)| {
            let mut message = valid.to_vec();
            let at = index.index(message.len());
            match kind {
                0 => message[at] = byte,
                1 => message.insert(at, byte),
                _ => {
                    message.remove(at);
                }
            }
            message
        })
    }

    proptest! {
        /// A one-byte change to the RFC 7677 exchange either fails cleanly or, if the change
        /// is harmless (an ignored extension), still authenticates the same user.
        #[test]
        fn mutated_rfc_messages_fail_cleanly(
            first in mutated(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"),
            last in mutated(b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="),
        ) {
            let credential = rfc_credential();
            let mut server = ScramServer::new(ScramMechanism::Sha256, RFC_SERVER_NONCE.to_owned());
            if server.handle_client_first(&first).is_ok() {
                server.server_first(&credential).unwrap();
                match server.handle_client_final(&last) {
                    Ok(success) => prop_assert_eq!(success.username, "user"),
                    Err(_) => prop_assert!(!server.is_complete()),
                }
            }
        }

        /// Any bytes from a client give an answer, never a panic.
        #[test]
        fn arbitrary_client_messages_never_panic(first in proptest::collection::vec(any::<u8>(), 0..64),
                                                 last in proptest::collection::vec(any::<u8>(), 0..96)) {
            let mut server = ScramServer::new(ScramMechanism::Sha256, SERVER_NONCE.to_owned());
            if server.handle_client_first(&first).is_ok() {
                server.server_first(&rfc_credential()).unwrap();
                prop_assert!(server.handle_client_final(&last).is_err());
            }
        }
    }
}
