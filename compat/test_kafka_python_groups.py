#!/usr/bin/env python3
"""keel compatibility test: consumer groups with kafka-python (its own pure-Python group
membership, assignors and offset commits; api_version auto-detected).

Usage: test_kafka_python_groups.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

On a fresh 6-partition topic holding 600 records (100 per partition):
  1. two KafkaConsumers subscribe() in one group (session_timeout_ms=6000,
     heartbeat_interval_ms=500, range assignor); their assignments must be disjoint, non-empty
     and cover all 6 partitions; both consume, committing synchronously after every poll;
  2. one consumer close()s (LeaveGroup); the other takes over all 6 partitions and finishes;
     every record must have been consumed (byte-for-byte), and no record must be consumed
     again once an offset past it was committed (a commit refused because of a rebalance --
     kafka-python raises CommitFailedError -- leaves its records uncommitted: those may be
     redelivered, as in Kafka);
  3. after all consumers closed, a new consumer in the group (auto_offset_reset='earliest', so
     missing commits would show as redelivery) starts from the committed offsets: committed()
     must be 100 per partition and it must consume nothing; then 10 more records are produced
     and it must get exactly those.
Both consumers of phase 1 are polled in turn from one thread with short poll timeouts; kafka-
python keeps a pending JoinGroup across poll() calls, so both join the same generation during
the broker's group.initial.rebalance.delay.ms (3 s, as in Kafka).
"""

import logging
import sys
import time
import uuid

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import CommitFailedError
from kafka.structs import OffsetAndMetadata

PARTITIONS = 6
PER_PARTITION = 100


def log(msg):
    print(f"[kafka-python-groups] {msg}", flush=True)


def fail(msg):
    print(f"[kafka-python-groups] FAIL: {msg}", flush=True)
    sys.exit(1)


def value_of(partition, offset):
    return f"kp-p{partition}-o{offset}-".encode() + bytes((partition * 17 + offset + j) % 256
                                                           for j in range(offset % 19))


def produce(bootstrap, topic, records):
    """records: [(partition, offset-to-be)]: the value encodes both."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=False, request_timeout_ms=15000,
                             max_block_ms=15000)
    try:
        futures = [(p, o, producer.send(topic, value=value_of(p, o), key=b"k", partition=p))
                   for p, o in records]
        producer.flush(timeout=20)
        for p, o, f in futures:
            md = f.get(timeout=10)
            if (md.partition, md.offset) != (p, o):
                fail(f"record for {p}@{o} acked at {md.partition}@{md.offset}")
    finally:
        producer.close(timeout=10)


class Listener(ConsumerRebalanceListener):
    def __init__(self, name, events):
        self.name, self.events = name, events

    def on_partitions_revoked(self, revoked):
        self.events.append((self.name, "revoke", sorted(tp.partition for tp in revoked)))

    def on_partitions_assigned(self, assigned):
        self.events.append((self.name, "assign", sorted(tp.partition for tp in assigned)))


def group_consumer(bootstrap, group, name):
    return KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        client_id=name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        partition_assignment_strategy=[RangePartitionAssignor],
        fetch_max_wait_ms=100,
        request_timeout_ms=15000,
    )


class GroupRun:
    def __init__(self, topic):
        self.topic = topic
        self.consumed = []        # (consumer name, partition, offset)
        self.committed = {}       # partition -> highest acknowledged committed next offset
        self.uncommitted = set()
        self.violations = []

    def poll(self, name, consumer, timeout_ms=50, max_records=10):
        batch = consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        upto, msgs = {}, []
        for tp, records in batch.items():
            for m in records:
                p, o = m.partition, m.offset
                if m.topic != self.topic or m.value != value_of(p, o):
                    fail(f"{name}: record {m.topic} {p}@{o} has value {m.value[:30]!r}, "
                         f"want {value_of(p, o)[:30]!r}")
                if o < self.committed.get(p, 0):
                    self.violations.append(f"{name} consumed {p}@{o} after offset "
                                           f"{self.committed[p]} of partition {p} was committed")
                self.consumed.append((name, p, o))
                msgs.append((p, o))
                upto[p] = max(upto.get(p, -1), o)
        if not upto:
            return
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o + 1, "", -1)
                   for p, o in upto.items()}
        try:
            consumer.commit(offsets)
        except CommitFailedError as e:
            log(f"{name}: commit refused during a rebalance ({e}); those records stay "
                f"uncommitted")
            self.uncommitted.update(msgs)
            return
        for p, o in upto.items():
            self.committed[p] = max(self.committed.get(p, 0), o + 1)

    def distinct(self):
        return {(p, o) for _, p, o in self.consumed}


def assigned(consumer):
    return {tp.partition for tp in consumer.assignment()}


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    bootstrap = sys.argv[1]
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="[kafka-python-groups] %(name)s %(levelname)s: %(message)s")
    log(f"kafka-python {kafka.__version__}")
    run = uuid.uuid4().hex[:8]
    topic = f"compat-kafka-python-groups-{run}"
    group = f"compat-kafka-python-group-{run}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)],
                            timeout_ms=10000)
    finally:
        admin.close()
    all_records = {(p, o) for p in range(PARTITIONS) for o in range(PER_PARTITION)}
    produce(bootstrap, topic, [(p, o) for o in range(PER_PARTITION) for p in range(PARTITIONS)])
    total = len(all_records)
    log(f"produced {total} records to {topic} ({PARTITIONS} partitions)")

    g = GroupRun(topic)
    events = []
    started = time.monotonic()
    ca = group_consumer(bootstrap, group, "consumer-a")
    cb = group_consumer(bootstrap, group, "consumer-b")
    ca.subscribe([topic], listener=Listener("consumer-a", events))
    cb.subscribe([topic], listener=Listener("consumer-b", events))

    # Phase 1: two members share the partitions.
    shares = None
    deadline = time.monotonic() + 40
    while True:
        if time.monotonic() > deadline:
            fail(f"phase 1: after 40s: {len(g.consumed)} consumed, shares seen: {shares}, "
                 f"events {events}, assignments now a={sorted(assigned(ca))} "
                 f"b={sorted(assigned(cb))}")
        g.poll("consumer-a", ca)
        g.poll("consumer-b", cb)
        sa, sb = assigned(ca), assigned(cb)
        if sa and sb:
            if sa & sb:
                fail(f"overlapping assignments: a={sorted(sa)} b={sorted(sb)}")
            if sa | sb == set(range(PARTITIONS)):
                shares = (sorted(sa), sorted(sb))
        by = {n for n, _, _ in g.consumed}
        if shares and by == {"consumer-a", "consumer-b"} and len(g.consumed) >= total // 2:
            break
    log(f"phase 1: two members, assignments a={shares[0]} b={shares[1]} (disjoint, all "
        f"{PARTITIONS}); {len(g.consumed)} records consumed "
        f"(a {sum(1 for n, _, _ in g.consumed if n == 'consumer-a')}, "
        f"b {sum(1 for n, _, _ in g.consumed if n == 'consumer-b')}) in "
        f"{time.monotonic() - started:.1f}s")

    # Phase 2: b leaves the group; a takes over and finishes.
    cb.close(autocommit=False)
    log("phase 2: consumer-b closed (left the group)")
    deadline = time.monotonic() + 30
    while len(g.distinct()) < total or assigned(ca) != set(range(PARTITIONS)):
        if time.monotonic() > deadline:
            missing = sorted(all_records - g.distinct())
            fail(f"phase 2: after 30s: {len(g.distinct())} of {total} distinct records "
                 f"consumed (missing e.g. {missing[:10]}), consumer-a assignment "
                 f"{sorted(assigned(ca))}, events {events}")
        g.poll("consumer-a", ca, timeout_ms=100, max_records=50)
    g.poll("consumer-a", ca, timeout_ms=500)  # nothing more
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    committed = {tp.partition: ca.committed(tp) for tp in tps}
    ca.close(autocommit=False)
    if g.violations:
        fail(f"committed records consumed again: {g.violations[:10]}")
    if g.distinct() - all_records:
        fail(f"consumed records never produced: {sorted(g.distinct() - all_records)[:10]}")
    if g.distinct() != all_records:
        fail(f"{len(g.distinct())} distinct records consumed, want {total}")
    if committed != {p: PER_PARTITION for p in range(PARTITIONS)}:
        fail(f"committed offsets after phase 2: {committed}, want {PER_PARTITION} everywhere")
    log(f"phase 2: consumer-a took over all {PARTITIONS} partitions; all {total} records "
        f"consumed, {len(g.consumed) - total} redelivered (of {len(g.uncommitted)} whose commit "
        f"was refused), no committed record consumed again; committed = {PER_PARTITION} per "
        f"partition; events {events}")

    # Phase 3: a new member of the now empty group resumes from the committed offsets.
    events.clear()
    cc = group_consumer(bootstrap, group, "consumer-c")
    cc.subscribe([topic], listener=Listener("consumer-c", events))
    try:
        g3 = GroupRun(topic)
        g3.committed = {p: PER_PARTITION for p in range(PARTITIONS)}
        deadline = time.monotonic() + 20
        while assigned(cc) != set(range(PARTITIONS)):
            if time.monotonic() > deadline:
                fail(f"phase 3: consumer-c not assigned all partitions within 20s: "
                     f"{sorted(assigned(cc))}, events {events}")
            g3.poll("consumer-c", cc, timeout_ms=100)
        settle = time.monotonic() + 1.5
        while time.monotonic() < settle:
            g3.poll("consumer-c", cc, timeout_ms=100)
        if g3.consumed:
            fail(f"phase 3: the new member consumed {len(g3.consumed)} already committed "
                 f"records, first {g3.consumed[0][1:]} (committed offsets not used)")
        got = {tp.partition: cc.committed(tp) for tp in tps}
        if got != {p: PER_PARTITION for p in range(PARTITIONS)}:
            fail(f"phase 3: committed() = {got}, want {PER_PARTITION} everywhere")
        next_off = {p: PER_PARTITION for p in range(PARTITIONS)}
        more = []
        for i in range(10):
            p = i % PARTITIONS
            more.append((p, next_off[p]))
            next_off[p] += 1
        produce(bootstrap, topic, more)
        deadline = time.monotonic() + 15
        while len(g3.consumed) < len(more) and time.monotonic() < deadline:
            g3.poll("consumer-c", cc, timeout_ms=200)
        g3.poll("consumer-c", cc, timeout_ms=1000)
        got = sorted((p, o) for _, p, o in g3.consumed)
        if got != sorted(more) or g3.violations:
            fail(f"phase 3: after producing 10 more the new member consumed {got}, want "
                 f"exactly {sorted(more)} {g3.violations[:3]}")
    finally:
        cc.close(autocommit=False)
    log(f"phase 3: a new member resumed from the committed offsets: nothing old, exactly the "
        f"10 new records ({time.monotonic() - started:.1f}s for the whole group scenario)")
    log("all checks passed")


if __name__ == "__main__":
    main()
