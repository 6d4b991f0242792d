//! A minimal Kafka protocol client for broker-to-broker requests: a follower's replica
//! fetches go to the leader's Kafka listener as ordinary Fetch requests, as in Kafka.

use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use keel_kafka::kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, RequestHeader, ResponseHeader};
use keel_kafka::kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Fetch v15: KIP-320's `LastFetchedEpoch` and `DivergingEpoch` (v12), topic ids (v13), and
/// `ReplicaState` with the follower's broker epoch (KIP-903).
pub const REPLICA_FETCH_VERSION: i16 = 15;
/// Larger responses close the connection (a follower asks for at most a few MiB).
const RESPONSE_BYTES_MAX: usize = 256 << 20;

/// One connection to one broker's Kafka listener; requests are sent one at a time. The
/// benchmarks use it too, to load the broker without a full client's own costs.
#[derive(Debug)]
pub struct KafkaConnection {
    stream: TcpStream,
    client_id: String,
    next_correlation_id: i32,
}

impl KafkaConnection {
    pub async fn connect(address: &str, client_id: String, timeout: Duration) -> Result<KafkaConnection, String> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connecting to {address} timed out"))?
            .map_err(|e| format!("cannot connect to {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        Ok(KafkaConnection { stream, client_id, next_correlation_id: 0 })
    }

    /// Sends a replica fetch and waits (at most `timeout`) for its answer.
    pub async fn fetch(&mut self, request: &FetchRequest, timeout: Duration) -> Result<FetchResponse, String> {
        self.call(request, REPLICA_FETCH_VERSION, timeout).await
    }

    /// Sends `request` at `version` and waits (at most `timeout`) for its answer.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, String> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| format!("unknown API key {}", R::KEY))?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_string(self.client_id.clone())))
            .encode(&mut frame, api.request_header_version(version))
            .map_err(|e| format!("encode {api:?} header: {e:#}"))?;
        request.encode(&mut frame, version).map_err(|e| format!("encode {api:?}: {e:#}"))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());
        let exchange = async {
            self.stream.write_all(&frame).await.map_err(|e| format!("send {api:?}: {e}"))?;
            let size = self.stream.read_i32().await.map_err(|e| format!("read {api:?} response: {e}"))?;
            let size = usize::try_from(size).ok().filter(|&s| s <= RESPONSE_BYTES_MAX).ok_or_else(|| {
                format!("{api:?} response of {size} bytes is out of bounds (at most {RESPONSE_BYTES_MAX})")
            })?;
            let mut body = BytesMut::zeroed(size);
            self.stream.read_exact(&mut body).await.map_err(|e| format!("read {api:?} response: {e}"))?;
            Ok::<_, String>(body.freeze())
        };
        let mut body =
            tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("{api:?} request timed out"))??;
        let header = ResponseHeader::decode(&mut body, api.response_header_version(version))
            .map_err(|e| format!("decode {api:?} response header: {e:#}"))?;
        if header.correlation_id != correlation_id {
            return Err(format!("response for request {} arrived for {correlation_id}", header.correlation_id));
        }
        let response =
            R::Response::decode(&mut body, version).map_err(|e| format!("decode {api:?} response: {e:#}"))?;
        if body.has_remaining() {
            return Err(format!("{api:?} response has {} bytes left over", body.remaining()));
        }
        Ok(response)
    }
}
