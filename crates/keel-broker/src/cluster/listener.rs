//! The cluster port of a controller: Raft messages in, calls answered.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::controller::{ControllerHandle, Event};
use super::protocol::{Frame, Request};
use super::transport::{read_frame, write_frame};

/// Serves the cluster port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, controller: ControllerHandle, mut shutdown: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let controller = controller.clone();
                    connections.spawn(async move {
                        if let Err(error) = connection(stream, controller).await {
                            tracing::debug!(%peer, %error, "cluster connection closed");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "cluster port accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.abort_all();
}

async fn connection(mut stream: TcpStream, controller: ControllerHandle) -> std::io::Result<()> {
    while let Some(frame) = read_frame::<Frame>(&mut stream).await? {
        match frame {
            Frame::Raft { from, to: _, message } => {
                // A full queue means the controller is far behind: dropping is what Raft expects
                // of a network.
                let _ = controller.events.try_send(Event::Raft { from, message });
            }
            Frame::Request(Request::FetchMetadata { after, max_wait_ms }) => {
                let wait = Duration::from_millis(u64::from(max_wait_ms.min(5_000)));
                let response = controller.fetch(after, wait).await;
                write_frame(&mut stream, &response).await?;
            }
            Frame::Request(request) => {
                let response = controller.call(request).await;
                write_frame(&mut stream, &response).await?;
            }
        }
    }
    Ok(())
}
