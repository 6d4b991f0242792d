"""A whole-cluster clean restart from metadata snapshots loses nothing (issue 17, F1), with real
keel processes.

    python test_cluster_clean_restart.py path/to/keel

Three nodes on loopback ports, each a controller and a broker, with controller_snapshot_entries
= 32 (the default is 4096), so the controllers restart from metadata snapshots. Topic "restart"
has three partitions, all on brokers 1, 2, 3 in that order (replication factor 3,
min.insync.replicas 2), so they share their leader. With an idempotent acks=all producer:

 1. 10,000 records; SIGKILL the leader (1); 2,000 records while it is down (now led by 2, in a
    newer leader epoch); restart it and wait for three in-sync replicas everywhere.
 2. Alter a config of another topic until every controller has just taken a snapshot: their
    snapshots now name X (the leader) as leader, and the rest of the test stays below the next
    snapshot (checked at the end).
 3. SIGTERM X; 2,000 records while it is down, led by another node in a newer leader epoch
    that X's log does not reach; SIGTERM the other two, one after the other. Each must exit 0.
 4. Start all three at once. Every node's snapshot is older than the stop: in it X still leads in
    the old epoch, and the others follow it. A node that acted on its own snapshot before the
    quorum had committed anything newer (F1) would follow X, hear X's short log end for its newer
    epoch and truncate the 2,000 records acknowledged while X was down.
 5. Every node must name a live leader for every partition within 60 s (timed), every
    acknowledged record must be read back exactly once with leader epochs that never go down,
    and 1,000 more records must be acknowledged.
 6. No broker may have answered Metadata after the restart with a leader epoch older than one
    the cluster had answered before it (a broker serving its own snapshot before catching up
    with the quorum; Kafka's brokers serve requests only once caught up).

Prints PASS or FAIL with the reason (and, on FAIL, the relevant lines of the node logs). Every
process it starts is stopped by PID on the way out.
"""

import os
import sys
import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

import cluster_harness as harness
from cluster_harness import Cluster, Failure, check_acked_readable, node_metadata, produce_acked, wait_for

TOPIC = "restart"
FILLER = "filler"  # a topic whose config changes add metadata log entries
ASSIGNMENT = [[1, 2, 3], [1, 2, 3], [1, 2, 3]]
PARTITIONS = len(ASSIGNMENT)
SNAPSHOT_ENTRIES = 32
LEADER_BACK_S = 60.0  # every partition must have a leader again within this


class Restart:
    def __init__(self, cluster):
        self.cluster = cluster
        self.admin = cluster.admin()
        self.acked = {}
        # The highest leader epoch of each partition any broker answered Metadata with before the
        # restart: clients may hold it, and the metadata log never goes back below it.
        self.epochs_before = {}
        self.went_back = []  # (seconds after the start, node, partition, answer) below epochs_before

    def partitions(self):
        """{partition: (leader, replicas, isr)}; brokers catch up with the metadata at their own
        pace, so one may not know the topic yet."""
        return wait_for(f"metadata of {TOPIC}", lambda: self.cluster.partitions(self.admin, TOPIC, PARTITIONS), 10)

    def wait_partitions(self, what, check, timeout=30):
        wait_for(what, lambda: all(check(*p) for p in self.partitions().values()), timeout)

    def produce(self, count, tag):
        more = produce_acked(self.cluster.bootstrap, TOPIC, count, tag)
        self.acked.update(more)
        self.cluster.say(f"{len(more)} records acknowledged ({tag}); {len(self.acked)} in all")

    def fully_replicated(self, timeout=60):
        self.wait_partitions("three in-sync replicas of every partition",
                             lambda leader, _, isr: leader >= 0 and len(isr) == 3, timeout)

    def the_leader(self):
        leaders = {leader for leader, _, _ in self.partitions().values()}
        if len(leaders) != 1:
            raise Failure(f"the partitions of {TOPIC} should share their leader: {self.partitions()}")
        return leaders.pop()

    def note_epochs(self):
        for node in self.cluster.nodes.values():
            answer = node.running() and node_metadata(node.kafka, TOPIC)
            for p, (_, _, epoch, _) in (answer[1].items() if answer else []):
                self.epochs_before[p] = max(epoch, self.epochs_before.get(p, -1))

    def move_leadership(self):
        """Crashes and restarts the leader while records are produced."""
        victim = self.the_leader()
        self.cluster.nodes[victim].kill()
        self.cluster.say(f"SIGKILL node {victim} (the leader)")
        self.produce(2_000, "while-killed")
        self.cluster.nodes[victim].start()
        self.cluster.say(f"node {victim} restarted")
        self.fully_replicated()
        self.cluster.say(f"fully replicated again: {self.partitions()}")
        self.note_epochs()

    def snapshot_ids(self):
        """{node: (inode, mtime) of its metadata snapshot file}; a new snapshot replaces the file."""
        ids = {}
        for i, node in self.cluster.nodes.items():
            path = os.path.join(node.data, "__cluster_metadata", "snapshot")
            if os.path.exists(path):
                stat = os.stat(path)
                ids[i] = (stat.st_ino, stat.st_mtime_ns)
        return ids

    def align_snapshots(self):
        """Adds metadata log entries (config changes of FILLER) until every controller has taken
        a new snapshot; returns the snapshots' ids."""
        before = self.snapshot_ids()
        for n in range(3 * SNAPSHOT_ENTRIES):
            now = self.snapshot_ids()
            if len(now) == len(self.cluster.nodes) and all(now[i] != before.get(i) for i in now):
                self.cluster.say(f"every controller took a new metadata snapshot after {n} config changes")
                return now
            resource = ConfigResource(ResourceType.TOPIC, FILLER, incremental_configs=[ConfigEntry(
                "retention.ms", str(86_400_000 + n), incremental_operation=AlterConfigOpType.SET)])
            self.admin.incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=20)
            time.sleep(0.05)
        raise Failure(f"not every controller took a snapshot within {3 * SNAPSHOT_ENTRIES} config changes "
                      f"(controller_snapshot_entries = {SNAPSHOT_ENTRIES}): {before} -> {self.snapshot_ids()}")

    def stop_all(self):
        """Stops every node cleanly, the leader first, producing after it has stopped."""
        first = self.the_leader()
        for i in [first] + [i for i in self.cluster.nodes if i != first]:
            self.note_epochs()
            status = self.cluster.nodes[i].stop()
            self.cluster.say(f"SIGTERM node {i}: exit status {status}")
            if status != 0:
                raise Failure(f"node {i} exited with status {status} after SIGTERM (a clean stop must exit 0)")
            if i == first:
                self.produce(2_000, f"node-{first}-stopped")
                self.cluster.say(f"partitions: {self.partitions()}")

    def restart_all(self):
        """Starts every node at once and asks each for metadata until all of them name a live
        leader for every partition in a leader epoch at least as new as before the restart.
        Notes every answer whose leader epoch is older."""
        self.cluster.say(f"leader epochs answered before the restart: {self.epochs_before}")
        for node in self.cluster.nodes.values():
            node.start()
        started = time.monotonic()
        self.cluster.say("all three nodes started at once")
        while True:
            answers = {i: node_metadata(n.kafka, TOPIC) for i, n in self.cluster.nodes.items()}
            at = time.monotonic() - started
            for i, answer in answers.items():
                for p, (error, leader, epoch, isr) in (answer[1].items() if answer else []):
                    if epoch < self.epochs_before.get(p, -1):
                        self.went_back.append((at, i, p, f"leader {leader}, leader epoch {epoch}, ISR {isr}, "
                                                          f"live brokers {sorted(answer[0])}"))

            def caught_up(answer):
                return answer and len(answer[1]) == PARTITIONS and all(
                    error == 0 and leader in answer[0] and epoch >= self.epochs_before.get(p, -1)
                    for p, (error, leader, epoch, _) in answer[1].items())
            if all(caught_up(a) for a in answers.values()):
                self.cluster.say(f"every node names a live leader for every partition {at:.1f} s after the start: "
                                 f"{answers[1][1]}")
                return at
            if at > LEADER_BACK_S:
                raise Failure(f"{LEADER_BACK_S:.0f} s after the start not every node names a live leader for every "
                              f"partition (at least as new as before the restart): {answers}\n"
                              f"{self.cluster.status(TOPIC)}")
            time.sleep(0.05)

    def check_metadata_never_went_back(self):
        if self.went_back:
            at, node, partition, answer = self.went_back[0]
            nodes = sorted({n for _, n, _, _ in self.went_back})
            raise Failure(f"after the restart, nodes {nodes} answered Metadata {len(self.went_back)} times with leader "
                          f"epochs older than before it (until {self.went_back[-1][0]:.1f} s); first: node {node} at "
                          f"{at:.2f} s, partition {partition}: {answer}, but {self.epochs_before[partition]} was "
                          f"answered before the stop (served from its own metadata snapshot before catching up "
                          f"with the quorum; Kafka's brokers serve requests only once caught up)")


def run(cluster):
    for node in cluster.nodes.values():
        node.start()
    restart = Restart(cluster)
    wait_for("three registered brokers", lambda: len(restart.admin.list_topics(timeout=2).brokers) == 3, 30)
    created = restart.admin.create_topics(
        [NewTopic(TOPIC, PARTITIONS, replica_assignment=ASSIGNMENT, config={"min.insync.replicas": "2"}),
         NewTopic(FILLER, 1, 3)], operation_timeout=10)
    for future in created.values():
        future.result(timeout=15)
    restart.fully_replicated(30)
    cluster.say(f"cluster up ({cluster.bootstrap}); topic {TOPIC}: {restart.partitions()}")
    restart.produce(10_000, "first")
    restart.move_leadership()
    snapshots = restart.align_snapshots()
    restart.stop_all()
    if restart.snapshot_ids() != snapshots:
        raise Failure(f"a controller took a metadata snapshot while the cluster stopped ({snapshots} -> "
                      f"{restart.snapshot_ids()}): raise SNAPSHOT_ENTRIES so that the restart replays one "
                      f"taken before the stop")
    cluster.say("every node will restart from the metadata snapshot it took before the stop")
    back_s = restart.restart_all()
    check_acked_readable(cluster, TOPIC, restart.acked)
    restart.produce(1_000, "after-restart")
    restart.check_metadata_never_went_back()
    return (f"after a clean restart of the whole cluster from metadata snapshots every node named a live leader "
            f"for every partition {back_s:.1f} s after the start; all acknowledged records read back exactly "
            f"once, {len(restart.acked)} acknowledged in all")


def make_cluster(work):
    config = os.path.join(work, "keel.toml")
    with open(config, "w") as f:
        f.write(f"controller_snapshot_entries = {SNAPSHOT_ENTRIES}\n")
    return Cluster(os.path.abspath(sys.argv[1]), work, voters=[1, 2, 3], extra=["--config", config])


if __name__ == "__main__":
    harness.main("clean-restart", make_cluster, run)
