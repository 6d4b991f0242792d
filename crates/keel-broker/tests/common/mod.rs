//! Helpers shared by the broker's integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;

use bytes::BytesMut;
use keel_broker::BrokerConfig;
use keel_kafka::kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Cluster member `id` of the quorum `controllers`, on free loopback ports, data under `dir`.
pub fn node_config(id: i32, controllers: &str, dir: &Path) -> BrokerConfig {
    BrokerConfig {
        node_id: id,
        data_dir: dir.join(format!("node-{id}")),
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        controllers: controllers.to_string(),
        ..BrokerConfig::default()
    }
}

/// One uncompressed record batch holding one record, as a producer sends it.
/// A one-voter controller quorum on a free port: the voter's cluster address and the
/// `controllers` setting naming it.
pub fn one_voter() -> (std::net::SocketAddr, String) {
    let voter: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    (voter, format!("1@{voter}"))
}

/// Node `id` with the broker role only, in `dir`.
pub fn broker_only_config(id: i32, controllers: &str, dir: &Path) -> BrokerConfig {
    BrokerConfig { process_roles: Some("broker".to_string()), ..node_config(id, controllers, dir) }
}

pub fn batch() -> bytes::Bytes {
    let record = Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: keel_broker::clock::now_ms(),
        key: None,
        value: Some(bytes::Bytes::from_static(b"v")),
        headers: Default::default(),
    };
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .unwrap();
    buf.freeze()
}
