//! The Kafka listener: accepts connections and serves each one's requests in order, as Kafka
//! does (one request at a time per connection, responses in request order).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use keel_kafka::kafka_protocol::messages::{ApiKey, ResponseKind};
use keel_kafka::{decode_request, encode_response, DecodeError, FrameDecoder};
use keel_types::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::api::api_versions::api_versions;
use crate::broker::{Broker, Client, Reply};

/// How long shutdown waits for connections to finish their in-flight request.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// Serves Kafka clients on `listener` until `shutdown` turns true, then stops accepting, lets
/// every connection finish the request it is handling, and returns.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    let mut connections = accept_until_shutdown(&listener, "Kafka listener", shutdown.clone(), |stream, peer| {
        connection(broker.clone(), stream, peer, shutdown.clone())
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

async fn connection(broker: Arc<Broker>, mut stream: TcpStream, peer: SocketAddr, mut shutdown: watch::Receiver<bool>) {
    let frames = FrameDecoder::new(broker.config.socket_request_max_bytes);
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
        let response = match decode_request(frame) {
            Ok(request) => {
                let version = request.header.api_version;
                let correlation_id = request.header.correlation_id;
                let api_key = request.api_key;
                let client = Client {
                    client_id: request.header.client_id.clone().unwrap_or_default(),
                    host: format!("/{}", peer.ip()),
                };
                match broker.handle_from(&client, api_key, version, request.body).await {
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
