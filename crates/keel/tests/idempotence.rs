//! An idempotent librdkafka producer keeps exactly-once, in-order appends while a proxy cuts
//! its connections mid-flight, forcing retries of batches the broker may already have.
#![allow(clippy::disallowed_methods)] // the proxy paces its cuts with the real clock

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use keel_broker::BrokerConfig;
use rdkafka::consumer::Consumer;

/// Forwards connections to `target`, and cuts every open connection every `cut_every`.
struct CuttingProxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    cutting: Arc<AtomicBool>,
    cuts: Arc<AtomicUsize>,
}

impl CuttingProxy {
    fn start(listener: TcpListener, target: SocketAddr, cut_every: Duration) -> CuttingProxy {
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(AtomicUsize::new(0));
        let cutting = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        listener.set_nonblocking(true).unwrap();
        {
            let (stop, open) = (stop.clone(), open.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            client.set_nonblocking(false).unwrap();
                            let Ok(server) = TcpStream::connect(target) else { continue };
                            open.lock().unwrap().extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                            pump(client.try_clone().unwrap(), server.try_clone().unwrap());
                            pump(server, client);
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        {
            let (stop, open, cuts, cutting) = (stop.clone(), open.clone(), cuts.clone(), cutting.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(cut_every);
                    if !cutting.load(Ordering::Relaxed) {
                        continue;
                    }
                    for stream in open.lock().unwrap().drain(..) {
                        let _ = stream.shutdown(Shutdown::Both);
                    }
                    cuts.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        CuttingProxy { addr, stop, cutting, cuts }
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

#[test]
fn idempotent_producer_survives_cut_connections_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy_addr = proxy_listener.local_addr().unwrap();
    // Clients learn the broker's address from Metadata: advertise the proxy's.
    let broker = TestBroker::start_with(BrokerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: Some(proxy_addr.to_string()),
        ..BrokerConfig::default()
    });
    let proxy = CuttingProxy::start(proxy_listener, broker.addr, Duration::from_millis(40));
    let brokers = proxy.addr.to_string();

    let producer = producer(
        &brokers,
        &[
            ("enable.idempotence", "true"),
            ("acks", "all"),
            ("max.in.flight.requests.per.connection", "5"),
            ("retry.backoff.ms", "10"),
            ("reconnect.backoff.ms", "10"),
            ("reconnect.backoff.max.ms", "100"),
            ("batch.size", "16384"),
            ("message.timeout.ms", "120000"),
        ],
    );
    let sent: Vec<Sent> = (0..100_000).map(record_for).collect();
    let started = Instant::now();
    produce_all(&producer, "exactly-once", &sent);
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    assert!(cuts >= 3, "the proxy cut connections only {cuts} times in {:?}", started.elapsed());
    proxy.cutting.store(false, Ordering::Relaxed);

    // Every record exactly once, in production order per partition (assert_same checks
    // both), and nothing else in the log.
    let got = consume_all(&brokers, "exactly-once", 1, sent.len(), Duration::from_secs(30));
    assert_same(&sent, &got);
    let (low, high) = consumer(&brokers).fetch_watermarks("exactly-once", 0, Duration::from_secs(5)).unwrap();
    assert_eq!((low, high), (0, sent.len() as i64), "duplicates were appended");
    drop(proxy);
    broker.stop();
}
