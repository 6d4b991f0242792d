"""A disk swap must not lose acknowledged records (issue 17, F2), with real keel processes.

    python test_cluster_disk_swap.py path/to/keel

Five nodes on loopback ports: 1, 2 and 3 run the controller quorum (and a broker each); 4 and 5
are broker-only. Topic "swap" has three partitions, each on brokers 3, 4 and 5 (replication
factor 3, min.insync.replicas 2, each partition with its own preferred leader), so the controller
quorum outlives every fault below and each step is committed before the next. 20,000 records
are produced with acks=all by an idempotent producer and all are acknowledged. Then two rounds:

 1. The issue's reproduction. SIGKILL 5; once it is fenced (ISR [3, 4]) SIGKILL 4; once it is
    fenced every partition is led by 3 with ISR [3], and 4 is in the ELR (it left while the ISR
    was below min ISR, KIP-966). SIGKILL 3: every partition is leaderless. Replace 4's data
    directory with an empty one (a disk swap) and start 4 alone with the quorum for 5 s: it must
    not be elected (an empty disk is an unclean shutdown, and an unclean replica leaves the ELR;
    before the fix it counted as clean, was elected with an empty log, and 3 and 5 truncated to
    it, so every record was gone). Start 3 and 5. All three replicas crashed, so by KIP-966 none
    is known to hold every acknowledged record; keel (like Kafka without unclean recovery) may
    leave the partitions leaderless, and a leader it does elect must hold every record. If they
    are still leaderless after 10 s, the operator's way out is taken: the topic's
    unclean.leader.election.enable is set to true, which prefers the last-known ELR (3, the
    last replica that was eligible); every partition must then get a leader within 60 s and
    the setting is put back.
 2. The same with 3 stopped cleanly (SIGTERM) instead of killed: 3 stays eligible, so once 3
    and 5 start, every partition must get a leader within 60 s on its own; it prints how long
    that took.

After each round every acknowledged record must be read back exactly once (up to the high
watermark, which must come to cover them within 30 s), and producing with acks=all must work.
Prints PASS or FAIL with the reason (and, on FAIL, the relevant lines of the node logs). Every
process it starts is stopped by PID on the way out.
"""

import os
import sys
import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

import cluster_harness as harness
from cluster_harness import Cluster, Failure, check_acked_readable, produce_acked, wait_for

TOPIC = "swap"
RECORDS = 20_000
LEADER, SWAPPED, OTHER = 3, 4, 5
# Each partition on 3, 4 and 5, with a different preferred leader.
ASSIGNMENT = [[3, 4, 5], [4, 5, 3], [5, 3, 4]]
PARTITIONS = len(ASSIGNMENT)
SWAPPED_ALONE_S = 5.0  # how long the swapped node runs before the others return
CRASHED_LEADERLESS_S = 10.0  # round 1: how long to wait before the operator steps in
LEADER_BACK_S = 60.0  # every partition must have a leader again within this


class Swap:
    def __init__(self, cluster):
        self.cluster = cluster
        self.quorum = cluster.admin([1, 2])  # nodes that stay up throughout
        self.acked = {}

    def partitions(self):
        """{partition: (leader, replicas, isr)}; brokers catch up with the metadata at their own
        pace, so one may not know the topic yet."""
        return wait_for(f"metadata of {TOPIC}", lambda: self.cluster.partitions(self.quorum, TOPIC, PARTITIONS), 10)

    def wait_partitions(self, what, check, timeout=30):
        wait_for(what, lambda: all(check(*p) for p in self.partitions().values()), timeout)

    def set_unclean_election(self, enabled):
        resource = ConfigResource(ResourceType.TOPIC, TOPIC, incremental_configs=[ConfigEntry(
            "unclean.leader.election.enable", "true" if enabled else "false",
            incremental_operation=AlterConfigOpType.SET)])
        self.quorum.incremental_alter_configs([resource], request_timeout=15)[resource].result(timeout=20)

    def fail_the_replicas(self, stop_leader):
        """Fences the followers one by one, then stops the leader; 4 ends in the ELR."""
        say = self.cluster.say
        self.wait_partitions("three in-sync replicas of every partition",
                             lambda leader, _, isr: leader >= 0 and len(isr) == 3, 60)
        self.cluster.nodes[OTHER].kill()
        say(f"SIGKILL node {OTHER}")
        self.wait_partitions(f"ISR [{LEADER}, {SWAPPED}] everywhere",
                             lambda leader, _, isr: leader >= 0 and isr == [LEADER, SWAPPED])
        self.cluster.nodes[SWAPPED].kill()
        say(f"SIGKILL node {SWAPPED}")
        self.wait_partitions(f"every partition led by {LEADER} with ISR [{LEADER}]",
                             lambda leader, _, isr: leader == LEADER and isr == [LEADER])
        say(f"fenced: {self.partitions()}")
        stop_leader()
        self.wait_partitions("every partition leaderless", lambda leader, _, __: leader < 0)
        say(f"fenced:\n{self.cluster.status(TOPIC)}")

    def swapped_alone(self):
        """Starts the swapped node alone with the quorum; it must not lead anything."""
        node = self.cluster.nodes[SWAPPED]
        node.swap_disk()
        node.start()
        self.cluster.say(f"node {SWAPPED} started on an empty data directory")
        time.sleep(SWAPPED_ALONE_S)
        alone = self.partitions()
        self.cluster.say(f"after {SWAPPED_ALONE_S:.0f} s: {alone}\n{self.cluster.status(TOPIC)}")
        led = sorted(p for p, (leader, _, _) in alone.items() if leader == SWAPPED)
        if led:
            raise Failure(f"node {SWAPPED}, started on an empty data directory, was elected leader of partitions "
                          f"{led} while the replicas holding their {len(self.acked)} acknowledged records were "
                          f"down (they would truncate to its empty log)")

    def start_the_others(self):
        for node in (LEADER, OTHER):
            self.cluster.nodes[node].start()
        self.cluster.say(f"nodes {LEADER} and {OTHER} started")
        return time.monotonic()

    def all_led(self):
        return all(leader >= 0 for leader, _, _ in self.partitions().values())

    def check_records(self, tag):
        check_acked_readable(self.cluster, TOPIC, self.acked)
        more = produce_acked(self.cluster.bootstrap, TOPIC, 1_000, tag, timeout=30)
        self.acked.update(more)
        self.cluster.say(f"{len(more)} more records acknowledged")

    def crash_round(self):
        """Round 1: every replica crashes; nothing may be lost, leadership may need the operator."""
        self.cluster.say("---- round 1: the leader crashes too (SIGKILL)")
        self.fail_the_replicas(lambda: (self.cluster.nodes[LEADER].kill(), self.cluster.say(f"SIGKILL node {LEADER}")))
        self.swapped_alone()
        started = self.start_the_others()
        try:
            wait_for("a leader for every partition", self.all_led, CRASHED_LEADERLESS_S)
            self.cluster.say(f"every partition has a leader {time.monotonic() - started:.1f} s later, unasked: "
                             f"{self.partitions()}")
        except Failure:
            self.cluster.say(f"still leaderless {CRASHED_LEADERLESS_S:.0f} s later:\n{self.cluster.status(TOPIC)}\n"
                             f"setting unclean.leader.election.enable=true")
            self.set_unclean_election(True)
            asked = time.monotonic()
            wait_for(f"a leader for every partition within {LEADER_BACK_S:.0f} s of enabling unclean election",
                     self.all_led, LEADER_BACK_S)
            self.cluster.say(f"every partition has a leader {time.monotonic() - asked:.1f} s later: {self.partitions()}")
            self.set_unclean_election(False)
        self.check_records("round-1")

    def clean_round(self):
        """Round 2: the last eligible replica stops cleanly and must lead again on its return."""
        self.cluster.say("---- round 2: the leader stops cleanly (SIGTERM)")

        def stop_leader():
            status = self.cluster.nodes[LEADER].stop()
            self.cluster.say(f"SIGTERM node {LEADER}: exit status {status}")
            if status != 0:
                raise Failure(f"node {LEADER} exited with status {status} after SIGTERM")
        self.fail_the_replicas(stop_leader)
        self.swapped_alone()
        started = self.start_the_others()
        wait_for(f"a leader for every partition within {LEADER_BACK_S:.0f} s", self.all_led, LEADER_BACK_S)
        back_s = time.monotonic() - started
        self.cluster.say(f"every partition has a leader {back_s:.1f} s after nodes {LEADER} and {OTHER} started: "
                         f"{self.partitions()}")
        self.check_records("round-2")
        return back_s


def run(cluster):
    for node in cluster.nodes.values():
        node.start()
    admin = cluster.admin([1, 2, 3])
    wait_for("five registered brokers", lambda: len(admin.list_topics(timeout=2).brokers) == 5, 30)
    admin.create_topics([NewTopic(TOPIC, PARTITIONS, replica_assignment=ASSIGNMENT,
                                  config={"min.insync.replicas": "2"})], operation_timeout=10)[TOPIC].result(timeout=15)
    swap = Swap(cluster)
    swap.wait_partitions("three in-sync replicas of every partition",
                         lambda leader, _, isr: leader >= 0 and len(isr) == 3, 30)
    cluster.say(f"cluster up ({cluster.bootstrap}); topic {TOPIC}: {swap.partitions()}")
    swap.acked = produce_acked(cluster.bootstrap, TOPIC, RECORDS, "swap")
    cluster.say(f"{len(swap.acked)} of {RECORDS} records acknowledged (acks=all, idempotent)")
    swap.crash_round()
    back_s = swap.clean_round()
    return (f"node {SWAPPED}'s disk was swapped twice and it never led; all {len(swap.acked)} acknowledged "
            f"records read back exactly once; after the clean stop leadership came back {back_s:.1f} s after "
            f"nodes {LEADER} and {OTHER} started")


if __name__ == "__main__":
    harness.main("disk-swap", lambda work: Cluster(os.path.abspath(sys.argv[1]), work, voters=[1, 2, 3],
                                                   broker_only=[SWAPPED, OTHER]), run)
