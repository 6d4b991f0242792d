//! Bytes between keel nodes on the cluster port: frames over TCP, each `[len u32]` (big
//! endian, counting what follows), `[protocol version u8]`, then the value in postcard (its
//! stable 1.0 wire format).
//!
//! Nodes of one cluster speak one protocol version ([`PROTOCOL_VERSION`]). A frame of another
//! version is refused and its connection closed, with an error naming both versions: during a
//! rolling upgrade, nodes of releases that share the protocol version work together, and a
//! release that changes it needs every node stopped and started on it (Kafka's
//! `inter.broker.protocol.version` and KIP-584 feature versions, which let old and new brokers
//! agree on a version, are not built). Version 1 was bincode without a version byte.
//!
//! Two kinds of traffic share the port, on separate connections so one never waits behind the
//! other: one-way Raft messages (a sender task per peer; a message that cannot be delivered is
//! dropped, which Raft tolerates by design), and request/response calls (a connection per
//! destination, one call at a time on it; callers time out and reconnect).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

/// The largest frame a node accepts (a metadata snapshot must fit).
pub const FRAME_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The cluster protocol this node speaks; see the module documentation.
pub const PROTOCOL_VERSION: u8 = 2;

/// A frame's bytes: length, version, postcard.
pub fn encode_frame<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let bytes = postcard::to_extend(value, vec![0, 0, 0, 0, PROTOCOL_VERSION])
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let len = u32::try_from(bytes.len() - 4).map_err(|_| std::io::Error::other("frame too large"))?;
    let mut bytes = bytes;
    bytes[..4].copy_from_slice(&len.to_be_bytes());
    Ok(bytes)
}

/// Parses a frame's body (what follows the length).
pub fn decode_frame<T: DeserializeOwned>(body: &[u8]) -> std::io::Result<T> {
    let invalid = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidData, message);
    match body.split_first() {
        Some((&PROTOCOL_VERSION, value)) => match postcard::take_from_bytes(value) {
            Ok((value, [])) => Ok(value),
            Ok((_, trailing)) => Err(invalid(format!("frame has {} bytes after its value", trailing.len()))),
            Err(e) => Err(invalid(format!("frame cannot be decoded: {e}"))),
        },
        Some((&version, _)) => Err(invalid(format!(
            "the peer speaks cluster protocol version {version} and this node {PROTOCOL_VERSION}: \
             run every node of the cluster on the same keel release"
        ))),
        None => Err(invalid("empty frame".to_string())),
    }
}

/// Writes one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    stream.write_all(&encode_frame(value)?).await
}

/// Reads one frame; `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > FRAME_MAX_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {FRAME_MAX_BYTES}-byte limit"),
        ));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    decode_frame(&body).map(Some)
}

/// Sends frames to one peer from a queue, reconnecting as needed. Frames queued while the peer
/// is unreachable are dropped.
#[derive(Debug, Clone)]
pub struct PeerSender<T> {
    queue: mpsc::Sender<T>,
}

impl<T: Serialize + Send + Sync + 'static> PeerSender<T> {
    /// Starts the sender task for `address`.
    pub fn start(address: SocketAddr) -> PeerSender<T> {
        let (queue, mut frames) = mpsc::channel::<T>(4096);
        tokio::spawn(async move {
            let mut stream: Option<TcpStream> = None;
            while let Some(frame) = frames.recv().await {
                if stream.is_none() {
                    match tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(address)).await {
                        Ok(Ok(s)) => {
                            let _ = s.set_nodelay(true);
                            stream = Some(s);
                        }
                        _ => {
                            // Unreachable: drop what is queued instead of delivering it late.
                            while frames.try_recv().is_ok() {}
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    }
                }
                if let Some(s) = stream.as_mut() {
                    if write_frame(s, &frame).await.is_err() {
                        stream = None;
                    }
                }
            }
        });
        PeerSender { queue }
    }

    /// Queues a frame; drops it if the queue is full (the peer is far behind or gone).
    pub fn send(&self, frame: T) {
        let _ = self.queue.try_send(frame);
    }
}

/// Request/response calls to one address over a reused connection.
#[derive(Debug, Clone)]
pub struct Caller {
    address: SocketAddr,
    connection: Arc<Mutex<Option<TcpStream>>>,
}

impl Caller {
    pub fn new(address: SocketAddr) -> Caller {
        Caller { address, connection: Arc::new(Mutex::new(None)) }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sends `request` and waits for the answer, at most `timeout` in all.
    pub async fn call<Q: Serialize, A: DeserializeOwned>(&self, request: &Q, timeout: Duration) -> Result<A, String> {
        // The connection is taken out for the exchange and put back only after a whole answer:
        // a call cut short by its timeout drops (closes) a stream that may hold half a frame,
        // and concurrent calls never wait for each other (they open a connection of their own).
        let result = tokio::time::timeout(timeout, async {
            let idle = self.connection.lock().await.take();
            let mut stream = match idle {
                Some(stream) => stream,
                None => {
                    let stream = TcpStream::connect(self.address).await.map_err(|e| e.to_string())?;
                    let _ = stream.set_nodelay(true);
                    stream
                }
            };
            write_frame(&mut stream, request).await.map_err(|e| e.to_string())?;
            let answer = match read_frame(&mut stream).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Err("the connection closed".to_string()),
                Err(e) => return Err(e.to_string()),
            };
            *self.connection.lock().await = Some(stream);
            Ok(answer)
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")));
        result.map_err(|e| format!("{}: {e}", self.address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_the_protocol_version_and_another_version_is_refused() {
        let value = (7u64, "metadata".to_string(), vec![1u8, 2, 3]);
        let frame = encode_frame(&value).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!((len, frame[4]), (frame.len() - 4, PROTOCOL_VERSION));
        assert_eq!(decode_frame::<(u64, String, Vec<u8>)>(&frame[4..]).unwrap(), value);
        let mut other = frame[4..].to_vec();
        other[0] = PROTOCOL_VERSION + 1;
        let error = decode_frame::<(u64, String, Vec<u8>)>(&other).unwrap_err().to_string();
        assert!(error.contains("same keel release"), "{error}");
        let mut trailing = frame[4..].to_vec();
        trailing.push(0);
        assert!(decode_frame::<(u64, String, Vec<u8>)>(&trailing).is_err());
        assert!(decode_frame::<(u64, String, Vec<u8>)>(&frame[4..frame.len() - 1]).is_err());
        assert!(decode_frame::<(u64, String, Vec<u8>)>(&[]).is_err());
    }
}
