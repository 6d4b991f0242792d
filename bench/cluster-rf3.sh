#!/usr/bin/env bash
# Replicated cluster measurements (docs/benchmarks.md, "Cluster, RF 3"): three `keel serve`
# processes (each a controller and a broker) and the benchmark client on the same machine,
# 1 KiB records, 8 partitions with 3 replicas and min.insync.replicas 2, acks=all, flush never
# (the cluster default); then the same load against one single-node broker for the ratio.
#
#   cargo build --release -p keel
#   bench/cluster-rf3.sh [OUT_DIR]
#
# Environment: KEEL (binary, default target/release/keel), DATA_ROOT (default /work or /tmp),
# SECONDS_MEASURED (default 20). JSON and plots land in OUT_DIR (default
# bench/results/cluster-rf3). Every process started here is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEL=${KEEL:-target/release/keel}
MEASURED=${SECONDS_MEASURED:-20}
OUT=${1:-bench/results/cluster-rf3}
DATA_ROOT=${DATA_ROOT:-$( [ -d /work ] && echo /work || echo /tmp )}
mkdir -p "$OUT"
DATA=$(mktemp -d "$DATA_ROOT/keel-bench-cluster.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$DATA"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

C=1@127.0.0.1:29193,2@127.0.0.1:29293,3@127.0.0.1:29393
BROKERS=127.0.0.1:29192,127.0.0.1:29292,127.0.0.1:29392
for i in 1 2 3; do
    "$KEEL" serve --node-id "$i" --controllers "$C" --listen "127.0.0.1:29${i}92" --data-dir "$DATA/node-$i" \
        >"$DATA/node-$i.log" 2>&1 &
    PIDS+=($!)
done
for i in 1 2 3; do wait_port "29${i}92"; done
sleep 3
# (Into a file first: `keel cluster status | head` may close the pipe before it has printed all.)
"$KEEL" cluster status --controllers "$C" >"$DATA/status.txt" 2>&1 || true
head -8 "$DATA/status.txt"

BASE=(--partitions 8 --message-size 1024 --producers 1 --linger-ms 5 --batch-size 131072 --warmup 5 --duration "$MEASURED")
run() {  # NAME BROKERS ARGS...
    local name=$1 brokers=$2
    shift 2
    sync
    sleep 1
    echo "== $name: keel bench --brokers $brokers ${BASE[*]} $*"
    "$KEEL" bench --brokers "$brokers" "${BASE[@]}" "$@" --name "$name" --json "$OUT/$name.json" \
        --plot "$OUT/$name.svg" --quiet || echo "(exit status $?)"
}

# (a) throughput: acks=all, as fast as it goes, no consumers.
run rf3-max-rate "$BROKERS" --replication-factor 3 --subscriptions 0 --max-rate --acks all
# (b) end-to-end latency at a paced 20 MiB/s with one consumer.
run rf3-e2e-20mib "$BROKERS" --replication-factor 3 --subscriptions 1 --consumers 1 --rate-mib 20 --acks all

for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
PIDS=()

# The same load on one single-node broker (flush never, as the cluster topics) for the ratio.
"$KEEL" serve --data-dir "$DATA/single" --listen 127.0.0.1:29092 >"$DATA/single.log" 2>&1 &
PIDS+=($!)
wait_port 29092
sleep 2
run rf1-max-rate 127.0.0.1:29092 --subscriptions 0 --max-rate --acks all --topic-config flush.policy=never
run rf1-e2e-20mib 127.0.0.1:29092 --subscriptions 1 --consumers 1 --rate-mib 20 --acks all \
    --topic-config flush.policy=never
