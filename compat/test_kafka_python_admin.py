#!/usr/bin/env python3
"""keel compatibility test: kafka-python's KafkaAdminClient beyond topic create/delete
(api_version auto-detected; the client picks request versions from ApiVersions).

Usage: test_kafka_python_admin.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

Checks, each asserting what a Kafka broker answers:
  - describe_cluster (Metadata): the one broker at the bootstrap address, cluster id,
    controller;
  - create_partitions 2 -> 4 (CreatePartitions; describe_topics shows 4, the new partition
    takes records); shrinking to 2 answers INVALID_PARTITIONS;
  - alter_configs (AlterConfigs) retention.ms and segment.ms; describe_configs shows the values
    as topic overrides (and, asked for one name, answers just that one); an invalid value is
    answered with INVALID_CONFIG;
  - describe_log_dirs (DescribeLogDirs): one log dir without error, listing the topic's
    partitions, the written ones with a non-zero size;
  - delete_records (DeleteRecords): low watermark 5, seen by beginning_offsets;
  - consumer-group admin: with one member active, list_consumer_groups (ListGroups) lists the
    group as a "consumer" group, describe_consumer_groups (DescribeGroups) shows it Stable with
    the member (client id, host) and its decoded assignment, delete_consumer_groups answers
    NON_EMPTY_GROUP; after the member closed: describe shows Empty, list_consumer_group_offsets
    (OffsetFetch) shows the commits, delete_consumer_groups (DeleteGroups) succeeds and the
    group and its offsets are gone.
"""

import logging
import sys
import time
import uuid

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.errors import IncompatibleBrokerVersion, InvalidPartitionsError, NonEmptyGroupError
from kafka.errors import NoError
from kafka.protocol.admin import DescribeLogDirsRequest_v0, DescribeLogDirsResponse_v0
from kafka.structs import OffsetAndMetadata

INVALID_CONFIG = 40
TOPIC_CONFIG_SOURCE = 1  # DescribeConfigs v1+ config_source: DYNAMIC_TOPIC_CONFIG


class DescribeLogDirsResponse_v1(DescribeLogDirsResponse_v0):
    API_VERSION = 1


class DescribeLogDirsRequest_v1(DescribeLogDirsRequest_v0):
    """v1: the layout of v0 (topics null = every partition of every topic)."""
    API_VERSION = 1
    RESPONSE_TYPE = DescribeLogDirsResponse_v1


PROBLEMS = []  # non-fatal failures: later checks still run, the test fails at the end


def log(msg):
    print(f"[kafka-python-admin] {msg}", flush=True)


def fail(msg):
    print(f"[kafka-python-admin] FAIL: {msg}", flush=True)
    sys.exit(1)


def problem(msg):
    PROBLEMS.append(msg)
    log(f"ERROR: {msg}")


def produce(bootstrap, topic, records):
    """records: [(partition, value)]; returns [(partition, offset)]."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=False, request_timeout_ms=15000,
                             max_block_ms=15000)
    try:
        futures = [producer.send(topic, value=v, partition=p) for p, v in records]
        producer.flush(timeout=20)
        return [(md.partition, md.offset) for md in (f.get(timeout=10) for f in futures)]
    finally:
        producer.close(timeout=10)


def topic_configs(admin, topic, names=None):
    """{name: (value, source or None)} from describe_configs."""
    configs = None if names is None else {n: None for n in names}
    responses = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                       configs=configs)])
    out = {}
    for response in responses:
        obj = response.to_object()
        for res in obj["resources"]:
            if res["error_code"] != 0:
                fail(f"describe_configs({topic}): error {res['error_code']} "
                     f"{res['error_message']}")
            for e in res["config_entries"]:
                out[e["config_names"]] = (e["config_value"], e.get("config_source"))
    return out


def check_cluster(admin, bootstrap):
    cluster = admin.describe_cluster()
    host, port = bootstrap.rsplit(":", 1)
    brokers = [(b["node_id"], b["host"], b["port"]) for b in cluster["brokers"]]
    if len(brokers) != 1 or brokers[0][1:] != (host, int(port)):
        fail(f"describe_cluster: brokers {brokers}, want one at {bootstrap}")
    if not cluster.get("cluster_id") or cluster.get("controller_id") != brokers[0][0]:
        fail(f"describe_cluster: cluster_id {cluster.get('cluster_id')!r}, controller_id "
             f"{cluster.get('controller_id')}, want an id and controller {brokers[0][0]}")
    log(f"describe_cluster: cluster id {cluster['cluster_id']}, brokers {brokers}, "
        f"controller {cluster['controller_id']}")


def check_partitions(admin, bootstrap, topic):
    response = admin.create_partitions({topic: NewPartitions(total_count=4)}, timeout_ms=10000)
    errors = [(t, e, m) for t, e, m in response.topic_errors]
    if errors != [(topic, 0, None)] and [(t, e) for t, e, _ in errors] != [(topic, 0)]:
        fail(f"create_partitions 2 -> 4: {errors}")
    deadline = time.monotonic() + 10
    while True:
        desc = admin.describe_topics([topic])
        parts = sorted(p["partition"] for p in desc[0]["partitions"]) if desc else []
        if parts == [0, 1, 2, 3]:
            break
        if time.monotonic() > deadline:
            fail(f"describe_topics after create_partitions: partitions {parts}, want 0..3")
        time.sleep(0.2)
    where = produce(bootstrap, topic, [(3, b"new-partition")])
    if where != [(3, 0)]:
        fail(f"record for new partition 3 acked at {where}")
    # kafka-python raises the topic's error (CreatePartitions goes through its controller path).
    try:
        response = admin.create_partitions({topic: NewPartitions(total_count=2)},
                                           timeout_ms=10000)
        fail(f"create_partitions 4 -> 2 succeeded: {response}, want INVALID_PARTITIONS")
    except InvalidPartitionsError:
        pass
    log("create_partitions: 2 -> 4 (describe_topics, produce to the new partition); 4 -> 2 "
        "answered INVALID_PARTITIONS")


def check_configs(admin, topic):
    before = topic_configs(admin, topic)
    for name in ("retention.ms", "segment.ms", "max.message.bytes", "cleanup.policy"):
        if name not in before:
            fail(f"describe_configs: no {name} among {sorted(before)}")
    response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "retention.ms": "3600000", "segment.ms": "600000"})])
    res = response.to_object()["resources"]
    if [(r["resource_name"], r["error_code"]) for r in res] != [(topic, 0)]:
        fail(f"alter_configs: {res}")
    after = topic_configs(admin, topic)
    for name, value in (("retention.ms", "3600000"), ("segment.ms", "600000")):
        got_value, source = after.get(name, (None, None))
        if got_value != value or source not in (None, TOPIC_CONFIG_SOURCE):
            fail(f"describe_configs after alter_configs: {name}={got_value!r} (source "
                 f"{source}), want {value!r} (source {TOPIC_CONFIG_SOURCE}, a topic override)")
    only = topic_configs(admin, topic, names=["retention.ms"])
    if list(only) != ["retention.ms"]:
        fail(f"describe_configs for just retention.ms answered {sorted(only)}")
    response = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs={
        "retention.ms": "forever"})])
    res = response.to_object()["resources"]
    if [r["error_code"] for r in res] != [INVALID_CONFIG]:
        fail(f"alter_configs retention.ms=forever: {res}, want INVALID_CONFIG ({INVALID_CONFIG})")
    if topic_configs(admin, topic)["retention.ms"][0] != "3600000":
        fail("a refused alter_configs changed retention.ms")
    log(f"alter_configs/describe_configs: retention.ms {before['retention.ms'][0]} -> 3600000, "
        f"segment.ms {before['segment.ms'][0]} -> 600000 (topic overrides); single-name "
        f"describe; invalid value answered INVALID_CONFIG")


def check_log_dirs_and_records(admin, bootstrap, topic):
    produce(bootstrap, topic, [(0, b"value-%d" % i) for i in range(20)])
    try:
        response = admin.describe_log_dirs().to_object()
    except IncompatibleBrokerVersion:
        # Client limitation, not a broker bug: kafka-python 2.3.3 implements only DescribeLogDirs
        # v0, which Kafka 4.0 removed (KIP-896) and keel, on the same baseline, does not
        # advertise either (it serves v1-4). v1 has the same request and response layout as
        # v0, so send v1 through the admin client's own connection instead.
        log("describe_log_dirs(): kafka-python only speaks DescribeLogDirs v0 (removed in "
            "Kafka 4.0); sending v1 with the same schema")
        response = admin.send_request(DescribeLogDirsRequest_v1()).to_object()
    dirs = response["log_dirs"]
    if len(dirs) != 1 or dirs[0]["error_code"] != 0 or not dirs[0]["log_dir"]:
        fail(f"describe_log_dirs: {[(d['error_code'], d['log_dir']) for d in dirs]}, want one "
             f"log dir without error")
    mine = [t for t in dirs[0]["topics"] if t["name"] == topic]
    if len(mine) != 1:
        fail(f"describe_log_dirs: topic {topic} listed {len(mine)} times")
    sizes = {p["partition_index"]: p["partition_size"] for p in mine[0]["partitions"]}
    if sorted(sizes) != [0, 1, 2, 3] or sizes[0] <= 0 or sizes[3] <= 0 or sizes[1] != 0:
        fail(f"describe_log_dirs: partition sizes of {topic}: {sizes}, want partitions 0..3, "
             f"0 and 3 non-empty, 1 empty")
    result = admin.delete_records({TopicPartition(topic, 0): 5}, timeout_ms=10000)
    r = result.get(TopicPartition(topic, 0))
    if r is None or r["low_watermark"] != 5:
        fail(f"delete_records(partition 0 before 5): {result}, want low_watermark 5")
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False)
    try:
        tp = TopicPartition(topic, 0)
        begin, end = consumer.beginning_offsets([tp])[tp], consumer.end_offsets([tp])[tp]
    finally:
        consumer.close()
    if (begin, end) != (5, 20):
        fail(f"beginning/end offsets after delete_records: {begin}/{end}, want 5/20")
    log(f"describe_log_dirs: {dirs[0]['log_dir']}, partition sizes {sizes}; delete_records: "
        f"low watermark 5 (beginning_offsets)")


def group_info(admin, group):
    descs = admin.describe_consumer_groups([group])
    if len(descs) != 1 or descs[0].group != group:
        fail(f"describe_consumer_groups([{group}]) answered {descs}")
    return descs[0]


def check_groups(admin, bootstrap, topic, run):
    group = f"compat-kafka-python-admin-group-{run}"
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                             client_id="kp-admin-member", enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=6000,
                             heartbeat_interval_ms=500,
                             partition_assignment_strategy=[RangePartitionAssignor],
                             request_timeout_ms=15000)
    consumer.subscribe([topic])
    try:
        # Partition 0 holds offsets 5..19, partition 3 one record.
        want = {TopicPartition(topic, 0): 20, TopicPartition(topic, 3): 1}
        last = {}
        deadline = time.monotonic() + 20
        while any(last.get(tp, -1) + 1 < off for tp, off in want.items()):
            if time.monotonic() > deadline:
                fail(f"group member consumed up to {last} within 20s, assignment "
                     f"{consumer.assignment()}")
            for tp, msgs in consumer.poll(timeout_ms=200).items():
                last[tp] = msgs[-1].offset
        consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in want.items()})

        groups = admin.list_consumer_groups()
        mine = [g for g in groups if g[0] == group]
        if len(mine) != 1 or mine[0][1] != "consumer":
            fail(f"list_consumer_groups with an active member: {mine}, want ({group!r}, "
                 f"'consumer')")
        info = group_info(admin, group)
        if info.error_code != 0 or info.state != "Stable" or info.protocol_type != "consumer" \
                or info.protocol != "range" or len(info.members) != 1:
            fail(f"describe_consumer_groups with an active member: {info}")
        member = info.members[0]
        assigned = sorted(p for t, ps in member.member_assignment.assignment if t == topic
                          for p in ps)
        if assigned != [0, 1, 2, 3]:
            fail(f"describe_consumer_groups: member assignment {member.member_assignment}, "
                 f"want {topic} partitions 0..3")
        if topic not in member.member_metadata.topics:
            fail(f"describe_consumer_groups: member metadata {member.member_metadata} does "
                 f"not subscribe {topic}")
        # Kafka records the JoinGroup request's client id and the member's address, and derives
        # the member id from the client id ("<client_id>-<uuid>").
        if member.client_id != "kp-admin-member" or member.client_host not in (
                "/127.0.0.1", "127.0.0.1") or not member.member_id.startswith("kp-admin-member-"):
            problem(f"describe_consumer_groups: member id {member.member_id!r}, client id "
                    f"{member.client_id!r}, client host {member.client_host!r}; want a member "
                    f"id starting 'kp-admin-member-', client id 'kp-admin-member', host "
                    f"'/127.0.0.1'")
        result = admin.delete_consumer_groups([group])
        if [(g, e) for g, e in result] != [(group, NonEmptyGroupError)]:
            fail(f"delete_consumer_groups with an active member: {result}, want "
                 f"NonEmptyGroupError")
        log(f"active group: listed ('consumer'), described Stable/range with member "
            f"{member.member_id!r} assigned {assigned}; delete answered NON_EMPTY_GROUP")
    finally:
        consumer.close(autocommit=False)

    info = group_info(admin, group)
    if info.state != "Empty" or info.members:
        fail(f"describe_consumer_groups after the member left: state {info.state}, members "
             f"{info.members}; want Empty, none")
    offsets = admin.list_consumer_group_offsets(group)
    got = {tp: om.offset for tp, om in offsets.items()}
    if got != want:
        fail(f"list_consumer_group_offsets: {got}, want {want}")
    result = admin.delete_consumer_groups([group])
    if [(g, e) for g, e in result] != [(group, NoError)]:
        fail(f"delete_consumer_groups of the empty group: {result}")
    if any(g[0] == group for g in admin.list_consumer_groups()):
        fail(f"list_consumer_groups still lists {group} after delete_consumer_groups")
    offsets = admin.list_consumer_group_offsets(group)
    if offsets:
        fail(f"list_consumer_group_offsets after delete_consumer_groups: {offsets}, want none")
    log("empty group: described Empty, list_consumer_group_offsets = the commits, "
        "delete_consumer_groups removed group and offsets")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    bootstrap = sys.argv[1]
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="[kafka-python-admin] %(name)s %(levelname)s: %(message)s")
    log(f"kafka-python {kafka.__version__}")
    run = uuid.uuid4().hex[:8]
    topic = f"compat-kafka-python-admin-{run}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        log(f"admin client api_version (auto-detected): {admin.config['api_version']}")
        admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                            timeout_ms=10000)
        check_cluster(admin, bootstrap)
        check_partitions(admin, bootstrap, topic)
        check_configs(admin, topic)
        check_log_dirs_and_records(admin, bootstrap, topic)
        check_groups(admin, bootstrap, topic, run)
    finally:
        admin.close()
    if PROBLEMS:
        fail("; ".join(PROBLEMS))
    log("all checks passed")


if __name__ == "__main__":
    main()
