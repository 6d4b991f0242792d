#!/usr/bin/env python3
"""keel compatibility test: SASL on a SASL_PLAINTEXT listener.

Usage: test_sasl.py SASL_BOOTSTRAP PLAINTEXT_BOOTSTRAP USER PASSWORD
  (keel started with --listener PLAINTEXT://... --listener SASL_PLAINTEXT://..., sasl_mechanisms
  SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN, and KEEL_BOOTSTRAP_USER=USER:PASSWORD)

Checks:
  - confluent-kafka (librdkafka) logs in with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN as the
    bootstrap user, sees the broker at the SASL listener's address (Metadata answers with the
    listener the client connected to), produces and consumes back;
  - a user created through alter_user_scram_credentials over the PLAINTEXT listener logs in
    with SCRAM-SHA-512; after its credential is deleted it no longer can;
  - a wrong password and an unknown user are refused with an authentication error, for SCRAM
    and PLAIN;
  - a client speaking PLAINTEXT to the SASL listener gets no metadata (keel closes the
    connection on a request before authentication);
  - kafka-python logs in with SCRAM-SHA-256 and produces and consumes;
  - kcat (Debian's, over its own older librdkafka, which echoes the SCRAM nonce with its own
    in front as Kafka tolerates) produces and consumes with SCRAM-SHA-512 and lists metadata
    with SCRAM-SHA-256 and PLAIN.
"""

import shutil
import subprocess
import sys
import time
import uuid

import confluent_kafka
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import (AdminClient, NewTopic, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialDeletion, UserScramCredentialUpsertion)


def log(msg):
    print(f"[sasl] {msg}", flush=True)


def fail(msg):
    print(f"[sasl] FAIL: {msg}", flush=True)
    sys.exit(1)


def sasl_conf(bootstrap, mechanism, user, password, **extra):
    conf = {"bootstrap.servers": bootstrap, "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password,
            "broker.address.family": "v4"}
    conf.update(extra)
    return conf


def round_trip(bootstrap, mechanism, user, password, topic):
    """Produces one record and reads it back, authenticated as `user`."""
    value = f"{mechanism} {uuid.uuid4().hex}".encode()
    producer = Producer(sasl_conf(bootstrap, mechanism, user, password, **{"enable.idempotence": True}))
    delivered = []
    producer.produce(topic, value, on_delivery=lambda err, msg: delivered.append((err, msg)))
    if producer.flush(20) != 0 or not delivered or delivered[0][0] is not None:
        fail(f"{mechanism}: produce as {user} failed: {delivered}")
    partition, offset = delivered[0][1].partition(), delivered[0][1].offset()
    consumer = Consumer(sasl_conf(bootstrap, mechanism, user, password, **{
        "group.id": f"sasl-{uuid.uuid4().hex[:8]}", "auto.offset.reset": "earliest"}))
    consumer.assign([confluent_kafka.TopicPartition(topic, partition, offset)])
    deadline = time.time() + 20
    try:
        while time.time() < deadline:
            msg = consumer.poll(1)
            if msg is None or msg.error():
                continue
            if msg.value() == value:
                return
        fail(f"{mechanism}: {user} did not read back what it produced")
    finally:
        consumer.close()


def refused(bootstrap, mechanism, user, password):
    """Whether a login is refused with an authentication error."""
    errors = []
    admin = AdminClient(sasl_conf(bootstrap, mechanism, user, password,
                                  error_cb=lambda e: errors.append(e)))
    try:
        admin.list_topics(timeout=5)
        return False
    except KafkaException:
        pass
    admin.poll(1)  # serves error_cb
    return any(e.code() == KafkaError._AUTHENTICATION for e in errors) or \
        any("Authentication failed" in e.str() for e in errors)


def main():
    if len(sys.argv) != 5:
        print(__doc__)
        sys.exit(2)
    sasl, plaintext, user, password = sys.argv[1:]
    log(f"confluent-kafka {confluent_kafka.__version__}, librdkafka {confluent_kafka.libversion()[0]}")
    topic = f"compat-sasl-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(sasl_conf(sasl, "SCRAM-SHA-256", user, password))
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)],
                        operation_timeout=10, request_timeout=15)[topic].result(timeout=20)
    brokers = [f"{b.host}:{b.port}" for b in admin.list_topics(timeout=10).brokers.values()]
    if brokers != [sasl]:
        fail(f"Metadata over the SASL listener lists {brokers}, want [{sasl}]")
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]:
        round_trip(sasl, mechanism, user, password, topic)
    log(f"{user} produced and consumed with SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN; Metadata names {sasl}")

    plain_admin = AdminClient({"bootstrap.servers": plaintext, "broker.address.family": "v4"})
    other = f"user-{uuid.uuid4().hex[:8]}"
    upsert = UserScramCredentialUpsertion(other, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096),
                                          b"other-secret")
    plain_admin.alter_user_scram_credentials([upsert], request_timeout=15)[other].result(timeout=20)
    round_trip(sasl, "SCRAM-SHA-512", other, "other-secret", topic)
    deletion = UserScramCredentialDeletion(other, ScramMechanism.SCRAM_SHA_512)
    plain_admin.alter_user_scram_credentials([deletion], request_timeout=15)[other].result(timeout=20)
    if not refused(sasl, "SCRAM-SHA-512", other, "other-secret"):
        fail(f"{other} still logs in after its credential was deleted")
    log(f"a user created with alter_user_scram_credentials logs in; deleted, it cannot")

    for mechanism in ["SCRAM-SHA-256", "PLAIN"]:
        if not refused(sasl, mechanism, user, "wrong-password"):
            fail(f"{mechanism}: a wrong password is not refused with an authentication error")
        if not refused(sasl, mechanism, "nobody", password):
            fail(f"{mechanism}: an unknown user is not refused with an authentication error")
    log("wrong password and unknown user refused (SCRAM-SHA-256, PLAIN)")

    unauthenticated = AdminClient({"bootstrap.servers": sasl, "broker.address.family": "v4"})
    try:
        unauthenticated.list_topics(timeout=5)
        fail("a PLAINTEXT client got metadata from the SASL listener")
    except KafkaException:
        log("a PLAINTEXT client on the SASL listener gets nothing")

    from kafka import KafkaConsumer, KafkaProducer
    common = {"bootstrap_servers": sasl, "security_protocol": "SASL_PLAINTEXT",
              "sasl_mechanism": "SCRAM-SHA-256", "sasl_plain_username": user,
              "sasl_plain_password": password}
    producer = KafkaProducer(**common)
    value = uuid.uuid4().hex.encode()
    metadata = producer.send(topic, value, partition=0).get(timeout=20)
    producer.close()
    consumer = KafkaConsumer(**common, auto_offset_reset="earliest", consumer_timeout_ms=10000)
    tp = __import__("kafka").TopicPartition(topic, 0)
    consumer.assign([tp])
    consumer.seek(tp, metadata.offset)
    if not any(record.value == value for record in consumer):
        fail("kafka-python (SCRAM-SHA-256) did not read back what it produced")
    consumer.close()
    log("kafka-python SCRAM-SHA-256: produced and consumed")

    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    if kcat is None:
        fail("kcat is not installed (compat/run.sh installs it)")
    def kcat_run(mechanism, *args, stdin=None):
        command = [kcat, "-b", sasl, "-X", "security.protocol=SASL_PLAINTEXT", "-X", f"sasl.mechanisms={mechanism}",
                   "-X", f"sasl.username={user}", "-X", f"sasl.password={password}", *args]
        return subprocess.run(command, input=stdin, capture_output=True, timeout=30)
    value = f"kcat-{uuid.uuid4().hex}"
    produced = kcat_run("SCRAM-SHA-512", "-P", "-t", topic, "-p", "1", stdin=value.encode() + b"\n")
    if produced.returncode != 0:
        fail(f"kcat SCRAM-SHA-512 produce failed: {produced.stderr.decode()[-500:]}")
    consumed = kcat_run("SCRAM-SHA-512", "-C", "-t", topic, "-p", "1", "-o", "beginning", "-e", "-q")
    if value not in consumed.stdout.decode():
        fail(f"kcat SCRAM-SHA-512 did not read back {value}: {consumed.stderr.decode()[-500:]}")
    for mechanism in ["SCRAM-SHA-256", "PLAIN"]:
        listed = kcat_run(mechanism, "-L")
        if listed.returncode != 0 or f"at {sasl}" not in listed.stdout.decode():
            fail(f"kcat {mechanism} -L failed: {listed.stderr.decode()[-500:]}")
    log("kcat: SCRAM-SHA-512 produced and consumed, SCRAM-SHA-256 and PLAIN listed metadata")
    log("all checks passed")


if __name__ == "__main__":
    main()
