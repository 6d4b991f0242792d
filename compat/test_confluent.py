#!/usr/bin/env python3
"""keel compatibility test: confluent-kafka (Python binding over the bundled librdkafka).

Usage: test_confluent.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

This file covers the data path only: the producer sets enable.idempotence=false and the
consumer uses assign() with explicit offsets and never commits (group.id is set only because
librdkafka's Consumer requires one). Groups, idempotence and admin APIs are covered by
test_confluent_groups.py and test_confluent_admin.py.

Checks, per compression codec (none/gzip/snappy/lz4/zstd), on a fresh 3-partition topic:
produce ~400 keyed records with headers and explicit CreateTime timestamps (acks=all),
consume them back from the beginning of every partition and compare count, partition,
offset, key, value, headers and timestamp byte-for-byte and in per-partition order; then
get_watermark_offsets, offsets_for_times (ListOffsets by timestamp) and assign() at an
explicit mid-partition offset. It also checks, from librdkafka's statistics (bytes sent), that
each codec was really used: librdkafka quietly sends uncompressed batches when it concludes
from ApiVersions that the broker cannot take a codec.
"""

import json
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 3
PER_CODEC = 400  # 5 codecs x 400 = 2000 records in all
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Explicit CreateTime timestamps (ms), strictly increasing per partition. They must be recent:
# the broker's default time retention (retention.ms, 7 days, as in Kafka) deletes segments whose
# newest timestamp is older than that, and would (correctly) delete the test's own records.
BASE_TS = (int(time.time()) - 3600) * 1000


def log(msg):
    print(f"[confluent] {msg}", flush=True)


def fail(msg):
    print(f"[confluent] FAIL: {msg}", flush=True)
    sys.exit(1)


def rd_log(logger_name):
    """A logging.Logger-like sink so librdkafka errors end up in the test output."""
    import logging

    logger = logging.getLogger(logger_name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"[confluent] rdkafka {logger_name}: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    return logger


def create_topic(admin, name):
    futures = admin.create_topics([NewTopic(name, num_partitions=PARTITIONS, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=20)
    # Metadata must show the topic with all its partitions.
    md = admin.list_topics(topic=name, timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None:
        fail(f"topic {name} not in metadata after create: {t and t.error}")
    if len(t.partitions) != PARTITIONS:
        fail(f"topic {name}: {len(t.partitions)} partitions in metadata, want {PARTITIONS}")


def make_records(codec):
    """Deterministic records: (partition, key, value, headers, timestamp_ms)."""
    records = []
    for i in range(PER_CODEC):
        key = f"{codec}-key-{i}".encode()
        # Binary-ish, variable-length, compressible and not: exercises byte-for-byte checks.
        value = (f"{codec}-value-{i}-".encode() + bytes((i * 7 + j) % 256 for j in range(i % 97))
                 + b"x" * (i % 13) * 10)
        headers = [("h-index", str(i).encode()), ("h-codec", codec.encode()),
                   ("h-bin", bytes([0, 255, i % 256]))]
        if i % 50 == 0:
            headers.append(("h-empty", b""))
        records.append((i % PARTITIONS, key, value, headers, BASE_TS + i * 10))
    # Two edge cases: a null key and an empty (non-null) value.
    records.append((0, None, b"null-key", [("h-index", b"nk")], BASE_TS + PER_CODEC * 10))
    records.append((1, b"empty-value", b"", [], BASE_TS + PER_CODEC * 10 + 10))
    return records


def produce(bootstrap, topic, codec, records):
    """Produces and checks delivery reports; returns (records per partition, bytes sent)."""
    stats = []
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": False,
        "acks": "all",
        "compression.type": codec,
        "linger.ms": 5,
        "batch.num.messages": 100,  # several batches per partition
        "message.timeout.ms": 30000,
        "broker.address.family": "v4",
        "statistics.interval.ms": 100,
        "stats_cb": lambda js: stats.append(js),
    }, logger=rd_log(f"producer-{codec}"))
    errors = []
    delivered = {}  # index -> (partition, offset)

    def on_delivery(idx):
        def cb(err, msg):
            if err is not None:
                errors.append(f"record {idx}: {err}")
            else:
                delivered[idx] = (msg.partition(), msg.offset())
        return cb

    for idx, (part, key, value, headers, ts) in enumerate(records):
        while True:
            try:
                producer.produce(topic, value=value, key=key, partition=part, headers=headers,
                                 timestamp=ts, on_delivery=on_delivery(idx))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        fail(f"{codec}: {remaining} records not delivered after flush(30)")
    if errors:
        fail(f"{codec}: delivery errors: {errors[:5]}")
    if len(delivered) != len(records):
        fail(f"{codec}: {len(delivered)} delivery reports, want {len(records)}")
    # Offsets reported to the producer must be dense 0.. per partition, in produce order.
    next_offset = [0] * PARTITIONS
    for idx, (part, *_rest) in enumerate(records):
        got_part, got_off = delivered[idx]
        if got_part != part or got_off != next_offset[part]:
            fail(f"{codec}: record {idx} delivered to {got_part}@{got_off}, "
                 f"want {part}@{next_offset[part]}")
        next_offset[part] += 1
    # Bytes actually sent to the broker, from librdkafka's statistics: lets the caller check
    # that the codec was really used (librdkafka silently falls back to no compression when
    # it thinks the broker cannot take compressed batches).
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        producer.poll(0.1)
        if stats and json.loads(stats[-1]).get("txmsgs", 0) >= len(records):
            break
    if not stats:
        fail(f"{codec}: no producer statistics")
    st = json.loads(stats[-1])
    sent = sum(b.get("txbytes", 0) for b in st["brokers"].values() if b.get("nodeid", -1) >= 0)
    return next_offset, sent


def consume_all(bootstrap, topic, codec, expected_counts):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"keel-compat-unused-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "error",  # we always give explicit offsets
        "broker.address.family": "v4",
        "fetch.max.bytes": 1 << 20,
        "max.partition.fetch.bytes": 64 * 1024,  # several fetches per partition
        "check.crcs": True,
    }, logger=rd_log(f"consumer-{codec}"))
    try:
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(PARTITIONS)])
        got = {p: [] for p in range(PARTITIONS)}
        total = sum(expected_counts)
        deadline = time.monotonic() + 30
        while sum(len(v) for v in got.values()) < total:
            if time.monotonic() > deadline:
                fail(f"{codec}: consumed {sum(len(v) for v in got.values())} of {total} "
                     f"records within 30s")
            msgs = consumer.consume(num_messages=500, timeout=1.0)
            for m in msgs:
                if m.error():
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    fail(f"{codec}: consume error: {m.error()}")
                got[m.partition()].append(m)
        # Nothing beyond what we produced.
        extra = consumer.consume(num_messages=10, timeout=0.5)
        extra = [m for m in extra if not m.error()]
        if extra:
            fail(f"{codec}: {len(extra)} unexpected extra records, first at "
                 f"{extra[0].partition()}@{extra[0].offset()}")
        return got
    finally:
        consumer.close()


def norm_headers(h):
    return [(k, v if v is not None else b"") for k, v in (h or [])]


def check(codec, records, got):
    idx_by_part = {p: [] for p in range(PARTITIONS)}
    for idx, rec in enumerate(records):
        idx_by_part[rec[0]].append(idx)
    for p in range(PARTITIONS):
        if len(got[p]) != len(idx_by_part[p]):
            fail(f"{codec}: partition {p}: {len(got[p])} records, want {len(idx_by_part[p])}")
        for off, (idx, m) in enumerate(zip(idx_by_part[p], got[p])):
            _, key, value, headers, ts = records[idx]
            where = f"{codec}: partition {p} offset {m.offset()} (record {idx})"
            if m.offset() != off:
                fail(f"{where}: offset {m.offset()}, want {off} (order/gap)")
            if m.key() != key:
                fail(f"{where}: key {m.key()!r}, want {key!r}")
            if m.value() != value:
                fail(f"{where}: value mismatch: got {len(m.value() or b'')} bytes "
                     f"{(m.value() or b'')[:40]!r}, want {len(value)} bytes {value[:40]!r}")
            if norm_headers(m.headers()) != norm_headers(headers):
                fail(f"{where}: headers {m.headers()!r}, want {headers!r}")
            ts_type, ts_val = m.timestamp()
            if ts_type != confluent_kafka.TIMESTAMP_CREATE_TIME or ts_val != ts:
                fail(f"{where}: timestamp ({ts_type}, {ts_val}), want (CREATE_TIME, {ts})")


def check_offsets(bootstrap, topic, codec, records, counts):
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "keel-compat-unused",
        "enable.auto.commit": False,
        "broker.address.family": "v4",
    }, logger=rd_log(f"offsets-{codec}"))
    try:
        for p in range(PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                       cached=False)
            if (low, high) != (0, counts[p]):
                fail(f"{codec}: watermarks of partition {p} = ({low}, {high}), "
                     f"want (0, {counts[p]})")
        # offsets_for_times: for a sample of records, the first offset with timestamp >= ts
        # must be that record's own offset (timestamps are strictly increasing per partition).
        offset_of = {}
        next_off = [0] * PARTITIONS
        for idx, rec in enumerate(records):
            offset_of[idx] = next_off[rec[0]]
            next_off[rec[0]] += 1
        for idx in [0, 1, 2, 3, 151, 299, 300, len(records) - 2, len(records) - 1]:
            part, _, _, _, ts = records[idx]
            for query_ts, want in [(ts, offset_of[idx]), (ts - 1, offset_of[idx])]:
                res = consumer.offsets_for_times([TopicPartition(topic, part, query_ts)],
                                                 timeout=10)
                if res[0].error is not None or res[0].offset != want:
                    fail(f"{codec}: offsets_for_times(partition {part}, ts {query_ts}) = "
                         f"{res[0].offset} err={res[0].error}, want {want}")
        # A timestamp before everything -> offset 0; after everything -> -1 (no such offset;
        # librdkafka reports OFFSET_END = -1).
        for p in range(PARTITIONS):
            res = consumer.offsets_for_times([TopicPartition(topic, p, BASE_TS - 100_000)],
                                             timeout=10)
            if res[0].error is not None or res[0].offset != 0:
                fail(f"{codec}: offsets_for_times(partition {p}, early ts) = {res[0].offset} "
                     f"err={res[0].error}, want 0")
            res = consumer.offsets_for_times([TopicPartition(topic, p, BASE_TS + 10**9)],
                                             timeout=10)
            if res[0].error is not None or res[0].offset != -1:
                fail(f"{codec}: offsets_for_times(partition {p}, future ts) = {res[0].offset} "
                     f"err={res[0].error}, want -1 (OFFSET_END)")
    finally:
        consumer.close()


def consume_from_middle(bootstrap, topic, codec, records):
    """assign() at an explicit non-zero offset (inside a compressed batch for most codecs)."""
    part = 2
    start = 57
    want = [r for r in records if r[0] == part][start:start + 5]
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "keel-compat-unused",
        "enable.auto.commit": False,
        "broker.address.family": "v4",
    }, logger=rd_log(f"seek-{codec}"))
    try:
        consumer.assign([TopicPartition(topic, part, start)])
        got = []
        deadline = time.monotonic() + 15
        while len(got) < len(want) and time.monotonic() < deadline:
            m = consumer.poll(1.0)
            if m is None or m.error():
                continue
            got.append(m)
        if len(got) < len(want):
            fail(f"{codec}: from offset {start}: got {len(got)} records, want {len(want)}")
        for i, (m, r) in enumerate(zip(got, want)):
            if m.offset() != start + i or m.key() != r[1] or m.value() != r[2]:
                fail(f"{codec}: from offset {start}: record {i} is {m.offset()} {m.key()!r}, "
                     f"want {start + i} {r[1]!r}")
    finally:
        consumer.close()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    bootstrap = sys.argv[1]
    log(f"confluent-kafka {confluent_kafka.__version__}, "
        f"librdkafka {confluent_kafka.libversion()[0]}")
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"},
                        logger=rd_log("admin"))
    run = uuid.uuid4().hex[:8]
    total = 0
    sent_by_codec = {}
    problems = []
    for codec in CODECS:
        topic = f"compat-confluent-{codec}-{run}"
        started = time.monotonic()
        create_topic(admin, topic)
        records = make_records(codec)
        counts, sent = produce(bootstrap, topic, codec, records)
        sent_by_codec[codec] = sent
        if codec != "none" and not sent < 0.8 * sent_by_codec["none"]:
            # Recorded, not fatal at once, so the remaining codecs still run.
            problems.append(f"{codec}: producer sent {sent} bytes vs {sent_by_codec['none']} "
                            f"with no compression: librdkafka did not compress (run with "
                            f"debug=feature,msg to see why)")
            log(f"ERROR: {problems[-1]}")
        got = consume_all(bootstrap, topic, codec, counts)
        check(codec, records, got)
        check_offsets(bootstrap, topic, codec, records, counts)
        consume_from_middle(bootstrap, topic, codec, records)
        total += len(records)
        log(f"round-trip ok: codec={codec}: {len(records)} records over {PARTITIONS} partitions "
            f"{counts} round-tripped, {sent} bytes sent ({time.monotonic() - started:.1f}s)")
    if problems:
        fail("; ".join(problems))
    log(f"all checks passed ({total} records)")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        fail(f"KafkaException: {e}")
