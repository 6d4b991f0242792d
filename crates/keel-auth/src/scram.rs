//! The server side of a SASL/SCRAM exchange (RFC 5802, RFC 7677), as Kafka's
//! `ScramSaslServer`, without its IO: the caller moves the SaslAuthenticate bytes in and out,
//! looks the user's credential up between the two steps and draws the server nonce.
//!
//! ```text
//!   client-first  --handle_client_first-->  username (caller looks up the credential)
//!                 <------server_first-----  server-first (r=, s=, i=)
//!   client-final  --handle_client_final-->  server-final (v=) and the authenticated user
//! ```

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use keel_types::{ErrorCode, Refusal};
use subtle::ConstantTimeEq as _;

use crate::{ScramCredential, ScramMechanism};

/// The largest client message accepted. SCRAM messages are a few hundred bytes; the bound
/// keeps a hostile client from making the server scan or keep a large one.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = 8192;

/// Why an exchange failed. Every failure moves the exchange to its failed state: no later
/// message is accepted, and the connection should be answered with [`ScramError::refusal`]
/// and closed, as Kafka does.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The message does not follow RFC 5802's grammar.
    #[error("invalid SCRAM {message_name}: {reason}")]
    Malformed { message_name: &'static str, reason: String },
    /// The client asked for channel binding (`p=`), which keel does not offer.
    #[error(
        "SCRAM channel binding is not supported; use the gs2 header \"n,,\" (no SCRAM-*-PLUS mechanism is offered)"
    )]
    ChannelBindingNotSupported,
    /// The client-first-message carries a mandatory extension (`m=`), which RFC 5802 says a
    /// server that does not know it must refuse.
    #[error("SCRAM mandatory extension (m=) is not supported")]
    MandatoryExtensionNotSupported,
    /// The client asked for delegation token authentication (`tokenauth=true`).
    #[error(
        "delegation token authentication (tokenauth=true) is not supported; authenticate with a SCRAM user credential"
    )]
    DelegationTokensNotSupported,
    /// The gs2 header names an authorization id other than the user name.
    #[error("Authentication failed: Client requested an authorization id that is different from username")]
    AuthorizationIdMismatch,
    /// The caller passed a credential for the other SCRAM mechanism: a lookup bug.
    #[error("the credential passed is for {credential} but the exchange is {exchange}")]
    CredentialMechanismMismatch { credential: ScramMechanism, exchange: ScramMechanism },
    /// The stored credential has fewer iterations than Kafka accepts.
    #[error("Iterations {iterations} is less than the minimum {minimum} for {mechanism}")]
    TooFewIterations { iterations: u32, minimum: u32, mechanism: ScramMechanism },
    /// The client-final-message's nonce is not the one the server announced.
    #[error("Invalid client nonce in the final client message.")]
    NonceMismatch,
    /// The client-final-message's channel binding (`c=`) is not the client's gs2 header.
    #[error("channel binding (c=) in the final client message does not match the gs2 header")]
    ChannelBindingMismatch,
    /// The proof does not verify: wrong password, or no such user.
    #[error("Invalid client credentials")]
    InvalidProof,
    /// A message arrived in a state that expects none or another one.
    #[error("Unexpected {step} in SASL/SCRAM server state {state}")]
    UnexpectedMessage { step: &'static str, state: &'static str },
}

impl ScramError {
    /// The error code of the SaslAuthenticate answer.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            ScramError::UnexpectedMessage { .. } => ErrorCode::IllegalSaslState,
            _ => ErrorCode::SaslAuthenticationFailed,
        }
    }

    /// What the client is told. Like Kafka, failures that could help someone probe
    /// credentials get one message for all; refusals of features and protocol misuse say
    /// what happened, since they reveal nothing about users.
    pub fn refusal(&self, mechanism: ScramMechanism) -> Refusal {
        let message = match self {
            ScramError::ChannelBindingNotSupported
            | ScramError::MandatoryExtensionNotSupported
            | ScramError::DelegationTokensNotSupported
            | ScramError::AuthorizationIdMismatch
            | ScramError::UnexpectedMessage { .. } => self.to_string(),
            ScramError::Malformed { .. }
            | ScramError::CredentialMechanismMismatch { .. }
            | ScramError::TooFewIterations { .. }
            | ScramError::NonceMismatch
            | ScramError::ChannelBindingMismatch
            | ScramError::InvalidProof => format!(
                "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
            ),
        };
        Refusal::new(self.error_code(), message)
    }
}

/// A finished exchange: the last message to send and who authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramSuccess {
    /// The server-final-message, `v=<base64 server signature>`.
    pub server_final: Vec<u8>,
    /// The user name from the client-first-message, unescaped; the principal is
    /// `User:<username>`.
    pub username: String,
}

/// One server-side SCRAM exchange on one connection.
#[derive(Debug)]
pub struct ScramServer {
    mechanism: ScramMechanism,
    server_nonce: String,
    state: State,
}

#[derive(Debug)]
enum State {
    AwaitingClientFirst,
    AwaitingCredential(ClientFirst),
    AwaitingClientFinal(AwaitingClientFinal),
    Complete,
    Failed,
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::AwaitingClientFirst => "RECEIVE_CLIENT_FIRST_MESSAGE",
            State::AwaitingCredential(_) => "AWAIT_CREDENTIAL",
            State::AwaitingClientFinal(_) => "RECEIVE_CLIENT_FINAL_MESSAGE",
            State::Complete => "COMPLETE",
            State::Failed => "FAILED",
        }
    }
}

/// What the client-first-message said that the rest of the exchange needs.
#[derive(Debug)]
struct ClientFirst {
    /// `n,,` or `n,a=<authzid>,` (or with `y`): what `c=` must encode.
    gs2_header: String,
    /// client-first-message-bare, part of the AuthMessage.
    bare: String,
    username: String,
    client_nonce: String,
}

#[derive(Debug)]
struct AwaitingClientFinal {
    client_first: ClientFirst,
    server_first: String,
    credential: ScramCredential,
}

impl ScramServer {
    /// A new exchange. `server_nonce` is the caller's random part of the nonce: printable
    /// ASCII without `,`, at least 16 characters (Kafka sends a random base-36 string).
    pub fn new(mechanism: ScramMechanism, server_nonce: String) -> ScramServer {
        assert!(server_nonce.len() >= 16, "a server nonce needs enough randomness: {server_nonce:?}");
        assert!(is_printable_nonce(&server_nonce), "a server nonce must be printable without ',': {server_nonce:?}");
        ScramServer { mechanism, server_nonce, state: State::AwaitingClientFirst }
    }

    pub fn mechanism(&self) -> ScramMechanism {
        self.mechanism
    }

    /// Whether the client has proven it holds the password.
    pub fn is_complete(&self) -> bool {
        matches!(self.state, State::Complete)
    }

    /// Takes the client-first-message and returns the user name whose credential the caller
    /// must look up and pass to [`ScramServer::server_first`] (or a
    /// [`ScramCredential::fake_for`] it, when there is none).
    pub fn handle_client_first(&mut self, message: &[u8]) -> Result<String, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        if !matches!(state, State::AwaitingClientFirst) {
            return Err(ScramError::UnexpectedMessage { step: "client-first-message", state: state.name() });
        }
        let client_first = parse_client_first(message)?;
        let username = client_first.username.clone();
        self.state = State::AwaitingCredential(client_first);
        Ok(username)
    }

    /// The server-first-message for the user's credential: the combined nonce, the salt and
    /// the iteration count.
    pub fn server_first(&mut self, credential: &ScramCredential) -> Result<Vec<u8>, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingCredential(client_first) = state else {
            return Err(ScramError::UnexpectedMessage { step: "credential", state: state.name() });
        };
        if credential.mechanism != self.mechanism {
            return Err(ScramError::CredentialMechanismMismatch {
                credential: credential.mechanism,
                exchange: self.mechanism,
            });
        }
        if credential.iterations < ScramMechanism::ITERATIONS_MIN {
            return Err(ScramError::TooFewIterations {
                iterations: credential.iterations,
                minimum: ScramMechanism::ITERATIONS_MIN,
                mechanism: self.mechanism,
            });
        }
        let server_first = format!(
            "r={}{},s={},i={}",
            client_first.client_nonce,
            self.server_nonce,
            BASE64.encode(&credential.salt),
            credential.iterations
        );
        let message = server_first.clone().into_bytes();
        self.state = State::AwaitingClientFinal(AwaitingClientFinal {
            client_first,
            server_first,
            credential: credential.clone(),
        });
        Ok(message)
    }

    /// Takes the client-final-message, verifies the proof in constant time and, when it
    /// holds, returns the server-final-message and the authenticated user name.
    pub fn handle_client_final(&mut self, message: &[u8]) -> Result<ScramSuccess, ScramError> {
        let state = std::mem::replace(&mut self.state, State::Failed);
        let State::AwaitingClientFinal(exchange) = state else {
            return Err(ScramError::UnexpectedMessage { step: "client-final-message", state: state.name() });
        };
        let client_final = parse_client_final(message)?;
        // RFC 5802 wants the nonce echoed exactly; Kafka's ScramSaslServer only checks that it
        // ends with the one the server sent, and librdkafka before 2.x relies on that: it sends
        // its own nonce again in front (seen with Debian's librdkafka 2.0.2 and kcat). The
        // proof covers the message as sent, and the server's random part is still required.
        let expected_nonce = format!("{}{}", exchange.client_first.client_nonce, self.server_nonce);
        if !client_final.nonce.ends_with(&expected_nonce) {
            return Err(ScramError::NonceMismatch);
        }
        if client_final.channel_binding != exchange.client_first.gs2_header.as_bytes() {
            return Err(ScramError::ChannelBindingMismatch);
        }
        let auth_message =
            format!("{},{},{}", exchange.client_first.bare, exchange.server_first, client_final.without_proof);
        let credential = &exchange.credential;
        if !proof_verifies(self.mechanism, credential, auth_message.as_bytes(), &client_final.proof) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = self.mechanism.hmac(&credential.server_key, auth_message.as_bytes());
        self.state = State::Complete;
        Ok(ScramSuccess {
            server_final: format!("v={}", BASE64.encode(server_signature)).into_bytes(),
            username: exchange.client_first.username,
        })
    }
}

/// RFC 5802 section 3: recover `ClientKey := ClientProof XOR ClientSignature` and check
/// `H(ClientKey) == StoredKey`, comparing in constant time.
fn proof_verifies(mechanism: ScramMechanism, credential: &ScramCredential, auth_message: &[u8], proof: &[u8]) -> bool {
    if proof.len() != mechanism.hash_len() {
        return false;
    }
    let client_signature = mechanism.hmac(&credential.stored_key, auth_message);
    let client_key: Vec<u8> = proof.iter().zip(&client_signature).map(|(p, s)| p ^ s).collect();
    let stored_key = mechanism.hash(&client_key);
    bool::from(stored_key.ct_eq(&credential.stored_key))
}

fn malformed(message_name: &'static str, reason: impl Into<String>) -> ScramError {
    ScramError::Malformed { message_name, reason: reason.into() }
}

fn message_text<'a>(message_name: &'static str, message: &'a [u8]) -> Result<&'a str, ScramError> {
    if message.len() > CLIENT_MESSAGE_BYTES_MAX {
        return Err(malformed(
            message_name,
            format!("{} bytes is more than the {CLIENT_MESSAGE_BYTES_MAX} accepted", message.len()),
        ));
    }
    std::str::from_utf8(message).map_err(|_| malformed(message_name, "not UTF-8"))
}

const CLIENT_FIRST: &str = "client-first-message";
const CLIENT_FINAL: &str = "client-final-message";

/// Parses `gs2-header client-first-message-bare`:
/// `n,[a=authzid],[m=ext,]n=username,r=nonce[,ext=value]*`.
fn parse_client_first(message: &[u8]) -> Result<ClientFirst, ScramError> {
    let text = message_text(CLIENT_FIRST, message)?;
    let (cbind_flag, rest) = text.split_once(',').ok_or_else(|| malformed(CLIENT_FIRST, "no gs2 header"))?;
    match cbind_flag {
        // "y": the client supports channel binding but thinks the server does not, which is
        // true; RFC 5802 lets such a server carry on.
        "n" | "y" => {}
        flag if flag.starts_with("p=") => return Err(ScramError::ChannelBindingNotSupported),
        _ => return Err(malformed(CLIENT_FIRST, "unknown gs2 channel binding flag")),
    }
    let (authzid_field, bare) =
        rest.split_once(',').ok_or_else(|| malformed(CLIENT_FIRST, "gs2 header not terminated"))?;
    let authzid = match authzid_field {
        "" => None,
        field => {
            let escaped =
                field.strip_prefix("a=").ok_or_else(|| malformed(CLIENT_FIRST, "gs2 authzid must start with a="))?;
            Some(decode_saslname(CLIENT_FIRST, escaped)?)
        }
    };
    let gs2_header = text[..text.len() - bare.len()].to_owned();
    let mut fields = bare.split(',');
    let mut field = fields.next().unwrap_or_default();
    if field.starts_with("m=") {
        return Err(ScramError::MandatoryExtensionNotSupported);
    }
    let escaped_username = field.strip_prefix("n=").ok_or_else(|| malformed(CLIENT_FIRST, "expected n=username"))?;
    let username = decode_saslname(CLIENT_FIRST, escaped_username)?;
    field = fields.next().unwrap_or_default();
    let client_nonce = field.strip_prefix("r=").ok_or_else(|| malformed(CLIENT_FIRST, "expected r=nonce"))?;
    if client_nonce.is_empty() || !is_printable_nonce(client_nonce) {
        return Err(malformed(CLIENT_FIRST, "the nonce must be printable ASCII"));
    }
    for extension in fields {
        let (key, value) = parse_extension(CLIENT_FIRST, extension)?;
        if key == "tokenauth" && value.eq_ignore_ascii_case("true") {
            return Err(ScramError::DelegationTokensNotSupported);
        }
    }
    if authzid.is_some_and(|authzid| authzid != username) {
        return Err(ScramError::AuthorizationIdMismatch);
    }
    Ok(ClientFirst { gs2_header, bare: bare.to_owned(), username, client_nonce: client_nonce.to_owned() })
}

/// What the client-final-message said.
#[derive(Debug)]
struct ClientFinal {
    /// The decoded `c=` value.
    channel_binding: Vec<u8>,
    nonce: String,
    /// client-final-message-without-proof, part of the AuthMessage.
    without_proof: String,
    proof: Vec<u8>,
}

/// Parses `c=base64,r=nonce[,ext=value]*,p=base64`.
fn parse_client_final(message: &[u8]) -> Result<ClientFinal, ScramError> {
    let text = message_text(CLIENT_FINAL, message)?;
    let (without_proof, proof) =
        text.rsplit_once(",p=").ok_or_else(|| malformed(CLIENT_FINAL, "expected a final p=proof"))?;
    let proof = BASE64.decode(proof).map_err(|_| malformed(CLIENT_FINAL, "the proof is not base64"))?;
    let mut fields = without_proof.split(',');
    let channel_binding = fields
        .next()
        .and_then(|field| field.strip_prefix("c="))
        .ok_or_else(|| malformed(CLIENT_FINAL, "expected c=channel-binding"))?;
    let channel_binding =
        BASE64.decode(channel_binding).map_err(|_| malformed(CLIENT_FINAL, "the channel binding is not base64"))?;
    let nonce = fields
        .next()
        .and_then(|field| field.strip_prefix("r="))
        .ok_or_else(|| malformed(CLIENT_FINAL, "expected r=nonce"))?;
    for extension in fields {
        parse_extension(CLIENT_FINAL, extension)?;
    }
    Ok(ClientFinal { channel_binding, nonce: nonce.to_owned(), without_proof: without_proof.to_owned(), proof })
}

/// An `attr=value` extension: the attribute one ASCII letter or more, as Kafka's
/// `ScramExtensions` reads them.
fn parse_extension<'a>(message_name: &'static str, field: &'a str) -> Result<(&'a str, &'a str), ScramError> {
    match field.split_once('=') {
        Some((key, value)) if !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphabetic()) => Ok((key, value)),
        _ => Err(malformed(message_name, format!("invalid extension {field:?}"))),
    }
}

/// RFC 5802's `printable`: `%x21-2B / %x2D-7E`, any visible ASCII character but `,`.
fn is_printable_nonce(nonce: &str) -> bool {
    nonce.bytes().all(|b| (0x21..=0x7E).contains(&b) && b != b',')
}

/// Decodes an RFC 5802 `saslname`: non-empty, with `,` written `=2C` and `=` written `=3D`;
/// any other `=` is an error, as the RFC requires.
fn decode_saslname(message_name: &'static str, escaped: &str) -> Result<String, ScramError> {
    if escaped.is_empty() {
        return Err(malformed(message_name, "empty user name"));
    }
    let mut name = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(index) = rest.find('=') {
        name.push_str(&rest[..index]);
        let escape = rest.get(index..index + 3);
        match escape {
            Some("=2C") => name.push(','),
            Some("=3D") => name.push('='),
            _ => return Err(malformed(message_name, "user name has an invalid = escape (only =2C and =3D are valid)")),
        }
        rest = &rest[index + 3..];
    }
    name.push_str(rest);
    Ok(name)
}

/// Encodes a user name as an RFC 5802 `saslname` (`,` as `=2C`, `=` as `=3D`): the client's
/// side of what [`ScramServer::handle_client_first`] decodes, for clients and tests.
pub fn encode_saslname(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests;
