#!/usr/bin/env python3
"""keel compatibility test: kafka-python (a pure-Python implementation of the protocol).

Usage: test_kafka_python.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

api_version is left to auto-detection (kafka-python sends ApiVersions and picks request
versions from the answer). This file covers the data path only: the consumer uses assign()
with group_id=None and no auto-commit; groups and admin APIs are covered by
test_kafka_python_groups.py and test_kafka_python_admin.py.

Checks: KafkaAdminClient create_topics (2 partitions) and delete_topics; KafkaProducer with
acks='all'/1/0 and compression none/gzip/lz4, keys, headers and explicit timestamps;
KafkaConsumer assign() + seek_to_beginning reading everything back byte-for-byte and in
per-partition order; beginning_offsets, end_offsets, offsets_for_times.
"""

import logging
import sys
import time
import uuid

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError

PARTITIONS = 2
# Recent explicit timestamps: older ones would be (correctly) removed by the broker's default
# 7-day time retention.
BASE_TS = (int(time.time()) - 3600) * 1000

# (compression, acks, number of records) -- all go to one topic, in this order.
PHASES = [
    (None, "all", 300),
    ("gzip", "all", 300),
    ("lz4", "all", 200),
    (None, 1, 200),
    ("gzip", 1, 200),
    (None, 0, 100),
]


def log(msg):
    print(f"[kafka-python] {msg}", flush=True)


def fail(msg):
    print(f"[kafka-python] FAIL: {msg}", flush=True)
    sys.exit(1)


def make_records():
    records = []  # (partition, key, value, headers, timestamp_ms)
    i = 0
    for phase, (codec, acks, n) in enumerate(PHASES):
        for _ in range(n):
            key = f"kp-key-{i}".encode()
            value = (f"kp-{codec}-{acks}-value-{i}|".encode()
                     + bytes((i * 31 + j) % 256 for j in range(i % 61)) + b"z" * (i % 9) * 8)
            headers = [("idx", str(i).encode()), ("phase", str(phase).encode())]
            if i % 40 == 0:
                headers.append(("bin", bytes([0, 1, 2, 255])))
            records.append((i % PARTITIONS, key, value, headers, BASE_TS + i))
            i += 1
    records.append((0, None, b"null-key", [], BASE_TS + i))
    records.append((1, b"empty-value", b"", [("e", b"")], BASE_TS + i + 1))
    return records


def produce(bootstrap, topic, records):
    pos = 0
    detected = None
    for phase, (codec, acks, n) in enumerate(PHASES):
        if phase == len(PHASES) - 1:
            n += 2  # the two edge-case records ride along with the last phase
        producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks=acks,
            compression_type=codec,
            enable_idempotence=False,  # keel has no InitProducerId yet
            linger_ms=5,
            batch_size=4096,  # several batches per partition
            request_timeout_ms=15000,
            max_block_ms=15000,
            retries=0,  # a retry could duplicate or reorder; the broker must just work
        )
        detected = producer.config["api_version"]
        futures = []
        for part, key, value, headers, ts in records[pos:pos + n]:
            futures.append(producer.send(topic, value=value, key=key, partition=part,
                                         headers=headers, timestamp_ms=ts))
        producer.flush(timeout=20)
        if acks == 0:
            # Client bug, not a broker one (kafka-python 2.1 to 2.3.3): KafkaClient.send() only
            # schedules a connection for writing when the request's future is not yet done
            # ("if not future.is_done: self._sending.add(conn)" in kafka/client_async.py), and
            # an acks=0 Produce future is completed at once. The request bytes then sit in the
            # connection's buffer until some other request goes out on that connection; with
            # nothing else to send, close() drops them and no Produce ever reaches the broker
            # (verified with a logging TCP proxy). Push the buffered bytes out explicitly.
            for conn in list(producer._sender._client._conns.values()):
                if conn.connected():
                    conn.send_pending_requests()
        for j, f in enumerate(futures):
            try:
                md = f.get(timeout=10)
            except KafkaError as e:
                fail(f"phase {phase} (compression={codec}, acks={acks}): record {pos + j} "
                     f"failed: {e!r}")
            if acks != 0:
                part = records[pos + j][0]
                want = sum(1 for r in records[:pos + j] if r[0] == part)
                if md.partition != part or md.offset != want:
                    fail(f"phase {phase}: record {pos + j} acked at {md.partition}@{md.offset}, "
                         f"want {part}@{want}")
        producer.close(timeout=10)
        pos += n
        log(f"produced phase {phase}: compression={codec} acks={acks} records={n}")
    if pos != len(records):
        fail(f"internal: produced {pos} of {len(records)}")
    return detected


def consume(bootstrap, topic, records):
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",  # we always seek explicitly
        consumer_timeout_ms=3000,
        max_partition_fetch_bytes=32 * 1024,  # several fetches per partition
        fetch_max_wait_ms=200,
        check_crcs=True,
    )
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        got = {p: [] for p in range(PARTITIONS)}
        deadline = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < len(records) and time.monotonic() < deadline:
            batch = consumer.poll(timeout_ms=1000, max_records=500)
            for tp, msgs in batch.items():
                got[tp.partition].extend(msgs)
        # Nothing beyond what was produced.
        extra = consumer.poll(timeout_ms=500)
        if any(extra.values()):
            fail(f"unexpected extra records: {extra}")
    finally:
        consumer.close()
    want = {p: [r for r in records if r[0] == p] for p in range(PARTITIONS)}
    for p in range(PARTITIONS):
        if len(got[p]) != len(want[p]):
            fail(f"partition {p}: consumed {len(got[p])} records, want {len(want[p])}")
        for off, (m, (_, key, value, headers, ts)) in enumerate(zip(got[p], want[p])):
            where = f"partition {p} offset {m.offset}"
            if m.offset != off:
                fail(f"{where}: want offset {off} (order/gap)")
            if m.key != key:
                fail(f"{where}: key {m.key!r}, want {key!r}")
            if m.value != value:
                fail(f"{where}: value {m.value[:40]!r} ({len(m.value)} bytes), "
                     f"want {value[:40]!r} ({len(value)} bytes)")
            if list(m.headers) != headers:
                fail(f"{where}: headers {m.headers!r}, want {headers!r}")
            if m.timestamp != ts or m.timestamp_type != 0:
                fail(f"{where}: timestamp {m.timestamp} type {m.timestamp_type}, "
                     f"want {ts} type 0 (CreateTime)")
    return {p: len(want[p]) for p in range(PARTITIONS)}


def check_offsets(bootstrap, topic, records, counts):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        begin = consumer.beginning_offsets(tps)
        end = consumer.end_offsets(tps)
        for tp in tps:
            if begin[tp] != 0 or end[tp] != counts[tp.partition]:
                fail(f"partition {tp.partition}: beginning/end offsets {begin[tp]}/{end[tp]}, "
                     f"want 0/{counts[tp.partition]}")
        offset_of, next_off = {}, [0] * PARTITIONS
        for idx, r in enumerate(records):
            offset_of[idx] = next_off[r[0]]
            next_off[r[0]] += 1
        for idx in [0, 1, 2, 299, 300, 301, 777, len(records) - 3, len(records) - 1]:
            part, _, _, _, ts = records[idx]
            tp = TopicPartition(topic, part)
            for query in (ts, ts - 1):
                res = consumer.offsets_for_times({tp: query})[tp]
                if res is None or res.offset != offset_of[idx] or res.timestamp != ts:
                    fail(f"offsets_for_times(partition {part}, {query}) = {res}, "
                         f"want offset {offset_of[idx]} timestamp {ts}")
        # After the newest timestamp: no such record -> None.
        res = consumer.offsets_for_times({tps[0]: BASE_TS + 10**9})
        if res[tps[0]] is not None:
            fail(f"offsets_for_times(future) = {res[tps[0]]}, want None")
    finally:
        consumer.close()


def topic_listed(bootstrap, topic):
    """Whether plain (consumer) metadata lists the topic."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        return topic in consumer.topics()
    finally:
        consumer.close()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    bootstrap = sys.argv[1]
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="[kafka-python] %(name)s %(levelname)s: %(message)s")
    log(f"kafka-python {kafka.__version__}")
    topic = f"compat-kafka-python-{uuid.uuid4().hex[:8]}"
    problems = []  # non-fatal failures: later checks still run, the test fails at the end
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        log(f"admin client api_version (auto-detected): {admin.config['api_version']}")
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                            timeout_ms=10000)
        if not topic_listed(bootstrap, topic):
            fail(f"created topic {topic} not in metadata")
        # KafkaAdminClient.list_topics sends Metadata (v8 here) with
        # include_cluster_authorized_operations and include_topic_authorized_operations set,
        # and decodes the answered bit fields into ACL operations.
        try:
            listed = admin.list_topics()
            if topic not in listed:
                problems.append(f"KafkaAdminClient.list_topics() does not list {topic}")
        except Exception as e:  # noqa: BLE001 -- report whatever the client raised
            problems.append(f"KafkaAdminClient.list_topics() raised {type(e).__name__}: {e} "
                            f"(authorized-operations bit fields in the Metadata response)")
        for p in problems:
            log(f"ERROR: {p}")
        records = make_records()
        detected = produce(bootstrap, topic, records)
        log(f"producer api_version (auto-detected): {detected}")
        counts = consume(bootstrap, topic, records)
        log(f"consumed {len(records)} records back, all equal ({counts})")
        check_offsets(bootstrap, topic, records, counts)
        log("beginning_offsets/end_offsets/offsets_for_times ok")
        admin.delete_topics([topic], timeout_ms=10000)
        deadline = time.monotonic() + 10
        while topic_listed(bootstrap, topic):
            if time.monotonic() > deadline:
                fail(f"topic {topic} still in metadata 10s after delete_topics")
            time.sleep(0.2)
        log("delete_topics ok")
    finally:
        admin.close()
    if problems:
        fail("; ".join(problems))
    log("all checks passed")


if __name__ == "__main__":
    main()
