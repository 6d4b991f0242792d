"""Shared parts of the real-process cluster tests: keel nodes as child processes, bounded waits,
an acknowledged-records producer and an exactly-once read-back check (confluent-kafka).

Every process a test starts is a `Node`; `Cluster.close` stops them all by PID, so a test calls it
in a `finally` block. A check that fails raises `Failure` with a sentence for the operator.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka.conn import BrokerConnection
from kafka.protocol.metadata import MetadataRequest

STOP_TIMEOUT_S = 20.0  # a SIGTERMed node must exit within this (the controlled shutdown waits 5 s)
# The node log lines a failure prints.
LOG_PATTERN = r"WARN|ERROR|elect|truncat|registered|unclean|snapshot|leader epoch|==== test"


class Failure(Exception):
    """A check failed; the message says what was expected and what happened."""


class NotYet(Exception):
    """What a `wait_for` check raises to be asked again (as for a KafkaException)."""


def main(name, make_cluster, scenario):
    """Runs `scenario(cluster)` (which returns what PASS should say) on the cluster that
    `make_cluster(work)` describes, in a fresh work directory; prints PASS or FAIL and, on FAIL,
    the matching lines of every node's log; always stops every node; exits 0 on PASS."""

    def terminated(signum, frame):
        raise Failure(f"terminated by signal {signum} (the suite's timeout?)")
    signal.signal(signal.SIGTERM, terminated)
    work = tempfile.mkdtemp(prefix=f"keel-{name}-")
    cluster = make_cluster(work)
    ok = False
    try:
        print(f"PASS: {scenario(cluster)}")
        ok = True
    except Failure as e:
        print(f"FAIL: {e}")
    except Exception as e:  # a client error or a bug in the test: still a failure, with the logs
        print(f"FAIL: {e!r}")
    finally:
        cluster.close()
        if not ok:
            print(cluster.log_excerpt(LOG_PATTERN))
        if os.environ.get("KEEP_CLUSTER_LOGS") or not ok:
            print(f"logs in {work}")
        else:
            subprocess.run(["rm", "-rf", work], check=False)
    sys.exit(0 if ok else 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, timeout):
    """Polls `check` until it returns a true value (returned) or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except (KafkaException, NotYet):
            pass
        time.sleep(0.2)
    raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")


class Node:
    """One `keel serve` process on loopback ports; `extra` are further serve flags."""

    def __init__(self, keel, node_id, controllers, work, extra=()):
        self.keel, self.node_id, self.controllers, self.extra = keel, node_id, controllers, list(extra)
        self.kafka = f"127.0.0.1:{free_port()}"
        self.data = os.path.join(work, f"node-{node_id}")
        self.log = os.path.join(work, f"node-{node_id}.log")
        self.proc = None

    def start(self):
        assert not self.running(), f"node {self.node_id} is already running"
        with open(self.log, "a") as log:
            log.write(f"==== test: starting node {self.node_id} at {time.strftime('%H:%M:%S', time.gmtime())}Z\n")
            log.flush()
            self.proc = subprocess.Popen(
                [self.keel, "serve", "--node-id", str(self.node_id), "--controllers", self.controllers,
                 "--listen", self.kafka, "--data-dir", self.data, *self.extra],
                stdout=log, stderr=subprocess.STDOUT)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        """SIGKILL, as a crash or a pulled power cord."""
        if self.running():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def terminate(self):
        """SIGTERM: a clean stop (see `stop`)."""
        if self.running():
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)

    def stop(self):
        """SIGTERM and a bounded wait; returns the exit status (None if it had to be killed)."""
        if not self.running():
            return self.proc.returncode if self.proc else 0
        self.terminate()
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def swap_disk(self):
        """Replaces the data directory with an empty one, as after a disk replacement."""
        assert not self.running(), "swap the disk of a stopped node"
        subprocess.run(["rm", "-rf", self.data], check=True)
        os.mkdir(self.data)


class Cluster:
    """Nodes `voters` run the controller and broker roles; `broker_only` nodes only the broker's."""

    def __init__(self, keel, work, voters, broker_only=(), extra=()):
        self.keel, self.work = keel, work
        self.controllers = ",".join(f"{i}@127.0.0.1:{free_port()}" for i in voters)
        self.nodes = {i: Node(keel, i, self.controllers, work, extra) for i in voters}
        for i in broker_only:
            self.nodes[i] = Node(keel, i, self.controllers, work, [*extra, "--process-roles", "broker"])
        self.bootstrap = ",".join(n.kafka for n in self.nodes.values())
        self.started = time.monotonic()

    def elapsed(self):
        return time.monotonic() - self.started

    def say(self, text):
        """Prints a step with the time since the start and the UTC time the node logs use."""
        now = time.time()
        wall = time.strftime("%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 10)}"
        print(f"{self.elapsed():6.1f}s ({wall}Z) {text}", flush=True)

    def admin(self, nodes=None):
        """An AdminClient bootstrapped from `nodes` (default: all)."""
        chosen = nodes or self.nodes.keys()
        return AdminClient({"bootstrap.servers": ",".join(self.nodes[i].kafka for i in chosen),
                            "log.connection.close": False})

    def partitions(self, admin, topic, count):
        """{partition: (leader, replicas, isr)} as a broker's metadata shows them; NotYet unless
        it shows `count` partitions."""
        found = admin.list_topics(topic, timeout=5).topics[topic]
        if len(found.partitions) != count:
            raise NotYet(f"metadata shows {len(found.partitions)} partitions of {topic}: {found.error}")
        return {p: (info.leader, list(info.replicas), sorted(info.isrs)) for p, info in found.partitions.items()}

    def status(self, topic):
        """`keel cluster status`: the brokers, and `topic`'s under-replicated and leaderless
        partitions (with their ISR and ELR)."""
        out = subprocess.run([self.keel, "cluster", "status", "--controllers", self.controllers],
                             capture_output=True, text=True, timeout=30).stdout
        lines = []
        for line in out.splitlines():
            if re.match(r"\s*(brokers|\d+: )", line):
                lines.append(line)
            found = re.match(r"\s*(under-replicated|leaderless): (.*)", line)
            if found:
                mine = [p for p in found.group(2).split("; ") if p.startswith(f"{topic}-")]
                lines.append(f"  {found.group(1)}: {'; '.join(mine) or 'none'}")
        return re.sub(r"NodeId\((\d+)\)", r"\1", "\n".join(lines))

    def close(self):
        """Stops every node (SIGTERM to all, then a bounded wait for each)."""
        for node in self.nodes.values():
            node.terminate()
        for node in self.nodes.values():
            node.stop()

    def log_excerpt(self, pattern, lines=25):
        """The last `lines` lines of every node's log matching `pattern` (with test markers)."""
        out = []
        for node in self.nodes.values():
            if not os.path.exists(node.log):
                continue
            with open(node.log, errors="replace") as log:
                hits = [line.rstrip()[:400] for line in log if re.search(pattern, line)]
            out.append(f"---- node {node.node_id} ({node.log})")
            out.extend(hits[-lines:])
        return "\n".join(out)


def node_metadata(address, topic, timeout=2.0):
    """What one broker answers a Metadata request (v7) for `topic` with, asked directly over
    kafka-python's connection (librdkafka does not show leader epochs):
    ({broker ids}, {partition: (error code, leader, leader epoch, isr)}), or None if it is not
    answering yet."""
    host, port = address.rsplit(":", 1)
    conn = BrokerConnection(host, int(port), socket.AF_INET, api_version=(2, 5), client_id="keel-compat",
                            request_timeout_ms=int(timeout * 1000))
    try:
        conn.connect_blocking(timeout)
        if not conn.connected():
            return None
        future = conn.send(MetadataRequest[7](topics=[topic], allow_auto_topic_creation=False))
        deadline = time.monotonic() + timeout
        while not future.is_done and time.monotonic() < deadline:
            for response, done in conn.recv():  # the connection leaves completing futures to its caller
                done.success(response)
            time.sleep(0.005)
        if not future.succeeded():
            return None
        response = future.value
        partitions = {}
        for _, name, _, topic_partitions in response.topics:
            if name == topic:
                for error, index, leader, leader_epoch, _, isr, _ in topic_partitions:
                    partitions[index] = (error, leader, leader_epoch, sorted(isr))
        return {b[0] for b in response.brokers}, partitions
    except OSError:
        return None
    finally:
        conn.close()


def produce_acked(bootstrap, topic, count, tag, timeout=90.0):
    """Produces `count` records (key tag-i, value tag-value-i) with acks=all and idempotence; returns
    {(key, value): partition} of the acknowledged ones and fails unless all were acknowledged."""
    acked, errors = {}, []

    def delivered(err, msg):
        if err is None:
            acked[(msg.key().decode(), msg.value().decode())] = msg.partition()
        else:
            errors.append(str(err))

    producer = Producer({
        "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
        "linger.ms": 5, "message.timeout.ms": int(timeout * 1000), "retry.backoff.ms": 50,
        "topic.metadata.refresh.interval.ms": 1000, "log.connection.close": False,
    })
    for i in range(count):
        while True:
            try:
                producer.produce(topic, key=f"{tag}-{i}".encode(), value=f"{tag}-value-{i}".encode(),
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    remaining = producer.flush(timeout + 5)
    if remaining or errors or len(acked) != count:
        raise Failure(f"producing {tag}: {len(acked)} of {count} records acknowledged, {remaining} "
                      f"still pending, {len(errors)} failed (first: {errors[:1]})")
    return acked


def check_acked_readable(cluster, topic, acked, timeout=30.0):
    """Every acknowledged record can be read back exactly once: waits (at most `timeout`) until
    every high watermark covers the records acknowledged in its partition, reads up to it and
    checks. Lost records keep a high watermark short, so after the wait the records are checked
    anyway, and the missing ones are named."""
    high_watermarks, short = wait_for_high_watermarks(cluster.bootstrap, topic, acked, timeout)
    if short:
        cluster.say(f"after {timeout:.0f} s the high watermarks {high_watermarks} are still below the numbers of "
                    f"records acknowledged in their partitions {short}; reading what is there")
    records = read_back(cluster.bootstrap, topic, high_watermarks)
    cluster.say(f"read {len(records)} records up to the high watermarks {high_watermarks}")
    check_exactly_once(acked, records)
    if short:
        raise Failure(f"the high watermarks {high_watermarks} stay below the acknowledged record counts {short}")
    cluster.say(f"all {len(acked)} acknowledged records read back exactly once")


def wait_for_high_watermarks(bootstrap, topic, acked, timeout):
    """Waits until every partition's high watermark covers as many records as were acknowledged
    in it; returns ({partition: high watermark}, {}), or after `timeout` the watermarks seen last
    and {partition: records acknowledged} of the partitions they do not cover. Fails if a
    partition's watermarks cannot be read at all."""
    need = {}
    for partition in acked.values():
        need[partition] = need.get(partition, 0) + 1
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-compat-check",
                         "enable.auto.commit": False, "log.connection.close": False})
    seen = {}
    try:
        deadline = time.monotonic() + timeout
        while True:
            for partition in need:
                try:
                    seen[partition] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=3)
                except KafkaException as e:
                    seen[partition] = repr(e)
            if all(isinstance(w, tuple) and w[1] >= need[p] for p, w in seen.items()):
                return {p: w[1] for p, w in seen.items()}, {}
            if time.monotonic() >= deadline:
                if not all(isinstance(w, tuple) for w in seen.values()):
                    raise Failure(f"the high watermarks cannot be read for {timeout:.0f} s: {dict(sorted(seen.items()))}")
                return ({p: w[1] for p, w in seen.items()},
                        {p: n for p, n in sorted(need.items()) if seen[p][1] < n})
            time.sleep(0.5)
    finally:
        consumer.close()


def read_back(bootstrap, topic, high_watermarks, timeout=60.0):
    """Reads every partition from offset 0 up to its high watermark:
    [(partition, offset, key, value, leader epoch)]."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-compat-check",
                         "enable.auto.commit": False, "enable.partition.eof": False,
                         "auto.offset.reset": "error", "log.connection.close": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in high_watermarks])
    records, next_offset = [], {p: 0 for p in high_watermarks}
    try:
        deadline = time.monotonic() + timeout
        while any(next_offset[p] < hw for p, hw in high_watermarks.items()):
            if time.monotonic() >= deadline:
                raise Failure(f"reading back: reached offsets {next_offset} of high watermarks "
                              f"{high_watermarks} in {timeout:.0f} s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise Failure(f"reading back partition {msg.partition()}: {msg.error()}")
            p = msg.partition()
            if msg.offset() < high_watermarks[p]:
                records.append((p, msg.offset(), msg.key().decode(), msg.value().decode(), msg.leader_epoch()))
            next_offset[p] = max(next_offset[p], msg.offset() + 1)
    finally:
        consumer.close()
    return records


def check_exactly_once(acked, records):
    """Every acknowledged record was read exactly once, in the partition it was acknowledged in,
    and each partition's leader epochs never go down as the offsets go up."""
    last_epoch = {}
    for partition, offset, _, _, epoch in sorted(records):
        if epoch is not None and epoch < last_epoch.get(partition, (-1, -1))[0]:
            raise Failure(f"partition {partition}: offset {offset} has leader epoch {epoch}, below epoch "
                          f"{last_epoch[partition][0]} at offset {last_epoch[partition][1]}")
        if epoch is not None:
            last_epoch[partition] = (epoch, offset)
    counts = {}
    for partition, _, key, value, _ in records:
        counts[(key, value, partition)] = counts.get((key, value, partition), 0) + 1
    missing = [(k, v, p) for (k, v), p in acked.items() if counts.get((k, v, p), 0) == 0]
    twice = [(record, n) for record, n in counts.items() if n > 1]
    if missing:
        raise Failure(f"{len(missing)} of {len(acked)} acknowledged records are gone "
                      f"(read {len(records)} records); first missing (key, value, partition): {missing[:3]}")
    if twice:
        raise Failure(f"{len(twice)} records were read more than once, e.g. {twice[:3]}")
