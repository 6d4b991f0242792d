//! The Kafka listener: accepts connections and serves each one's requests in order, as Kafka
//! does (one request at a time per connection, responses in request order).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keel_auth::{SaslContext, SaslSession, SaslStep, ScramCredential};
use keel_kafka::kafka_protocol::messages::{
    ApiKey, RequestKind, ResponseKind, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use keel_kafka::kafka_protocol::protocol::StrBytes;
use keel_kafka::{decode_request, encode_response, DecodeError, FrameDecoder};
use keel_types::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::api_versions::api_versions;
use crate::broker::{Broker, Client, Reply};
use crate::config::SecurityProtocol;

/// How long shutdown waits for connections to finish their in-flight request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves Kafka clients on `listener` until `shutdown` turns true, then stops accepting, lets
/// every connection finish the request it is handling, and returns.
pub async fn serve(
    broker: Arc<Broker>,
    listener: TcpListener,
    protocol: SecurityProtocol,
    shutdown: watch::Receiver<bool>,
) {
    let mut connections = accept_until_shutdown(&listener, "Kafka listener", shutdown.clone(), |stream, peer| {
        connection(broker.clone(), stream, peer, protocol, shutdown.clone())
    })
    .await;
    drop(listener);
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(open = connections.len(), "connections still busy after {DRAIN_TIMEOUT:?}; closing them");
        connections.abort_all();
    }
}

/// Accepts connections on `listener` until `shutdown` turns true, each served by `connection`
/// on a task of its own; returns the connections still open, for the caller to drain or abort.
/// Every port keel listens on accepts here.
pub(crate) async fn accept_until_shutdown<F>(
    listener: &TcpListener,
    port: &'static str,
    mut shutdown: watch::Receiver<bool>,
    mut connection: impl FnMut(TcpStream, SocketAddr) -> F,
) -> JoinSet<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(connection(stream, peer));
                }
                Err(error) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(%error, port, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections
}

async fn connection(
    broker: Arc<Broker>,
    mut stream: TcpStream,
    peer: SocketAddr,
    protocol: SecurityProtocol,
    mut shutdown: watch::Receiver<bool>,
) {
    let frames = FrameDecoder::new(broker.config.socket_request_max_bytes);
    // On a SASL listener: the exchange, then who authenticated.
    let mut sasl =
        (protocol == SecurityProtocol::SaslPlaintext).then(|| SaslSession::new(broker.sasl_mechanisms.clone()));
    // After a SaslHandshake v0 the mechanism's messages come as bare size-prefixed frames,
    // not wrapped in SaslAuthenticate (Kafka still serves v0, for older kafka-python).
    let mut bare_sasl = false;
    let mut buffer = BytesMut::with_capacity(READ_BUFFER_BYTES);
    loop {
        let frame = match frames.decode(&mut buffer) {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if *shutdown.borrow() {
                    return;
                }
                if buffer.capacity() - buffer.len() < READ_BUFFER_BYTES / 4 {
                    buffer.reserve(READ_BUFFER_BYTES);
                }
                tokio::select! {
                    read = stream.read_buf(&mut buffer) => match read {
                        Ok(0) => return,
                        Ok(_) => continue,
                        Err(error) => {
                            tracing::debug!(%peer, %error, "connection read failed");
                            return;
                        }
                    },
                    _ = shutdown.changed() => return,
                }
            }
            Err(error) => {
                tracing::warn!(%peer, %error, "closing connection");
                return;
            }
        };
        if let Some(session) = sasl.as_mut().filter(|_| bare_sasl) {
            let Some((bytes, done)) = bare_sasl_answer(&broker, session, &frame, peer) else { return };
            bare_sasl = !done;
            if let Err(error) = stream.write_all(&bytes).await {
                tracing::debug!(%peer, %error, "connection write failed");
                return;
            }
            continue;
        }
        // A refused SASL exchange is answered, then the connection closes.
        let mut close_after = false;
        let response = match decode_request(frame) {
            Ok(request) => {
                let version = request.header.api_version;
                let correlation_id = request.header.correlation_id;
                let api_key = request.api_key;
                let exchange = sasl.as_mut().filter(|s| s.principal().is_none());
                let reply = match (exchange, request.body) {
                    (Some(session), _) if !session.allows(api_key as i16) => {
                        Reply::Close(format!("{api_key:?} before SASL authentication"))
                    }
                    (Some(session), RequestKind::SaslHandshake(r)) => {
                        let error = session.handshake(&r.mechanism).err();
                        bare_sasl = error.is_none() && version == 0;
                        let mechanisms = session.enabled_names().into_iter().map(StrBytes::from_static_str).collect();
                        let code = error.map_or(0, |e| e.code.code());
                        Reply::Response(ResponseKind::SaslHandshake(
                            SaslHandshakeResponse::default().with_error_code(code).with_mechanisms(mechanisms),
                        ))
                    }
                    (Some(session), RequestKind::SaslAuthenticate(r)) => {
                        let (response, refused) = sasl_authenticate(&broker, session, &r.auth_bytes, peer);
                        close_after = refused;
                        Reply::Response(ResponseKind::SaslAuthenticate(response))
                    }
                    (_, body) => {
                        let client = Client {
                            client_id: request.header.client_id.clone().unwrap_or_default(),
                            host: format!("/{}", peer.ip()),
                            listener: protocol.name(),
                            principal: sasl.as_ref().and_then(|s| s.principal().cloned()),
                        };
                        broker.handle_from(&client, api_key, version, body).await
                    }
                };
                match reply {
                    Reply::Response(response) => encode_response(api_key, version, correlation_id, &response),
                    Reply::None => continue,
                    Reply::Close(reason) => {
                        tracing::info!(%peer, %reason, "closing connection");
                        return;
                    }
                }
            }
            // Kafka's rule: an ApiVersions request newer than the broker knows gets a v0
            // answer with UNSUPPORTED_VERSION and the versions the broker does serve.
            Err(DecodeError::UnsupportedVersion { api_key: ApiKey::ApiVersions, correlation_id, .. }) => {
                let response = ResponseKind::ApiVersions(api_versions(ErrorCode::UnsupportedVersion));
                encode_response(ApiKey::ApiVersions, 0, correlation_id, &response)
            }
            Err(error) => {
                // Nothing sensible can be answered: Kafka closes the connection too.
                tracing::warn!(%peer, %error, "closing connection after a request keel cannot answer");
                return;
            }
        };
        let response = match response {
            Ok(bytes) => bytes,
            Err(error) => {
                tracing::error!(%peer, %error, "could not encode a response; closing connection");
                return;
            }
        };
        if let Err(error) = stream.write_all(&response).await {
            tracing::debug!(%peer, %error, "connection write failed");
            return;
        }
        if close_after {
            return;
        }
    }
}

/// SaslAuthenticate: the answer, and whether the exchange was refused (the connection then
/// closes after the answer).
fn sasl_authenticate(
    broker: &Broker,
    session: &mut SaslSession,
    bytes: &[u8],
    peer: SocketAddr,
) -> (SaslAuthenticateResponse, bool) {
    let response = SaslAuthenticateResponse::default();
    match session.authenticate(bytes, &mut BrokerSasl(broker)) {
        SaslStep::Challenge(bytes) => (response.with_auth_bytes(bytes.into()), false),
        SaslStep::Authenticated { principal, bytes } => {
            tracing::debug!(%peer, %principal, "authenticated");
            (response.with_auth_bytes(bytes.into()), false)
        }
        SaslStep::Refused(refusal) => {
            log_refused(session, &refusal, peer);
            let message = Some(StrBytes::from_string(refusal.message));
            (response.with_error_code(refusal.code.code()).with_error_message(message), true)
        }
    }
}

/// One bare SASL frame after a SaslHandshake v0: the size-prefixed answer and whether the
/// client is now authenticated, or `None` when refused (a bare exchange has no error field:
/// Kafka closes the connection).
fn bare_sasl_answer(
    broker: &Broker,
    session: &mut SaslSession,
    frame: &[u8],
    peer: SocketAddr,
) -> Option<(Vec<u8>, bool)> {
    let (bytes, done) = match session.authenticate(frame, &mut BrokerSasl(broker)) {
        SaslStep::Challenge(bytes) => (bytes, false),
        SaslStep::Authenticated { bytes, .. } => (bytes, true),
        SaslStep::Refused(refusal) => {
            log_refused(session, &refusal, peer);
            return None;
        }
    };
    let mut framed = Vec::with_capacity(4 + bytes.len());
    framed.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    framed.extend_from_slice(&bytes);
    Some((framed, done))
}

/// Logs why an exchange failed, in more detail than the client is told.
fn log_refused(session: &SaslSession, refusal: &keel_types::Refusal, peer: SocketAddr) {
    let detail = session.failure().unwrap_or(&refusal.message);
    tracing::info!(%peer, reason = %detail, "SASL authentication failed");
}

/// What SaslAuthenticate needs of the broker: credentials from its replayed metadata image.
struct BrokerSasl<'a>(&'a Broker);

impl SaslContext for BrokerSasl<'_> {
    fn credentials(&self, user: &str) -> Vec<ScramCredential> {
        let image = Broker::image(&self.0.cluster);
        image.scram_users().get(user).map(|by_mechanism| by_mechanism.values().cloned().collect()).unwrap_or_default()
    }

    fn server_nonce(&mut self) -> String {
        uuid::Uuid::new_v4().simple().to_string()
    }

    fn fake_credential_secret(&self) -> Vec<u8> {
        self.0.sasl_secret.0.to_vec()
    }
}

/// Runs the periodic upkeep every partition needs (interval flushes often; retention and
/// recovery checkpoints every `full_every`) until shutdown.
pub async fn maintenance(broker: Arc<Broker>, mut shutdown: watch::Receiver<bool>) {
    const TICK: Duration = Duration::from_millis(100);
    const FULL_EVERY_TICKS: u32 = 300;
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
        ticks = (ticks + 1) % FULL_EVERY_TICKS;
        broker.tick_groups();
        let broker = broker.clone();
        let full = ticks == 0;
        // Flushing and retention do disk IO: keep it off the request threads.
        let _ = tokio::task::spawn_blocking(move || broker.maintain(full)).await;
    }
}
