"""A three-node keel cluster under faults, driven by librdkafka (confluent-kafka).

    python test_cluster_failover.py path/to/keel [seconds]
    KILL=controller python test_cluster_failover.py ...   # SIGKILL the active controller instead

Starts three keel processes on free loopback ports (each a controller and a broker), creates a
topic with replication factor 3 and min.insync.replicas 2, and runs an idempotent acks=all
producer for `seconds` (default 60) and a consumer group member that commits as it goes, while it
  - kills the leader of partition 0 with SIGKILL, and restarts it 10 s later;
  - SIGSTOPs another node for 8 s, then SIGCONTs it (the group's coordinator, unless the kill
    already hits it).
The SIGSTOP outlasts the membership layer's suspicion timeout: while stopped, the node must be
declared dead by the others' SWIM views and fenced; after SIGCONT it must refute with a higher
incarnation, be seen alive everywhere and return to every ISR.
Afterwards every acknowledged record must be read back exactly once, in production order per
partition, and the group must have processed every record without ever being handed one below
an offset it had committed. Prints the longest time without a successful produce. Every process
it starts is stopped by PID on the way out.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

TOPIC = "failover"
GROUP = "failover-group"
PARTITIONS = 3
RATE = 1000  # records per second, spread over the partitions by key
GAP_LIMIT_S = 15.0  # a longer stall than this fails the test (the target is under 2 s)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, keel, node_id, controllers, kafka_port, work):
        self.keel, self.node_id, self.controllers = keel, node_id, controllers
        self.kafka = f"127.0.0.1:{kafka_port}"
        self.data = os.path.join(work, f"node-{node_id}")
        self.log = os.path.join(work, f"node-{node_id}.log")
        self.proc = None

    def start(self):
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(
                [self.keel, "serve", "--node-id", str(self.node_id), "--controllers", self.controllers,
                 "--listen", self.kafka, "--data-dir", self.data],
                stdout=log, stderr=subprocess.STDOUT)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self):
        if not self.proc:
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(what, check, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except KafkaException:
            pass
        time.sleep(0.2)
    raise SystemExit(f"FAIL: timed out waiting for {what}")


class GroupMember(threading.Thread):
    """One consumer in GROUP: processes records and commits synchronously every 100 records or
    0.5 s. A record handed out below an offset this member had committed is a lost commit."""

    def __init__(self, bootstrap):
        super().__init__(daemon=True)
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": GROUP, "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 500, "topic.metadata.refresh.interval.ms": 1000,
            "log.connection.close": False,
        })
        self.processed = set()  # (partition, offset)
        self.committed = {}  # partition -> next offset, as acknowledged by the coordinator
        self.redelivered_committed = []
        self.commit_failures = 0
        self.commits = 0
        self.stop_at = None  # the number of records to process before stopping
        self.done = threading.Event()

    def run(self):
        self.consumer.subscribe([TOPIC])
        last_commit = time.monotonic()
        pending = 0
        try:
            while not (self.stop_at is not None and len(self.processed) >= self.stop_at):
                msg = self.consumer.poll(0.1)
                if msg is not None and not msg.error():
                    p, o = msg.partition(), msg.offset()
                    if o < self.committed.get(p, 0):
                        self.redelivered_committed.append((p, o, self.committed[p]))
                    self.processed.add((p, o))
                    pending += 1
                if pending and (pending >= 100 or time.monotonic() - last_commit > 0.5):
                    last_commit = time.monotonic()
                    try:
                        for tp in self.consumer.commit(asynchronous=False) or []:
                            if tp.error is None and tp.offset >= 0:
                                self.committed[tp.partition] = max(self.committed.get(tp.partition, 0), tp.offset)
                        self.commits += 1
                        pending = 0
                    except KafkaException:
                        self.commit_failures += 1
        finally:
            self.consumer.close()
            self.done.set()


def active_controller(keel, controllers):
    """The node `keel cluster status` reports as the Raft leader (the active controller)."""
    status = subprocess.run([keel, "cluster", "status", "--controllers", controllers],
                            capture_output=True, text=True, timeout=20).stdout
    found = re.search(r"^\s*(\d+) at \S+: leader \(", status, re.MULTILINE)
    if not found:
        raise SystemExit(f"FAIL: no active controller in:\n{status}")
    return int(found.group(1))


def membership(keel, controllers):
    """{observer: {node: (status, incarnation)}} and {broker: state} from `keel cluster status`."""
    status = subprocess.run([keel, "cluster", "status", "--controllers", controllers],
                            capture_output=True, text=True, timeout=20).stdout
    views = {}
    for observer, view in re.findall(r"^\s*seen by (\d+): (.*)$", status, re.MULTILINE):
        views[int(observer)] = {int(n): (st, int(inc)) for n, st, inc in re.findall(r"(\d+) (\w+)@(\d+)", view)}
    brokers = {int(n): st for n, st in re.findall(r"^\s*(\d+): (active|fenced|shutting down),", status, re.MULTILINE)}
    return views, brokers


class MembershipWatch(threading.Thread):
    """Checks, from the outside, what the membership layer says about a SIGSTOPped node."""

    def __init__(self, keel, controllers, node, stopped_for):
        super().__init__(daemon=True)
        self.keel, self.controllers, self.node, self.stopped_for = keel, controllers, node, stopped_for
        self.declared_dead = None  # (incarnation, fenced) seen just before SIGCONT
        self.refuted = None  # seconds from SIGCONT until every view shows it alive, higher
        self.error = None

    def run(self):
        try:
            time.sleep(self.stopped_for - 1.5)
            views, brokers = membership(self.keel, self.controllers)
            dead = [v[self.node][1] for o, v in views.items() if o != self.node and v.get(self.node, ("",))[0] == "dead"]
            if not dead:
                self.error = f"node {self.node} stopped for {self.stopped_for - 1.5:.1f} s is not dead in any view: {views}"
                return
            self.declared_dead = (max(dead), brokers.get(self.node))
            time.sleep(1.5)  # SIGCONT comes now
            resumed = time.monotonic()
            while time.monotonic() - resumed < 30:
                views, _ = membership(self.keel, self.controllers)
                if len(views) == 3 and all(v.get(self.node, ("", 0))[0] == "alive" and
                                           v[self.node][1] > self.declared_dead[0] for v in views.values()):
                    self.refuted = time.monotonic() - resumed
                    return
                time.sleep(0.25)
            self.error = f"node {self.node} was not seen alive again at a higher incarnation: {views}"
        except Exception as e:  # a failed check must fail the test, not vanish with the thread
            self.error = f"membership check failed: {e!r}"


def main():
    keel = os.path.abspath(sys.argv[1])
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    work = tempfile.mkdtemp(prefix="keel-failover-")
    ids = [1, 2, 3]
    controllers = ",".join(f"{i}@127.0.0.1:{free_port()}" for i in ids)
    nodes = {i: Node(keel, i, controllers, free_port(), work) for i in ids}
    bootstrap = ",".join(n.kafka for n in nodes.values())
    try:
        for node in nodes.values():
            node.start()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        wait_for("three registered brokers",
                 lambda: len(admin.list_topics(timeout=2).brokers) == 3)
        futures = admin.create_topics([NewTopic(TOPIC, PARTITIONS, 3, config={"min.insync.replicas": "2"})],
                                      operation_timeout=10)
        futures[TOPIC].result(timeout=15)

        def fully_replicated():
            t = admin.list_topics(TOPIC, timeout=2).topics[TOPIC]
            return len(t.partitions) == PARTITIONS and all(
                p.leader >= 0 and len(p.isrs) == 3 for p in t.partitions.values())
        wait_for("three in-sync replicas", fully_replicated)
        leader0 = admin.list_topics(TOPIC, timeout=2).topics[TOPIC].partitions[0].leader
        victim_kind = os.environ.get("KILL", "leader")
        if victim_kind == "controller":
            leader0 = active_controller(keel, controllers)

        member = GroupMember(bootstrap)
        member.start()
        coordinator = []

        def group_coordinator():
            described = admin.describe_consumer_groups([GROUP])[GROUP].result(timeout=5)
            if described.coordinator is None or not described.members:
                return False
            coordinator[:] = [described.coordinator.id]
            return True
        wait_for("the consumer group to form", group_coordinator, timeout=60)
        stopped = coordinator[0] if coordinator[0] != leader0 else next(i for i in ids if i != leader0)
        print(f"cluster up: {bootstrap}; node {leader0} ({'the active controller' if victim_kind == 'controller' else 'leader of partition 0'}) "
              f"will be SIGKILLed; group {GROUP} coordinated by node {coordinator[0]}; node {stopped} will be SIGSTOPped")

        acked = []  # (partition, offset, value)
        ok_times = []
        errors = []
        lock = threading.Lock()

        def delivered(err, msg):
            now = time.monotonic()
            with lock:
                if err is None:
                    acked.append((msg.partition(), msg.offset(), msg.value().decode()))
                    ok_times.append(now)
                else:
                    errors.append(str(err))

        producer = Producer({
            "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 120000, "retry.backoff.ms": 50,
            "topic.metadata.refresh.interval.ms": 1000, "log.connection.close": False,
        })

        events = [
            (seconds * 0.15, f"SIGKILL node {leader0} ({'the active controller' if victim_kind == 'controller' else 'leader of partition 0'})",
             lambda: nodes[leader0].signal(signal.SIGKILL)),
            (seconds * 0.15 + 10, f"restart node {leader0}", lambda: nodes[leader0].start()),
            (seconds * 0.55, f"SIGSTOP node {stopped}", lambda: (nodes[stopped].signal(signal.SIGSTOP), watch.start())),
            (seconds * 0.55 + 8, f"SIGCONT node {stopped}", lambda: nodes[stopped].signal(signal.SIGCONT)),
        ]
        watch = MembershipWatch(keel, controllers, stopped, 8.0)
        start = time.monotonic()
        sent = 0
        while True:
            elapsed = time.monotonic() - start
            if elapsed >= seconds:
                break
            while events and elapsed >= events[0][0]:
                at, what, action = events.pop(0)
                print(f"{elapsed:6.1f}s {what}")
                action()
            while sent < elapsed * RATE:
                value = f"{sent}"
                producer.produce(TOPIC, key=str(sent % 64).encode(), value=value.encode(), on_delivery=delivered)
                sent += 1
            producer.poll(0.01)
        for _, what, action in events:
            print(f"late: {what}")
            action()
        remaining = producer.flush(120)
        if remaining:
            raise SystemExit(f"FAIL: {remaining} records still unacknowledged after 120 s")
        if errors:
            raise SystemExit(f"FAIL: {len(errors)} records failed, first: {errors[0]}")
        print(f"sent {sent}, acknowledged {len(acked)}")
        times = sorted(ok_times)
        gaps = sorted(((b - a, a - start) for a, b in zip(times, times[1:])), reverse=True)
        longest = gaps[0][0] if gaps else 0.0
        print(f"longest time without a successful produce: {longest:.2f} s")
        for gap, at in gaps[:3]:
            print(f"  {gap:5.2f} s from {at:5.1f} s")

        watch.join(40)
        if watch.error:
            raise SystemExit(f"FAIL: {watch.error}")
        if watch.declared_dead is None or watch.refuted is None:
            raise SystemExit("FAIL: the membership check did not finish")
        print(f"membership: node {stopped} declared dead at incarnation {watch.declared_dead[0]} "
              f"(broker {watch.declared_dead[1]}); after SIGCONT seen alive at a higher incarnation "
              f"everywhere {watch.refuted:.1f} s after the first look (about 0.3 s after SIGCONT)")
        if watch.declared_dead[1] != "fenced":
            raise SystemExit(f"FAIL: node {stopped}, declared dead, is {watch.declared_dead[1]}, not fenced")

        # The group member catches up with everything acknowledged.
        member.stop_at = len(acked)
        if not member.done.wait(90):
            raise SystemExit(f"FAIL: the group processed {len(member.processed)} of {len(acked)} records in 90 s")
        print(f"group: {len(member.processed)} records processed, {member.commits} commits, "
              f"{member.commit_failures} failed commits (retried)")
        if member.redelivered_committed:
            raise SystemExit(f"FAIL: the group was handed {len(member.redelivered_committed)} records below its "
                             f"committed offsets, first (partition, offset, committed): "
                             f"{member.redelivered_committed[0]}")
        missing = {(p, o) for p, o, _ in acked} - member.processed
        if missing:
            raise SystemExit(f"FAIL: the group never processed {len(missing)} acknowledged records, "
                             f"e.g. {sorted(missing)[:3]}")

        # Read everything back from the beginning.
        wait_for("three in-sync replicas again", fully_replicated, timeout=60)
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "failover-check",
                             "enable.auto.commit": False, "enable.partition.eof": False})
        consumer.assign([TopicPartition(TOPIC, p, 0) for p in range(PARTITIONS)])
        read = {}
        deadline = time.monotonic() + 60
        while len(read) < len(acked) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            read[(msg.partition(), msg.offset())] = msg.value().decode()
        consumer.close()

        values = list(read.values())
        if len(values) != len(set(values)):
            raise SystemExit("FAIL: some record was appended more than once")
        for partition, offset, value in acked:
            if read.get((partition, offset)) != value:
                raise SystemExit(f"FAIL: acknowledged record {value} at {partition}/{offset} reads back as "
                                 f"{read.get((partition, offset))!r}")
        for partition in range(PARTITIONS):
            order = [int(v) for (p, _), v in sorted(read.items()) if p == partition]
            if order != sorted(order):
                raise SystemExit(f"FAIL: partition {partition} is out of production order")
        if len(read) != sent:
            raise SystemExit(f"FAIL: read {len(read)} records but {sent} were sent and acknowledged")
        if longest > GAP_LIMIT_S:
            raise SystemExit(f"FAIL: producing stalled for {longest:.1f} s (limit {GAP_LIMIT_S} s)")
        print(f"OK: all {len(acked)} acknowledged records read back exactly once, in order")
    finally:
        for node in nodes.values():
            node.stop()
        if os.environ.get("KEEP_FAILOVER_LOGS"):
            print(f"logs in {work}")
        else:
            subprocess.run(["rm", "-rf", work], check=False)


if __name__ == "__main__":
    main()
