"""A controller voter whose disk is replaced must not lose committed metadata (issue 17), with
real keel processes.

    python test_cluster_voter_disk_swap.py path/to/keel

Three nodes on loopback ports, each a controller voter and a broker; a voter keeps its Raft state
in its data directory, so a disk swap takes its term, vote and metadata log with it.

 1. Topic "first" is created with all three up. SIGKILL 3; topic "second" is created: the
    metadata record commits on voters 1 and 2 only.
 2. SIGKILL 1 and 2; replace 2's data directory with an empty one; start 2 and 3, with 1 still
    down, for 8 s. Voter 2 cannot tell a first start from a replaced disk, so it asks every other
    voter for its term and log before it votes (docs/raft.md); 1 does not answer, so 2 must not
    vote and no controller may be elected: 3 lacks "second". Before the fix 2 voted for 3 at once,
    3 led the quorum with a log without "second", and once 1 returned it cut its copy: the topic
    was gone from every node.
 3. Start 1. Within 60 s every broker must show "first" and "second", and a new topic must be
    created and shown by every broker.

Prints PASS or FAIL with the reason (and, on FAIL, the relevant lines of the node logs). Every
process it starts is stopped by PID on the way out.
"""

import re
import subprocess
import sys
import time

from confluent_kafka.admin import NewTopic

import cluster_harness as harness
from cluster_harness import Cluster, Failure, NotYet, wait_for

ALONE_S = 8.0  # how long 2 (swapped) and 3 run without 1
BACK_S = 60.0


def create(cluster, nodes, topic):
    admin = cluster.admin(nodes)
    futures = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)], request_timeout=15)
    futures[topic].result(timeout=30)


def shows(cluster, node, topics):
    """True if broker `node` lists every one of `topics`."""
    listed = cluster.admin([node]).list_topics(timeout=5).topics
    missing = [t for t in topics if t not in listed]
    if missing:
        raise NotYet(f"broker {node} does not show {missing}")
    return True


def active_controller(cluster):
    """The active controller `keel cluster status` names, or None."""
    out = subprocess.run([cluster.keel, "cluster", "status", "--controllers", cluster.controllers],
                         capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"^\s*(\d+) at \S+: leader\b", out, re.MULTILINE)
    return (int(found.group(1)) if found else None), out


def run(cluster):
    nodes = cluster.nodes
    for node in nodes.values():
        node.start()
    create_first = lambda: create(cluster, [1, 2, 3], "first") or True  # noqa: E731
    wait_for("topic first to be created", create_first, 60)
    for i in (1, 2, 3):
        wait_for(f"broker {i} to show first", lambda i=i: shows(cluster, i, ["first"]), 30)
    cluster.say("first created; SIGKILL 3")
    nodes[3].kill()
    wait_for("topic second to be created by voters 1 and 2", lambda: create(cluster, [1, 2], "second") or True, 60)
    wait_for("broker 1 to show second", lambda: shows(cluster, 1, ["second"]), 30)

    cluster.say("second created; SIGKILL 1 and 2, replace 2's disk, start 2 and 3")
    nodes[1].kill()
    nodes[2].kill()
    nodes[2].swap_disk()
    nodes[2].start()
    nodes[3].start()
    deadline = time.monotonic() + ALONE_S
    while time.monotonic() < deadline:
        leader, out = active_controller(cluster)
        if leader is not None:
            raise Failure(f"controller {leader} was elected while voter 1 was down and voter 2 had lost its "
                          f"state:\n{out}")
        time.sleep(1.0)

    cluster.say("no controller was elected without voter 1; start 1")
    nodes[1].start()
    started = time.monotonic()
    for i in (1, 2, 3):
        wait_for(f"broker {i} to show first and second", lambda i=i: shows(cluster, i, ["first", "second"]), BACK_S)
    back = time.monotonic() - started
    wait_for("topic third to be created", lambda: create(cluster, [1, 2, 3], "third") or True, 60)
    for i in (1, 2, 3):
        wait_for(f"broker {i} to show third", lambda i=i: shows(cluster, i, ["first", "second", "third"]), 30)
    return f"no controller without voter 1; every broker showed both topics {back:.1f} s after it returned"


def make_cluster(work):
    return Cluster(sys.argv[1], work, voters=[1, 2, 3])


if __name__ == "__main__":
    harness.main("voter-disk-swap", make_cluster, run)
