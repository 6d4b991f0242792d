//! Bytes between keel nodes on the cluster port: length-prefixed bincode frames over TCP.
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

/// Writes one frame.
pub async fn write_frame<T: Serialize>(stream: &mut TcpStream, value: &T) -> std::io::Result<()> {
    let body = bincode::serialize(value).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut bytes = Vec::with_capacity(4 + body.len());
    bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
    bytes.extend_from_slice(&body);
    stream.write_all(&bytes).await
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
    bincode::deserialize(&body).map(Some).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
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
