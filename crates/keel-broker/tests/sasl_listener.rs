//! A SASL_PLAINTEXT listener spoken to byte by byte: SaslHandshake v0 followed by a bare PLAIN
//! frame (the path older kafka-python takes, which no client in the compatibility suite does),
//! a request before authentication, and a wrong password. Real clients (confluent-kafka,
//! kafka-python, kcat) cover the SaslAuthenticate path in `compat/test_sasl.py`.

#![allow(clippy::disallowed_methods)] // tests bound their waits with the real clock

mod common;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use keel_kafka::kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, RequestHeader, ResponseHeader, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use keel_kafka::kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn start() -> (keel_broker::RunningNode, std::net::SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = keel_broker::BrokerConfig {
        listeners: vec!["PLAINTEXT://127.0.0.1:0".into(), "SASL_PLAINTEXT://127.0.0.1:0".into()],
        sasl_mechanisms: vec!["PLAIN".into(), "SCRAM-SHA-256".into()],
        bootstrap_user: Some("alice:wonderland".into()),
        ..common::single_node_config(dir.path())
    };
    let node = common::start_ready(config).await;
    let sasl = node.listener_addrs.iter().find(|(name, _)| *name == "SASL_PLAINTEXT").unwrap().1;
    (node, sasl, dir)
}

async fn send_request(stream: &mut TcpStream, api_key: ApiKey, version: i16, body: &impl Encodable) {
    let mut frame = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("sasl-test")))
        .encode(&mut frame, api_key.request_header_version(version))
        .unwrap();
    body.encode(&mut frame, version).unwrap();
    send_frame(stream, &frame).await;
}

async fn send_frame(stream: &mut TcpStream, bytes: &[u8]) {
    let mut framed = BytesMut::new();
    framed.put_u32(bytes.len() as u32);
    framed.put_slice(bytes);
    stream.write_all(&framed).await.unwrap();
}

/// The next frame, or `None` when the broker closed the connection.
async fn read_frame(stream: &mut TcpStream) -> Option<BytesMut> {
    let mut size = [0u8; 4];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut size)).await.expect("an answer");
    read.ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).await.ok()?;
    Some(BytesMut::from(&body[..]))
}

async fn handshake_v0(stream: &mut TcpStream, mechanism: &'static str) -> SaslHandshakeResponse {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
    send_request(stream, ApiKey::SaslHandshake, 0, &request).await;
    let mut frame = read_frame(stream).await.expect("a handshake answer");
    let header = ResponseHeader::decode(&mut frame, ApiKey::SaslHandshake.response_header_version(0)).unwrap();
    assert_eq!(header.correlation_id, 7);
    SaslHandshakeResponse::decode(&mut frame, 0).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_plain_exchange_after_handshake_v0_authenticates_and_a_wrong_password_closes() {
    let (node, sasl, _dir) = start().await;

    // The right password: an empty bare answer, then requests are served.
    let mut stream = TcpStream::connect(sasl).await.unwrap();
    let handshake = handshake_v0(&mut stream, "PLAIN").await;
    assert_eq!(handshake.error_code, 0);
    let mechanisms: Vec<String> = handshake.mechanisms.iter().map(|m| m.to_string()).collect();
    assert_eq!(mechanisms, vec!["PLAIN", "SCRAM-SHA-256"]);
    send_frame(&mut stream, b"\0alice\0wonderland").await;
    assert_eq!(read_frame(&mut stream).await.expect("the bare answer").len(), 0);
    send_request(&mut stream, ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![]))).await;
    let mut frame = read_frame(&mut stream).await.expect("a Metadata answer after authentication");
    ResponseHeader::decode(&mut frame, ApiKey::Metadata.response_header_version(1)).unwrap();
    let metadata = MetadataResponse::decode(&mut frame, 1).unwrap();
    let ports: Vec<i32> = metadata.brokers.iter().map(|b| b.port).collect();
    assert_eq!(ports, vec![i32::from(sasl.port())], "Metadata names the listener the client is on");

    // A wrong password: the connection closes.
    let mut stream = TcpStream::connect(sasl).await.unwrap();
    assert_eq!(handshake_v0(&mut stream, "PLAIN").await.error_code, 0);
    send_frame(&mut stream, b"\0alice\0looking-glass").await;
    assert!(read_frame(&mut stream).await.is_none(), "a refused bare exchange closes the connection");

    // A request before authentication: the connection closes, nothing is answered.
    let mut stream = TcpStream::connect(sasl).await.unwrap();
    send_request(&mut stream, ApiKey::Metadata, 1, &MetadataRequest::default().with_topics(Some(vec![]))).await;
    assert!(read_frame(&mut stream).await.is_none(), "Metadata before authentication closes the connection");

    // A mechanism the listener does not offer.
    let mut stream = TcpStream::connect(sasl).await.unwrap();
    assert_eq!(handshake_v0(&mut stream, "SCRAM-SHA-512").await.error_code, 33, "UNSUPPORTED_SASL_MECHANISM");

    node.shutdown().await.unwrap();
}
