#!/usr/bin/env bash
# keel compatibility suite: real Kafka clients written by others against a keel broker.
#
#   bash compat/run.sh path/to/keel
#
# Installs what it needs (Debian, as root): kcat from apt if it is not on PATH, and a Python
# venv under ${TMPDIR:-/tmp} with pinned client libraries (reused by later runs). Starts keel
# on a free 127.0.0.1 port with a fresh data dir, runs every client test under `timeout`,
# prints PASS/FAIL per test and finally one line "compat: N passed, M failed"; exits non-zero
# if anything failed. keel is always stopped (by PID) on the way out.
#
# Clients and what they exercise:
#   confluent  confluent-kafka (Python over its bundled librdkafka): AdminClient, all codecs,
#              keys/headers/timestamps, assign(), watermarks, offsets_for_times
#   kafka-python  pure-Python protocol implementation: admin create/delete, acks all/1/0,
#              gzip/lz4, assign()+seek_to_beginning, beginning/end offsets, offsets_for_times
#   kcat       Debian's kcat 1.7.1 (librdkafka 2.0.x): -P with keys (plain, snappy), -C, -L
#   confluent-groups  two subscribe()d consumers sharing a 6-partition topic, synchronous
#              commits, a leave and takeover, resuming from committed offsets; the idempotent
#              producer (enable.idempotence=true, acks=all) appending exactly once
#   kafka-python-groups  the same group scenario with kafka-python's own group implementation
#   confluent-admin  AdminClient: describe_cluster, create_partitions, incremental_alter_configs,
#              alter_configs, describe_configs, delete_records, list_offsets (max timestamp),
#              list/describe/delete consumer groups, list/alter consumer group offsets,
#              SCRAM credentials (alter/describe_user_scram_credentials)
#   sasl      a SASL_PLAINTEXT listener beside the PLAINTEXT one: confluent-kafka logs in with
#              SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN (the KEEL_BOOTSTRAP_USER user and one
#              created through the admin API), wrong passwords and unknown users are refused,
#              kafka-python logs in with SCRAM-SHA-256
#   kafka-python-admin  KafkaAdminClient: describe_cluster, create_partitions, alter_configs,
#              describe_configs, describe_log_dirs, delete_records, list/describe/delete
#              consumer groups, list_consumer_group_offsets
#   cluster-failover  a three-node keel cluster (separate processes, RF 3, min ISR 2) under an
#              idempotent acks=all confluent-kafka producer for 60 s while a leader is killed
#              with SIGKILL and restarted and another node (the group coordinator if it can)
#              is SIGSTOPped for 8 s; every acknowledged record is read back exactly once in
#              order, and a committing consumer group processes them all without being handed
#              a record below its committed offsets; prints the longest time without a
#              successful produce
#   cluster-disk-swap  five keel processes (three controllers, two broker-only), a topic on three
#              of them (RF 3, min ISR 2), 20,000 records acknowledged with acks=all: the followers
#              are SIGKILLed and fenced one by one, then the leader; a follower in the ELR comes
#              back on an empty data directory (a disk swap) and must not be elected; every
#              acknowledged record is read back exactly once. Twice: after the leader crashed
#              (leadership back through unclean.leader.election.enable, which prefers the
#              last-known ELR) and after it stopped cleanly (leadership back on its own, timed)
#   cluster-clean-restart  three keel processes snapshotting their metadata log every 32 entries
#              (controller_snapshot_entries): records acknowledged across a leader crash; every
#              controller just past a snapshot; the leader stopped cleanly, more records in a newer
#              leader epoch, the other two stopped; all three restarted at once, from snapshots in
#              which the first-stopped node still leads. Every partition must get a live leader
#              (timed), every acknowledged record must be read back exactly once, producing must
#              work, and no broker may answer Metadata with a leader epoch older than before
# The first three keep to assign() without commits and non-idempotent producers; the groups
# tests cover group membership, commits and idempotence. A new group's first rebalance waits
# group.initial.rebalance.delay.ms (3 s by default, as in Kafka).
set -euo pipefail

# ---- pinned client versions -------------------------------------------------------------
# confluent-kafka wheels bundle librdkafka; the bundled version is printed by the test
# (confluent_kafka.libversion()). confluent-kafka 2.16.1 bundles librdkafka 2.16.0.
CONFLUENT_KAFKA_VERSION=2.16.1
# kafka-python 2.3.3 is the newest 2.x (3.x is a rewrite). lz4 lets it produce lz4 batches.
KAFKA_PYTHON_VERSION=2.3.3
LZ4_VERSION=4.4.5

TEST_TIMEOUT=90      # seconds per client test
START_TIMEOUT=20     # seconds for keel to accept connections
STOP_TIMEOUT=15      # seconds for keel to exit after SIGTERM

if [[ $# -ne 1 ]]; then
    echo "usage: $0 path/to/keel-binary" >&2
    exit 2
fi
KEEL=$(readlink -f -- "$1")
[[ -x $KEEL ]] || { echo "compat: $1 is not an executable keel binary" >&2; exit 2; }
HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
TMP_BASE=${TMPDIR:-/tmp}

log() { printf 'compat: %s\n' "$*"; }

# ---- installs -----------------------------------------------------------------------------
as_root() {
    if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        echo "compat: need root (or sudo) to run: $*" >&2; return 1; fi
}
apt_packages=()
command -v kcat >/dev/null || apt_packages+=(kcat)
# Debian splits venv/ensurepip out of python3; a fresh machine may not have python3 at all.
if ! command -v python3 >/dev/null; then
    apt_packages+=(python3 python3-venv)
elif ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_packages+=(python3-venv)
fi
if ((${#apt_packages[@]})); then
    log "installing with apt-get: ${apt_packages[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

PINS="confluent-kafka==$CONFLUENT_KAFKA_VERSION kafka-python==$KAFKA_PYTHON_VERSION lz4==$LZ4_VERSION"
VENV="$TMP_BASE/keel-compat-venv-$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ ! -f $VENV/.pins || $(cat "$VENV/.pins") != "$PINS" ]]; then
    log "creating Python venv $VENV ($PINS)"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    # shellcheck disable=SC2086  # PINS is a list of requirement specifiers
    "$VENV/bin/pip" install --disable-pip-version-check -q $PINS
    echo "$PINS" >"$VENV/.pins"
fi
PY="$VENV/bin/python"

# ---- keel ---------------------------------------------------------------------------------
WORK=$(mktemp -d "$TMP_BASE/keel-compat.XXXXXX")
KEEL_LOG="$WORK/keel.log"
KEEL_PID=

stop_keel() {  # SIGTERM, bounded wait, then SIGKILL; returns keel's exit status
    local pid=$KEEL_PID status=0 i
    [[ -n $pid ]] || return 0
    KEEL_PID=
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < STOP_TIMEOUT * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "keel (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        return 124
    fi
    wait "$pid" 2>/dev/null || status=$?
    return "$status"
}
TEST_PID=
cleanup() {
    # timeout(1) passes the TERM on to the test it runs.
    [[ -z $TEST_PID ]] || { kill -TERM "$TEST_PID" 2>/dev/null; wait "$TEST_PID" 2>/dev/null; } || true
    stop_keel >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

SASL_USER=compat-admin
SASL_PASSWORD=compat-admin-secret
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_keel() {
    local i
    PORT=$(free_port)
    BOOTSTRAP="127.0.0.1:$PORT"
    SASL_BOOTSTRAP="127.0.0.1:$(free_port)"
    # A cluster of one; its cluster port on a free port too, so nothing else on 9093 matters.
    # Two listeners: PLAINTEXT for most tests, SASL_PLAINTEXT (with a bootstrap user) for
    # test_sasl.py.
    printf 'sasl_mechanisms = ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"]\n' >"$WORK/keel.toml"
    KEEL_BOOTSTRAP_USER="$SASL_USER:$SASL_PASSWORD" "$KEEL" serve --config "$WORK/keel.toml" --data-dir "$WORK/data" \
        --listener "PLAINTEXT://$BOOTSTRAP" --listener "SASL_PLAINTEXT://$SASL_BOOTSTRAP" \
        --controller-listen "127.0.0.1:$(free_port)" >"$KEEL_LOG" 2>&1 &
    KEEL_PID=$!
    for ((i = 0; i < START_TIMEOUT * 10; i++)); do
        if ! kill -0 "$KEEL_PID" 2>/dev/null; then
            log "keel exited during startup:"; sed 's/^/  keel: /' "$KEEL_LOG"; return 1
        fi
        port_open "$PORT" && return 0
        sleep 0.1
    done
    log "keel did not accept connections on $BOOTSTRAP within ${START_TIMEOUT}s:"
    sed 's/^/  keel: /' "$KEEL_LOG"
    return 1
}

# ---- tests --------------------------------------------------------------------------------
PASSED=0
FAILED=0
FAILED_NAMES=()
result() {  # name status seconds
    if [[ $2 -eq 0 ]]; then
        PASSED=$((PASSED + 1)); printf 'PASS %s (%ss)\n' "$1" "$3"
    else
        FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1")
        local why="exit status $2"
        [[ $2 -eq 124 || $2 -eq 137 ]] && why="timed out after ${TEST_TIMEOUT}s"
        printf 'FAIL %s (%s, %ss)\n' "$1" "$why" "$3"
    fi
}
run_test() {  # name command...
    local name=$1 status=0 start=$SECONDS
    shift
    echo "---- $name"
    # In the background so that a signal to this script interrupts `wait` and the trap runs
    # at once (bash defers traps while a foreground command runs).
    PYTHONUNBUFFERED=1 timeout -k 5 "$TEST_TIMEOUT" "$@" </dev/null &
    TEST_PID=$!
    wait "$TEST_PID" || status=$?
    TEST_PID=
    result "$name" "$status" $((SECONDS - start))
}

if start_keel; then
    log "keel $("$KEEL" --version 2>/dev/null | awk '{print $NF}') serving on $BOOTSTRAP (pid $KEEL_PID), data in $WORK/data"
    result keel-start 0 0
    run_test confluent "$PY" "$HERE/test_confluent.py" "$BOOTSTRAP"
    run_test kafka-python "$PY" "$HERE/test_kafka_python.py" "$BOOTSTRAP"
    run_test kcat bash "$HERE/test_kcat.sh" "$BOOTSTRAP"
    run_test sasl "$PY" "$HERE/test_sasl.py" "$SASL_BOOTSTRAP" "$BOOTSTRAP" "$SASL_USER" "$SASL_PASSWORD"
    run_test confluent-groups "$PY" "$HERE/test_confluent_groups.py" "$BOOTSTRAP"
    run_test kafka-python-groups "$PY" "$HERE/test_kafka_python_groups.py" "$BOOTSTRAP"
    run_test confluent-admin "$PY" "$HERE/test_confluent_admin.py" "$BOOTSTRAP"
    run_test kafka-python-admin "$PY" "$HERE/test_kafka_python_admin.py" "$BOOTSTRAP"
    TEST_TIMEOUT=240 run_test cluster-failover "$PY" "$HERE/test_cluster_failover.py" "$KEEL" 60
    TEST_TIMEOUT=150 run_test cluster-disk-swap "$PY" "$HERE/test_cluster_disk_swap.py" "$KEEL"
    TEST_TIMEOUT=150 run_test cluster-clean-restart "$PY" "$HERE/test_cluster_clean_restart.py" "$KEEL"
    TEST_TIMEOUT=150 run_test cluster-voter-disk-swap "$PY" "$HERE/test_cluster_voter_disk_swap.py" "$KEEL"

    # keel must still be up after all of that, and stop cleanly on SIGTERM.
    echo "---- keel-shutdown"
    start=$SECONDS
    if ! kill -0 "$KEEL_PID" 2>/dev/null; then
        KEEL_PID=
        log "keel is no longer running"
        result keel-shutdown 1 0
    else
        status=0
        stop_keel || status=$?
        [[ $status -eq 0 ]] || log "keel exited with status $status after SIGTERM"
        result keel-shutdown "$status" $((SECONDS - start))
    fi
else
    result keel-start 1 0
fi

if ((FAILED)); then
    # The work dir (data and log) is removed on exit; keep the broker log for a post-mortem.
    KEPT_LOG="$TMP_BASE/keel-compat-last-keel.log"
    cp -f "$KEEL_LOG" "$KEPT_LOG" 2>/dev/null || KEPT_LOG="(lost)"
    echo "---- keel log: warnings and errors (last 30 lines; whole log kept in $KEPT_LOG)"
    grep -E ' (WARN|ERROR) ' "$KEEL_LOG" | tail -n 30 | cut -c1-400 || true
    echo "---- failed: ${FAILED_NAMES[*]}"
fi
echo "compat: $PASSED passed, $FAILED failed"
((FAILED == 0))
