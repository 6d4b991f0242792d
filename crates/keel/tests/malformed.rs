//! Malformed input never crashes or stalls keel: bad frames close only their own connection,
//! and a real client keeps working throughout.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::*;
use keel_broker::BrokerConfig;

/// Sends raw bytes and reports whether the broker closed the connection (read returns 0 or
/// an error) within the timeout.
fn closes_after(addr: &str, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = stream.write_all(bytes);
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            Ok(_) => continue, // a response; keep reading until the close
        }
    }
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// One request/response round trip with a raw frame; returns the response frame body.
fn round_trip(addr: &str, body: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(&frame(body)).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut response).unwrap();
    response
}

#[test]
fn malformed_requests_close_only_their_connection() {
    let dir = tempfile::tempdir().unwrap();
    let broker = TestBroker::start_with(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        socket_request_max_bytes: 1 << 20,
        ..BrokerConfig::default()
    });
    let addr = broker.brokers();

    // A real client works before, between and after every bad input.
    let producer = producer(&addr, &[("acks", "all")]);
    let mut sent = Vec::new();
    let mut round = 0u64;
    let mut client_works = || {
        let batch: Vec<Sent> = (round * 100..round * 100 + 100).map(record_for).collect();
        produce_all(&producer, "survivor", &batch);
        sent.extend(batch);
        round += 1;
    };
    client_works();

    let mut api_versions_v3 = vec![0, 18, 0, 3, 0, 0, 0, 1, 0, 1, b'x', 0];
    api_versions_v3.extend_from_slice(&[2, b'k', 2, b'1', 0]); // software name/version, no tags
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage bytes", b"\x00\x00\x00\x10this is not kafka".to_vec()),
        ("huge length prefix", vec![0x7f, 0xff, 0xff, 0xff, 1, 2, 3]),
        ("negative length prefix", vec![0xff, 0xff, 0xff, 0xf0]),
        ("frame over socket.request.max.bytes", (2i32 << 20).to_be_bytes().to_vec()),
        ("frame shorter than a header", frame(&[0, 3, 0])),
        ("unknown api key", frame(&[0x7e, 0x01, 0, 0, 0, 0, 0, 7, 0, 0])),
        ("unsupported produce version", frame(&[0, 0, 0, 1, 0, 0, 0, 7, 0, 0])),
        ("fetch version too new", frame(&[0, 1, 0x7f, 0, 0, 0, 0, 7, 0, 0])),
        ("truncated metadata body", frame(&[0, 3, 0, 9, 0, 0, 0, 7, 0, 1, b'x', 0, 5])),
        (
            "array count of 54 million in a 15-byte frame",
            frame(&[0, 3, 0, 0, 0, 0, 0, 7, 0, 0, 0x03, 0x3c, 0x0c, 0x00, 0xb6]),
        ),
        ("client id longer than frame", frame(&[0, 3, 0, 1, 0, 0, 0, 7, 0x7f, 0x00, b'x'])),
        ("truncated api versions v3", frame(&api_versions_v3[..api_versions_v3.len() - 3])),
    ];
    for (name, bytes) in &cases {
        assert!(closes_after(&addr, bytes), "{name}: connection stayed open");
        client_works();
    }
    // A truncated frame followed by silence: the broker waits for the rest without blocking
    // anyone else, and the client's close is handled.
    let mut half = TcpStream::connect(&addr).unwrap();
    half.write_all(&[0, 0, 0, 100, 0, 18]).unwrap();
    client_works();
    drop(half);

    // ApiVersions newer than keel knows: answered (v0 body) with UNSUPPORTED_VERSION (35).
    let response = round_trip(&addr, &[0, 18, 0x7f, 0x00, 0, 0, 0, 9, 0, 0]);
    assert_eq!(&response[..4], &9i32.to_be_bytes(), "correlation id");
    assert_eq!(&response[4..6], &35i16.to_be_bytes(), "UNSUPPORTED_VERSION");
    // And a well-formed v3 one succeeds.
    let response = round_trip(&addr, &api_versions_v3);
    assert_eq!(&response[4..6], &0i16.to_be_bytes());

    client_works();
    let got = consume_all(&addr, "survivor", 1, sent.len(), Duration::from_secs(30));
    assert_same(&sent, &got);
    broker.stop();
}
