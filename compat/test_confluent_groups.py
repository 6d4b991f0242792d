#!/usr/bin/env python3
"""keel compatibility test: consumer groups and the idempotent producer with confluent-kafka
(Python binding over the bundled librdkafka).

Usage: test_confluent_groups.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

Group scenario, on a fresh 6-partition topic holding 600 records (100 per partition):
  1. two consumers subscribe() in one group (session.timeout.ms=6000,
     heartbeat.interval.ms=500, range assignor); their assignments must be disjoint, non-empty
     and cover all 6 partitions; both consume, committing synchronously after every batch;
  2. one consumer close()s (LeaveGroup); the other takes over all 6 partitions and finishes;
     every record must have been consumed (byte-for-byte), and no record must be consumed
     again once an offset past it was committed (a commit that the broker refuses because of
     a rebalance -- ILLEGAL_GENERATION, REBALANCE_IN_PROGRESS, UNKNOWN_MEMBER_ID -- leaves its
     records uncommitted, and those may be redelivered, as in Kafka);
  3. after all consumers closed, a new consumer in the same group (auto.offset.reset=earliest,
     so missing commits would show as redelivery) starts from the committed offsets: it must
     see committed() == 100 per partition and consume nothing; then 10 more records are
     produced and it must get exactly those.
The group's first rebalance waits group.initial.rebalance.delay.ms (3 s, as in Kafka), so each
new group generation from an empty group takes a few seconds.

Idempotent producer: enable.idempotence=true, acks=all, max.in.flight=5 and several batches
per partition; librdkafka must get a producer id (statistics "eos" section), every record is
delivered once at dense, in-order offsets, and the partitions hold exactly the records produced
(watermarks and a full read-back). A second producer gets a different producer id and appends
after the first one's records.
"""

import json
import logging
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

GROUP_PARTITIONS = 6
PER_PARTITION = 100
IDEMP_PARTITIONS = 3
IDEMP_RECORDS = 3000

# Commit errors Kafka answers when a commit races a rebalance; the records of such a commit
# stay uncommitted and may legitimately be consumed again by the next owner.
REBALANCE_COMMIT_ERRORS = {
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._ASSIGNMENT_LOST,
}


def log(msg):
    print(f"[confluent-groups] {msg}", flush=True)


def fail(msg):
    print(f"[confluent-groups] FAIL: {msg}", flush=True)
    sys.exit(1)


def rd_log(name):
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"[confluent-groups] rdkafka {name}: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    return logger


def create_topic(admin, name, partitions):
    futures = admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                                  operation_timeout=10, request_timeout=15)
    futures[name].result(timeout=20)
    md = admin.list_topics(topic=name, timeout=10)
    t = md.topics.get(name)
    if t is None or t.error is not None or len(t.partitions) != partitions:
        fail(f"topic {name} not in metadata with {partitions} partitions after create: "
             f"{t and (t.error, len(t.partitions))}")


def value_of(partition, offset):
    return f"p{partition}-o{offset}-".encode() + bytes((partition * 31 + offset + j) % 256
                                                        for j in range(offset % 23))


def produce_plain(bootstrap, topic, records):
    """records: [(partition, value)]; returns [(partition, offset)] in produce order."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False,
                         "acks": "all", "linger.ms": 5, "broker.address.family": "v4"},
                        logger=rd_log("producer"))
    delivered, errors = {}, []

    def cb(idx):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(f"record {idx}: {err}")
            else:
                delivered[idx] = (msg.partition(), msg.offset())
        return on_delivery

    for idx, (part, value) in enumerate(records):
        producer.produce(topic, value=value, key=b"k%d" % idx, partition=part, on_delivery=cb(idx))
        producer.poll(0)
    if producer.flush(30):
        fail("records not delivered within 30s")
    if errors or len(delivered) != len(records):
        fail(f"produce: {len(delivered)} of {len(records)} delivered, errors {errors[:5]}")
    return [delivered[i] for i in range(len(records))]


class GroupRun:
    """Bookkeeping over all consumers of the group: what was consumed and committed."""

    def __init__(self, topic):
        self.topic = topic
        self.consumed = []            # (consumer name, partition, offset)
        self.committed = {}           # partition -> highest committed next offset (acked)
        self.uncommitted = set()      # (partition, offset) whose commit the broker refused
        self.violations = []

    def process(self, name, consumer, msgs):
        """Checks and records a batch from one consumer, then commits it synchronously."""
        upto = {}
        for m in msgs:
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                fail(f"{name}: consume error: {m.error()}")
            p, o = m.partition(), m.offset()
            if m.topic() != self.topic or m.value() != value_of(p, o):
                fail(f"{name}: record {m.topic()} {p}@{o} has value {m.value()[:30]!r}, "
                     f"want {value_of(p, o)[:30]!r}")
            if o < self.committed.get(p, 0):
                self.violations.append(f"{name} consumed {p}@{o} after offset "
                                       f"{self.committed[p]} of partition {p} was committed")
            self.consumed.append((name, p, o))
            upto[p] = max(upto.get(p, -1), o)
        if not upto:
            return
        offsets = [TopicPartition(self.topic, p, o + 1) for p, o in sorted(upto.items())]
        refused = set()
        try:
            for tp in consumer.commit(offsets=offsets, asynchronous=False):
                if tp.error is not None:
                    if tp.error.code() not in REBALANCE_COMMIT_ERRORS:
                        fail(f"{name}: commit of {tp.partition}@{tp.offset} failed: {tp.error}")
                    refused.add(tp.partition)
        except KafkaException as e:
            err = e.args[0]
            if err.code() not in REBALANCE_COMMIT_ERRORS:
                fail(f"{name}: commit({offsets}) failed: {err}")
            refused = set(upto)
        if refused:
            log(f"{name}: commit of partitions {sorted(refused)} refused during a rebalance; "
                f"those records stay uncommitted")
        for p, o in upto.items():
            if p in refused:
                self.uncommitted.update((m.partition(), m.offset()) for m in msgs
                                        if not m.error() and m.partition() == p)
            else:
                self.committed[p] = max(self.committed.get(p, 0), o + 1)

    def distinct(self):
        return {(p, o) for _, p, o in self.consumed}


def group_consumer(bootstrap, group, name, events):
    def on_assign(consumer, partitions):
        events.append((name, "assign", sorted(tp.partition for tp in partitions)))

    def on_revoke(consumer, partitions):
        events.append((name, "revoke", sorted(tp.partition for tp in partitions)))

    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range",
        "fetch.wait.max.ms": 100,
        "broker.address.family": "v4",
    }, logger=rd_log(name))
    return c, on_assign, on_revoke


def assigned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def group_scenario(bootstrap, admin, run):
    topic = f"compat-confluent-groups-{run}"
    group = f"compat-confluent-group-{run}"
    create_topic(admin, topic, GROUP_PARTITIONS)
    records = [(p, value_of(p, o)) for o in range(PER_PARTITION) for p in range(GROUP_PARTITIONS)]
    produce_plain(bootstrap, topic, records)
    total = len(records)
    log(f"produced {total} records to {topic} ({GROUP_PARTITIONS} partitions)")

    g = GroupRun(topic)
    events = []
    ca, a_assign, a_revoke = group_consumer(bootstrap, group, "consumer-a", events)
    cb, b_assign, b_revoke = group_consumer(bootstrap, group, "consumer-b", events)
    ca.subscribe([topic], on_assign=a_assign, on_revoke=a_revoke)
    cb.subscribe([topic], on_assign=b_assign, on_revoke=b_revoke)
    started = time.monotonic()

    # Phase 1: both members share the partitions; stop at about half of the records, once both
    # were seen with disjoint non-empty assignments covering every partition and both consumed.
    shares = None
    deadline = time.monotonic() + 40
    while True:
        if time.monotonic() > deadline:
            fail(f"phase 1: after 40s: {len(g.consumed)} consumed, shares seen: {shares}, "
                 f"assignment events {events}, assignments now a={sorted(assigned(ca))} "
                 f"b={sorted(assigned(cb))}")
        for name, c in (("consumer-a", ca), ("consumer-b", cb)):
            g.process(name, c, c.consume(num_messages=10, timeout=0.05))
        sa, sb = assigned(ca), assigned(cb)
        if sa and sb:
            if sa & sb:
                fail(f"overlapping assignments: a={sorted(sa)} b={sorted(sb)}")
            if sa | sb == set(range(GROUP_PARTITIONS)):
                shares = (sorted(sa), sorted(sb))
        by = {n for n, _, _ in g.consumed}
        if shares and by == {"consumer-a", "consumer-b"} and len(g.consumed) >= total // 2:
            break
    log(f"phase 1: two members, assignments a={shares[0]} b={shares[1]} (disjoint, all "
        f"{GROUP_PARTITIONS}); {len(g.consumed)} records consumed "
        f"(a {sum(1 for n, _, _ in g.consumed if n == 'consumer-a')}, "
        f"b {sum(1 for n, _, _ in g.consumed if n == 'consumer-b')}) in "
        f"{time.monotonic() - started:.1f}s")

    # Phase 2: b leaves; a takes over every partition and finishes.
    cb.close()
    log("phase 2: consumer-b closed (left the group)")
    deadline = time.monotonic() + 30
    while len(g.distinct()) < total or assigned(ca) != set(range(GROUP_PARTITIONS)):
        if time.monotonic() > deadline:
            missing = sorted({(p, o) for p in range(GROUP_PARTITIONS)
                              for o in range(PER_PARTITION)} - g.distinct())
            fail(f"phase 2: after 30s: {len(g.distinct())} of {total} distinct records "
                 f"consumed (missing e.g. {missing[:10]}), consumer-a assignment "
                 f"{sorted(assigned(ca))}, events {events}")
        g.process("consumer-a", ca, ca.consume(num_messages=50, timeout=0.1))
    g.process("consumer-a", ca, ca.consume(num_messages=10, timeout=0.5))  # nothing more
    committed = ca.committed([TopicPartition(topic, p) for p in range(GROUP_PARTITIONS)],
                             timeout=10)
    ca.close()
    if g.violations:
        fail(f"committed records consumed again: {g.violations[:10]}")
    extra = g.distinct() - {(p, o) for p in range(GROUP_PARTITIONS) for o in range(PER_PARTITION)}
    if extra:
        fail(f"consumed records that were never produced: {sorted(extra)[:10]}")
    if len(g.distinct()) != total:
        fail(f"{len(g.distinct())} distinct records consumed, want {total}")
    got = {tp.partition: tp.offset for tp in committed}
    if got != {p: PER_PARTITION for p in range(GROUP_PARTITIONS)}:
        fail(f"committed offsets after phase 2: {got}, want {PER_PARTITION} everywhere")
    redelivered = len(g.consumed) - total
    log(f"phase 2: consumer-a took over all {GROUP_PARTITIONS} partitions; all {total} records "
        f"consumed, {redelivered} redelivered (of {len(g.uncommitted)} refused commits), no "
        f"committed record consumed again; committed() = {PER_PARTITION} per partition; "
        f"assignment events: {events}")

    # Phase 3: a new member of the (now empty) group starts from the committed offsets.
    events.clear()
    cc, c_assign, c_revoke = group_consumer(bootstrap, group, "consumer-c", events)
    cc.subscribe([topic], on_assign=c_assign, on_revoke=c_revoke)
    try:
        deadline = time.monotonic() + 20
        early = []
        while assigned(cc) != set(range(GROUP_PARTITIONS)):
            if time.monotonic() > deadline:
                fail(f"phase 3: consumer-c not assigned all partitions within 20s: "
                     f"{sorted(assigned(cc))}, events {events}")
            early += [m for m in cc.consume(num_messages=10, timeout=0.1) if not m.error()]
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            early += [m for m in cc.consume(num_messages=10, timeout=0.1) if not m.error()]
        if early:
            fail(f"phase 3: the new member consumed {len(early)} already committed records, "
                 f"first {early[0].partition()}@{early[0].offset()} (committed offsets not used)")
        tps = [TopicPartition(topic, p) for p in range(GROUP_PARTITIONS)]
        got = {tp.partition: tp.offset for tp in cc.committed(tps, timeout=10)}
        if got != {p: PER_PARTITION for p in range(GROUP_PARTITIONS)}:
            fail(f"phase 3: committed() = {got}, want {PER_PARTITION} everywhere")
        next_off = {p: PER_PARTITION for p in range(GROUP_PARTITIONS)}
        want = set()
        for i in range(10):
            p = i % GROUP_PARTITIONS
            want.add((p, next_off[p]))
            next_off[p] += 1
        produce_plain(bootstrap, topic, [(p, value_of(p, o)) for p, o in sorted(want)])
        g3 = GroupRun(topic)
        g3.committed = {p: PER_PARTITION for p in range(GROUP_PARTITIONS)}
        deadline = time.monotonic() + 15
        while len(g3.consumed) < len(want) and time.monotonic() < deadline:
            g3.process("consumer-c", cc, cc.consume(num_messages=10, timeout=0.2))
        g3.process("consumer-c", cc, cc.consume(num_messages=10, timeout=1.0))
        got = [(p, o) for _, p, o in g3.consumed]
        if sorted(got) != sorted(want) or g3.violations:
            fail(f"phase 3: after producing 10 more the new member consumed {sorted(got)}, "
                 f"want exactly {sorted(want)} {g3.violations[:3]}")
    finally:
        cc.close()
    log(f"phase 3: a new member resumed from the committed offsets: nothing old, exactly the "
        f"10 new records ({time.monotonic() - started:.1f}s for the whole group scenario)")


def idempotent_scenario(bootstrap, admin, run):
    topic = f"compat-confluent-idempotent-{run}"
    create_topic(admin, topic, IDEMP_PARTITIONS)
    next_off = [0] * IDEMP_PARTITIONS
    producer_ids = []
    expected = {}  # (partition, offset) -> value
    for round_no, n in enumerate((IDEMP_RECORDS, 300)):
        stats = []
        producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "max.in.flight.requests.per.connection": 5,
            "linger.ms": 2,
            "batch.num.messages": 100,  # many batches in flight per partition
            "message.timeout.ms": 30000,
            "broker.address.family": "v4",
            "statistics.interval.ms": 100,
            "stats_cb": stats.append,
        }, logger=rd_log(f"idempotent-producer-{round_no}"))
        if producer.list_topics(topic, timeout=10).topics[topic].error is not None:
            fail(f"no metadata for {topic}")
        delivered, errors = {}, []

        def cb(idx):
            def on_delivery(err, msg):
                if err is not None:
                    errors.append(f"record {idx}: {err}")
                else:
                    delivered[idx] = (msg.partition(), msg.offset())
            return on_delivery

        values = []
        for i in range(n):
            part = i % IDEMP_PARTITIONS
            value = f"idemp-{round_no}-{i}".encode() + b"." * (i % 37)
            values.append((part, value))
            while True:
                try:
                    producer.produce(topic, value=value, partition=part, on_delivery=cb(i))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        if producer.flush(30):
            fail(f"idempotent round {round_no}: records not delivered within 30s")
        if errors:
            fail(f"idempotent round {round_no}: delivery errors {errors[:5]}")
        for i, (part, value) in enumerate(values):
            if delivered.get(i) != (part, next_off[part]):
                fail(f"idempotent round {round_no}: record {i} delivered at {delivered.get(i)}, "
                     f"want {part}@{next_off[part]} (dense, in order)")
            expected[(part, next_off[part])] = value
            next_off[part] += 1
        deadline = time.monotonic() + 3
        eos = {}
        while time.monotonic() < deadline:
            producer.poll(0.1)
            if stats:
                eos = json.loads(stats[-1]).get("eos", {})
                if eos.get("idemp_state") == "Assigned":
                    break
        if eos.get("idemp_state") != "Assigned" or eos.get("producer_id", -1) < 0:
            fail(f"idempotent round {round_no}: librdkafka idempotence state {eos} (no "
                 f"producer id from InitProducerId?)")
        producer_ids.append((eos["producer_id"], eos["producer_epoch"]))
    if producer_ids[0][0] == producer_ids[1][0]:
        fail(f"two idempotent producers got the same producer id: {producer_ids}")

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"keel-compat-unused-{run}",
                         "enable.auto.commit": False, "broker.address.family": "v4"},
                        logger=rd_log("idempotent-check"))
    try:
        for p in range(IDEMP_PARTITIONS):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10,
                                                       cached=False)
            if (low, high) != (0, next_off[p]):
                fail(f"idempotent: watermarks of partition {p} = ({low}, {high}), want "
                     f"(0, {next_off[p]}): records appended {high - next_off[p]:+d} times "
                     f"more than produced")
        consumer.assign([TopicPartition(topic, p, confluent_kafka.OFFSET_BEGINNING)
                         for p in range(IDEMP_PARTITIONS)])
        got = {}
        deadline = time.monotonic() + 20
        while len(got) < len(expected) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error():
                    continue
                key = (m.partition(), m.offset())
                if key in got:
                    fail(f"idempotent: {key} delivered twice to the consumer")
                got[key] = m.value()
        if got != expected:
            diff = sorted(k for k in set(got) | set(expected) if got.get(k) != expected.get(k))
            fail(f"idempotent: read back {len(got)} records, want {len(expected)}; first "
                 f"differences at {diff[:5]}")
    finally:
        consumer.close()
    log(f"idempotent producer: {len(expected)} records appended exactly once "
        f"(producer id/epoch {producer_ids}), dense offsets {next_off}")


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
    group_scenario(bootstrap, admin, run)
    idempotent_scenario(bootstrap, admin, run)
    log("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        fail(f"KafkaException: {e}")
