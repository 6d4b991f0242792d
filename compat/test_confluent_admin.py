#!/usr/bin/env python3
"""keel compatibility test: confluent-kafka AdminClient (librdkafka's admin API) beyond topic
create/delete.

Usage: test_confluent_admin.py BOOTSTRAP   (e.g. 127.0.0.1:9092)

Checks, each asserting what a Kafka broker answers:
  - describe_cluster: cluster id, the one node at the bootstrap address, the controller;
  - create_partitions 2 -> 5 (metadata, describe_topics, the new partition takes records);
    shrinking to 3 fails with INVALID_PARTITIONS;
  - describe_configs of a topic; incremental_alter_configs SET retention.ms and
    max.message.bytes (describe_configs shows the values, source DYNAMIC_TOPIC_CONFIG), DELETE
    retention.ms (back to the default); an invalid value and an unknown name fail with
    INVALID_CONFIG; alter_configs (the deprecated, non-incremental AlterConfigs) sets
    retention.ms and, as in Kafka, reverts every topic config it does not name
    (max.message.bytes back to the default);
  - delete_records: low watermark 40 (DeletedRecords, get_watermark_offsets, list_offsets
    earliest, and a consumer from the beginning starts at 40); OFFSET_END deletes everything;
    an offset beyond the high watermark fails with OFFSET_OUT_OF_RANGE;
  - list_offsets with OffsetSpec.max_timestamp() (ListOffsets timestamp -3): the offset and
    timestamp of the record with the largest timestamp, which is not the last record;
  - consumer-group admin: with one member active, list_consumer_groups (STABLE),
    describe_consumer_groups (STABLE, the member, its assignment, the assignor) and
    delete_consumer_groups failing with NON_EMPTY_GROUP; after the member closed,
    list/describe show EMPTY, list_consumer_group_offsets shows the commits,
    alter_consumer_group_offsets changes one, delete_consumer_groups succeeds and the group
    and its offsets are gone; a group that only has offsets (committed through the admin API)
    is listed as a simple consumer group;
  - SCRAM credentials (KIP-554): alter_user_scram_credentials upserts SCRAM-SHA-256 and
    SCRAM-SHA-512 credentials (librdkafka salts and hashes the password), refuses fewer than
    4096 iterations with UNACCEPTABLE_CREDENTIAL and deleting a missing credential with
    RESOURCE_NOT_FOUND; describe_user_scram_credentials lists the mechanisms and iterations;
    a deletion removes one.
"""

import logging
import sys
import time
import uuid
import warnings

import confluent_kafka
from confluent_kafka import (Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             KafkaError, KafkaException, Producer, TopicCollection,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, OffsetSpec,
                                   ResourceType, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)

BASE_TS = (int(time.time()) - 3600) * 1000
MAX_TS_INDEX = 70  # the record of partition 0 with the largest timestamp
PROBLEMS = []  # non-fatal failures: later checks still run, the test fails at the end


def log(msg):
    print(f"[confluent-admin] {msg}", flush=True)


def fail(msg):
    print(f"[confluent-admin] FAIL: {msg}", flush=True)
    sys.exit(1)


def rd_log(name):
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter(f"[confluent-admin] rdkafka {name}: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)
    return logger


def expect_error(what, future, code):
    """future.result() must raise KafkaException with this error code."""
    try:
        res = future.result(timeout=20)
    except KafkaException as e:
        err = e.args[0]
        if err.code() != code:
            fail(f"{what}: error {err.name()} ({err.str()}), want {KafkaError(code).name()}")
        return err
    fail(f"{what}: succeeded ({res!r}), want error {KafkaError(code).name()}")


def produce(bootstrap, topic, records):
    """records: [(partition, value, timestamp or None)]; returns [(partition, offset)]."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": False,
                         "acks": "all", "linger.ms": 5, "broker.address.family": "v4"},
                        logger=rd_log("producer"))
    out, errors = {}, []

    def cb(i):
        def on_delivery(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                out[i] = (msg.partition(), msg.offset())
        return on_delivery

    for i, (part, value, ts) in enumerate(records):
        kwargs = {"timestamp": ts} if ts is not None else {}
        producer.produce(topic, value=value, partition=part, on_delivery=cb(i), **kwargs)
        producer.poll(0)
    if producer.flush(30) or errors or len(out) != len(records):
        fail(f"produce to {topic}: {len(out)} of {len(records)} delivered, errors {errors[:5]}")
    return [out[i] for i in range(len(records))]


def describe_topic_configs(admin, topic):
    res = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([res], request_timeout=15)[res].result(timeout=20)


def check_cluster(admin, bootstrap):
    desc = admin.describe_cluster(request_timeout=15).result(timeout=20)
    host, port = bootstrap.rsplit(":", 1)
    md = admin.list_topics(timeout=10)
    if not desc.cluster_id or desc.cluster_id != md.cluster_id:
        fail(f"describe_cluster: cluster id {desc.cluster_id!r}, metadata says {md.cluster_id!r}")
    nodes = [(n.id, n.host, n.port) for n in desc.nodes]
    if len(nodes) != 1 or nodes[0][1:] != (host, int(port)):
        fail(f"describe_cluster: nodes {nodes}, want one node at {bootstrap}")
    if desc.controller is None or desc.controller.id != nodes[0][0]:
        fail(f"describe_cluster: controller {desc.controller}, want node {nodes[0][0]}")
    log(f"describe_cluster: cluster id {desc.cluster_id}, nodes {nodes}, controller "
        f"{desc.controller.id}")


def check_partitions(admin, bootstrap, topic):
    fs = admin.create_partitions([NewPartitions(topic, 5)], operation_timeout=10,
                                 request_timeout=15)
    fs[topic].result(timeout=20)
    deadline = time.monotonic() + 10
    while True:
        t = admin.list_topics(topic=topic, timeout=10).topics[topic]
        if len(t.partitions) == 5:
            break
        if time.monotonic() > deadline:
            fail(f"create_partitions: metadata shows {len(t.partitions)} partitions, want 5")
        time.sleep(0.2)
    desc = admin.describe_topics(TopicCollection([topic]), request_timeout=15)[topic].result(20)
    if sorted(p.id for p in desc.partitions) != list(range(5)):
        fail(f"describe_topics after create_partitions: partitions "
             f"{[p.id for p in desc.partitions]}, want 0..4")
    where = produce(bootstrap, topic, [(4, b"in-new-partition", None)])
    if where != [(4, 0)]:
        fail(f"record for new partition 4 delivered at {where}")
    fs = admin.create_partitions([NewPartitions(topic, 3)], request_timeout=15)
    expect_error("create_partitions 5 -> 3", fs[topic], KafkaError.INVALID_PARTITIONS)
    log("create_partitions: 2 -> 5 (metadata, describe_topics, produce to the new partition); "
        "5 -> 3 fails with INVALID_PARTITIONS")


def check_configs(admin, topic):
    initial = describe_topic_configs(admin, topic)
    for name in ("retention.ms", "retention.bytes", "segment.bytes", "segment.ms",
                 "max.message.bytes", "cleanup.policy", "min.insync.replicas"):
        if name not in initial:
            fail(f"describe_configs: no {name} among {sorted(initial)}")
    default_retention = initial["retention.ms"].value
    default_max_bytes = initial["max.message.bytes"].value
    if initial["retention.ms"].source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
        fail("describe_configs: retention.ms of a fresh topic reported as a topic override")

    def incremental(entries):
        res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=entries)
        return admin.incremental_alter_configs([res], request_timeout=15)[res]

    def check(what, want):
        got = describe_topic_configs(admin, topic)
        for name, (value, dynamic) in want.items():
            e = got.get(name)
            src_ok = e is not None and ((e.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value)
                                        == dynamic)
            if e is None or e.value != value or not src_ok:
                fail(f"{what}: describe_configs shows {name}="
                     f"{e and e.value!r} (source {e and ConfigSource(e.source).name}), want "
                     f"{value!r} ({'a topic override' if dynamic else 'not a topic override'})")

    incremental([ConfigEntry("retention.ms", "3600000",
                             incremental_operation=AlterConfigOpType.SET),
                 ConfigEntry("max.message.bytes", "2000000",
                             incremental_operation=AlterConfigOpType.SET)]).result(timeout=20)
    check("incremental_alter_configs SET", {"retention.ms": ("3600000", True),
                                            "max.message.bytes": ("2000000", True)})
    incremental([ConfigEntry("retention.ms", None,
                             incremental_operation=AlterConfigOpType.DELETE)]).result(timeout=20)
    check("incremental_alter_configs DELETE retention.ms",
          {"retention.ms": (default_retention, False), "max.message.bytes": ("2000000", True)})
    expect_error("incremental_alter_configs retention.ms=not-a-number",
                 incremental([ConfigEntry("retention.ms", "not-a-number",
                                          incremental_operation=AlterConfigOpType.SET)]),
                 KafkaError.INVALID_CONFIG)
    expect_error("incremental_alter_configs no.such.config=1",
                 incremental([ConfigEntry("no.such.config", "1",
                                          incremental_operation=AlterConfigOpType.SET)]),
                 KafkaError.INVALID_CONFIG)
    check("after refused alterations", {"retention.ms": (default_retention, False),
                                        "max.message.bytes": ("2000000", True)})
    log(f"incremental_alter_configs: SET/DELETE shown by describe_configs (defaults "
        f"retention.ms={default_retention}, max.message.bytes={default_max_bytes}); invalid "
        f"value and unknown name fail with INVALID_CONFIG")

    res = ConfigResource(ResourceType.TOPIC, topic, set_config={"retention.ms": "7200000"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        admin.alter_configs([res], request_timeout=15)[res].result(timeout=20)
    check("alter_configs retention.ms=7200000 (replaces the topic's whole config set)",
          {"retention.ms": ("7200000", True), "max.message.bytes": (default_max_bytes, False)})
    log("alter_configs: retention.ms set, max.message.bytes reverted to the default")


def check_records_and_offsets(admin, bootstrap, topic):
    # Partition 0: 100 records, increasing timestamps except one far in the future at offset 70.
    records = []
    for i in range(100):
        ts = BASE_TS + 10**6 if i == MAX_TS_INDEX else BASE_TS + i * 10
        records.append((0, b"r%d" % i, ts))
    records += [(1, b"p1-%d" % i, None) for i in range(10)]
    where = produce(bootstrap, topic, records)
    if where[:100] != [(0, i) for i in range(100)]:
        fail(f"partition 0 records delivered at {where[:5]}..., want 0@0..99")

    tp0, tp1 = TopicPartition(topic, 0), TopicPartition(topic, 1)
    fs = admin.list_offsets({tp0: OffsetSpec.max_timestamp()}, request_timeout=15)
    r = fs[tp0].result(timeout=20)
    if (r.offset, r.timestamp) != (MAX_TS_INDEX, BASE_TS + 10**6):
        fail(f"list_offsets max_timestamp: offset {r.offset} timestamp {r.timestamp}, want "
             f"offset {MAX_TS_INDEX} timestamp {BASE_TS + 10**6}")

    fs = admin.delete_records([TopicPartition(topic, 0, 40)], request_timeout=15,
                              operation_timeout=10)
    dr = list(fs.values())[0].result(timeout=20)
    if dr.low_watermark != 40:
        fail(f"delete_records(partition 0 before 40): low_watermark {dr.low_watermark}, want 40")
    fs = admin.delete_records([TopicPartition(topic, 1, confluent_kafka.OFFSET_END)],
                              request_timeout=15, operation_timeout=10)
    dr = list(fs.values())[0].result(timeout=20)
    if dr.low_watermark != 10:
        fail(f"delete_records(partition 1, OFFSET_END): low_watermark {dr.low_watermark}, "
             f"want 10")
    fs = admin.delete_records([TopicPartition(topic, 0, 500)], request_timeout=15,
                              operation_timeout=10)
    expect_error("delete_records(partition 0 before 500, beyond the high watermark 100)",
                 list(fs.values())[0], KafkaError.OFFSET_OUT_OF_RANGE)

    spec = {tp0: OffsetSpec.earliest()}
    r = admin.list_offsets(spec, request_timeout=15)[tp0].result(timeout=20)
    if r.offset != 40:
        fail(f"list_offsets earliest after delete_records: {r.offset}, want 40")
    r = admin.list_offsets({tp0: OffsetSpec.max_timestamp()}, request_timeout=15)[tp0].result(20)
    if r.offset != MAX_TS_INDEX:
        fail(f"list_offsets max_timestamp after delete_records: {r.offset}, want {MAX_TS_INDEX}")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "keel-compat-unused",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "broker.address.family": "v4"}, logger=rd_log("consumer"))
    try:
        for tp, want in ((tp0, (40, 100)), (tp1, (10, 10))):
            got = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            if got != want:
                fail(f"watermarks of partition {tp.partition} after delete_records: {got}, "
                     f"want {want}")
        consumer.assign([TopicPartition(topic, 0, confluent_kafka.OFFSET_BEGINNING)])
        first = None
        deadline = time.monotonic() + 10
        while first is None and time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and not m.error():
                first = m
        if first is None or first.offset() != 40 or first.value() != b"r40":
            fail(f"consuming partition 0 from the beginning after delete_records: first record "
                 f"{first and (first.offset(), first.value())}, want (40, b'r40')")
    finally:
        consumer.close()
    log("list_offsets max_timestamp -> the record with the largest timestamp; delete_records: "
        "low watermark 40 (DeletedRecords, watermarks, list_offsets earliest, consume), "
        "OFFSET_END empties a partition, beyond the end fails with OFFSET_OUT_OF_RANGE")


def listed_groups(admin):
    res = admin.list_consumer_groups(request_timeout=15).result(timeout=20)
    if res.errors:
        fail(f"list_consumer_groups errors: {res.errors}")
    return {g.group_id: g for g in res.valid}


def describe_group(admin, group):
    return admin.describe_consumer_groups([group], request_timeout=15)[group].result(timeout=20)


def group_offsets(admin, group):
    fs = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                           request_timeout=15)
    res = fs[group].result(timeout=20)
    return {(tp.topic, tp.partition): tp.offset for tp in (res.topic_partitions or [])
            if tp.offset >= 0}


def check_groups(admin, bootstrap, topic, run):
    group = f"compat-confluent-admin-group-{run}"
    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": group, "client.id": "admin-test-member",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": "range", "broker.address.family": "v4",
    }, logger=rd_log("group-member"))
    consumer.subscribe([topic])
    try:
        # Partition 0 holds offsets 40..99, partition 4 one record: consume both, committing.
        want_committed = {(topic, 0): 100, (topic, 4): 1}
        seen = {}
        deadline = time.monotonic() + 20
        while any(seen.get(k, -1) + 1 < v for k, v in want_committed.items()):
            if time.monotonic() > deadline:
                fail(f"group member consumed up to {seen} within 20s, assignment "
                     f"{consumer.assignment()}")
            for m in consumer.consume(num_messages=100, timeout=0.2):
                if not m.error():
                    seen[(m.topic(), m.partition())] = m.offset()
        consumer.commit(offsets=[TopicPartition(t, p, o + 1) for (t, p), o in seen.items()],
                        asynchronous=False)

        listing = listed_groups(admin).get(group)
        if listing is None or listing.state != ConsumerGroupState.STABLE \
                or listing.is_simple_consumer_group:
            fail(f"list_consumer_groups with an active member: {group} -> "
                 f"{listing and (listing.state, listing.is_simple_consumer_group)}, want STABLE")
        desc = describe_group(admin, group)
        members = desc.members or []
        parts = sorted(tp.partition for m in members for tp in m.assignment.topic_partitions
                       if tp.topic == topic)
        if desc.state != ConsumerGroupState.STABLE or len(members) != 1 \
                or parts != list(range(5)) or desc.partition_assignor != "range" \
                or desc.is_simple_consumer_group:
            fail(f"describe_consumer_groups with an active member: state {desc.state}, members "
                 f"{[(m.member_id, m.client_id, m.host) for m in members]}, assigned "
                 f"{parts}, assignor {desc.partition_assignor!r}; want STABLE, one member "
                 f"with partitions 0..4, 'range'")
        # Kafka records each member's client id (from the JoinGroup request header) and host,
        # and derives the member id from the client id ("<client.id>-<uuid>").
        m = members[0]
        if m.client_id != "admin-test-member" or m.host not in ("/127.0.0.1", "127.0.0.1") \
                or not m.member_id.startswith("admin-test-member-"):
            PROBLEMS.append(f"describe_consumer_groups: member id {m.member_id!r}, client id "
                            f"{m.client_id!r}, host {m.host!r}; want a member id starting "
                            f"'admin-test-member-', client id 'admin-test-member', host "
                            f"'/127.0.0.1' (the JoinGroup request's client id and address)")
            log(f"ERROR: {PROBLEMS[-1]}")
        expect_error("delete_consumer_groups on a group with an active member",
                     admin.delete_consumer_groups([group], request_timeout=15)[group],
                     KafkaError.NON_EMPTY_GROUP)
        log(f"active group: listed STABLE, described (member {members[0].member_id} on "
            f"{members[0].host}, partitions {parts}, assignor range, coordinator "
            f"{desc.coordinator.id}); delete_consumer_groups fails with NON_EMPTY_GROUP")
    finally:
        consumer.close()

    listing = listed_groups(admin).get(group)
    if listing is None or listing.state != ConsumerGroupState.EMPTY:
        fail(f"list_consumer_groups after the member left: {listing and listing.state}, "
             f"want EMPTY")
    desc = describe_group(admin, group)
    if desc.state != ConsumerGroupState.EMPTY or desc.members:
        fail(f"describe_consumer_groups after the member left: state {desc.state}, "
             f"{len(desc.members or [])} members; want EMPTY, none")
    got = group_offsets(admin, group)
    if got != want_committed:
        fail(f"list_consumer_group_offsets: {got}, want {want_committed}")
    fs = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, 0, 55)])], request_timeout=15)
    res = fs[group].result(timeout=20)
    if any(tp.error is not None for tp in res.topic_partitions):
        fail(f"alter_consumer_group_offsets: "
             f"{[(tp.partition, tp.error) for tp in res.topic_partitions]}")
    got = group_offsets(admin, group)
    if got != {(topic, 0): 55, (topic, 4): 1}:
        fail(f"list_consumer_group_offsets after alter_consumer_group_offsets: {got}")
    admin.delete_consumer_groups([group], request_timeout=15)[group].result(timeout=20)
    if group in listed_groups(admin):
        fail(f"list_consumer_groups still lists {group} after delete_consumer_groups")
    got = group_offsets(admin, group)
    if got:
        fail(f"list_consumer_group_offsets after delete_consumer_groups: {got}, want none")
    log("empty group: listed and described EMPTY, list_consumer_group_offsets = the commits, "
        "alter_consumer_group_offsets applied, delete_consumer_groups removed group and offsets")

    # A group that only ever had offsets committed (no members): Kafka lists it as Empty with
    # no protocol type, which librdkafka reports as a simple consumer group.
    simple = f"compat-confluent-admin-simple-{run}"
    fs = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(simple, [TopicPartition(topic, 4, 1)])], request_timeout=15)
    fs[simple].result(timeout=20)
    listing = listed_groups(admin).get(simple)
    if listing is None or not listing.is_simple_consumer_group \
            or listing.state != ConsumerGroupState.EMPTY:
        fail(f"list_consumer_groups: offsets-only group {simple} -> "
             f"{listing and (listing.state, listing.is_simple_consumer_group)}, want EMPTY, "
             f"simple")
    if group_offsets(admin, simple) != {(topic, 4): 1}:
        fail(f"list_consumer_group_offsets({simple}) = {group_offsets(admin, simple)}")
    admin.delete_consumer_groups([simple], request_timeout=15)[simple].result(timeout=20)
    if simple in listed_groups(admin):
        fail(f"offsets-only group {simple} still listed after delete_consumer_groups")
    log("offsets-only group: listed EMPTY and simple, offsets listed, deleted")


def scram_described(admin, user):
    described = admin.describe_user_scram_credentials([user], request_timeout=15)[user].result(timeout=20)
    return sorted((info.mechanism, info.iterations) for info in described.scram_credential_infos)


def check_scram(admin, run):
    user = f"compat-user-{run}"
    sha256, sha512 = ScramMechanism.SCRAM_SHA_256, ScramMechanism.SCRAM_SHA_512
    futures = admin.alter_user_scram_credentials([
        UserScramCredentialUpsertion(user, ScramCredentialInfo(sha256, 4096), b"secret-256"),
        UserScramCredentialUpsertion(f"{user}-512", ScramCredentialInfo(sha512, 8192), b"secret-512"),
    ], request_timeout=15)
    for name, future in futures.items():
        future.result(timeout=20)
    if scram_described(admin, user) != [(sha256, 4096)]:
        fail(f"describe_user_scram_credentials({user}) = {scram_described(admin, user)}")
    if scram_described(admin, f"{user}-512") != [(sha512, 8192)]:
        fail(f"describe_user_scram_credentials({user}-512) = {scram_described(admin, f'{user}-512')}")
    everyone = admin.describe_user_scram_credentials(request_timeout=15).result(timeout=20)
    if user not in everyone or f"{user}-512" not in everyone:
        fail(f"describe_user_scram_credentials() lists {sorted(everyone)}, not {user}")
    refused = {
        "too few iterations": (UserScramCredentialUpsertion(f"{user}-weak", ScramCredentialInfo(sha256, 100), b"x"),
                               KafkaError.UNACCEPTABLE_CREDENTIAL),
        "missing credential": (UserScramCredentialDeletion(f"{user}-ghost", sha512), KafkaError.RESOURCE_NOT_FOUND),
    }
    for what, (alteration, code) in refused.items():
        future = admin.alter_user_scram_credentials([alteration], request_timeout=15)[alteration.user]
        try:
            future.result(timeout=20)
            fail(f"alter_user_scram_credentials ({what}) succeeded")
        except KafkaException as e:
            if e.args[0].code() != code:
                fail(f"alter_user_scram_credentials ({what}) failed with {e}, want {code}")
    deleted = admin.alter_user_scram_credentials([UserScramCredentialDeletion(user, sha256)], request_timeout=15)
    deleted[user].result(timeout=20)
    try:
        scram_described(admin, user)
        fail(f"{user} still described after its only credential was deleted")
    except KafkaException as e:
        if e.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
            fail(f"describe_user_scram_credentials of a deleted user failed with {e}")
    log("SCRAM credentials: upserted (SHA-256, SHA-512), described, refused, deleted")


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
    topic = f"compat-confluent-admin-{run}"
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                        operation_timeout=10, request_timeout=15)[topic].result(timeout=20)
    check_cluster(admin, bootstrap)
    check_partitions(admin, bootstrap, topic)
    check_configs(admin, topic)
    check_records_and_offsets(admin, bootstrap, topic)
    check_groups(admin, bootstrap, topic, run)
    check_scram(admin, run)
    if PROBLEMS:
        fail("; ".join(PROBLEMS))
    log("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        fail(f"KafkaException: {e}")
