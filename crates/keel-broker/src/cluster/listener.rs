//! The cluster port of a controller: Raft messages in, calls answered.

use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::controller::{ControllerHandle, Event};
use super::protocol::{Frame, Request};
use super::transport::{read_frame, write_frame};
use crate::server::accept_until_shutdown;

/// Serves the cluster port until `shutdown` turns true.
pub async fn serve(listener: TcpListener, controller: ControllerHandle, shutdown: watch::Receiver<bool>) {
    let connections = accept_until_shutdown(&listener, "cluster port", shutdown, |stream, peer| {
        let controller = controller.clone();
        async move {
            if let Err(error) = connection(stream, controller).await {
                tracing::debug!(%peer, %error, "cluster connection closed");
            }
        }
    })
    .await;
    // Dropping the set aborts the open connections: peers reconnect to whoever serves next.
    drop(connections);
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
