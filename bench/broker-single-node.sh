#!/usr/bin/env bash
# Single-node broker measurements (docs/benchmarks.md, "Broker (single node)"): one `keel serve`
# process and the benchmark client on the same machine, 1 KiB records, 8 partitions, one
# librdkafka producer with linger 5 ms and 128 KiB batches.
#
#   cargo build --release -p keel
#   bench/broker-single-node.sh [OUT_DIR]
#
# Environment: KEEL (binary, default target/release/keel), PORT (default 29092), DATA_ROOT
# (where the broker's data directory is created, default /work or /tmp), SECONDS_MEASURED
# (default 20), CASES (default "a b c d"). Each case prints its table; JSON, plots, RSS samples
# and CPU use land in OUT_DIR (default bench/results/broker-single-node).
set -euo pipefail
cd "$(dirname "$0")/.."

KEEL=${KEEL:-target/release/keel}
PORT=${PORT:-29092}
MEASURED=${SECONDS_MEASURED:-20}
OUT=${1:-bench/results/broker-single-node}
DATA_ROOT=${DATA_ROOT:-$( [ -d /work ] && echo /work || echo /tmp )}
mkdir -p "$OUT"
DATA=$(mktemp -d "$DATA_ROOT/keel-bench-data.XXXXXX")
BROKERS=127.0.0.1:$PORT

"$KEEL" serve --data-dir "$DATA" --listen "$BROKERS" >"$OUT/keel-serve.log" 2>&1 &
KEEL_PID=$!
cleanup() {
    kill -TERM "$KEEL_PID" 2>/dev/null || true
    wait "$KEEL_PID" 2>/dev/null || true
    rm -rf "$DATA"
}
trap cleanup EXIT
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
sleep 2

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$KEEL_PID/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$KEEL_PID/stat"; }
echo "broker pid $KEEL_PID, idle RSS $(rss_kib) KiB" | tee "$OUT/rss.txt"

BASE=(--brokers "$BROKERS" --partitions 8 --message-size 1024 --producers 1 --linger-ms 5 --batch-size 131072)
TIMED=(--warmup 5 --duration "$MEASURED")

# run NAME ARGS...: one benchmark, after a sync so earlier runs' dirty pages are not being
# written back under this one, with the broker's RSS sampled every 200 ms and its CPU time.
run() {
    local name=$1
    shift
    case " ${CASES:-a b c d} " in *" ${name%%-*} "*) ;; *) return 0 ;; esac
    local before sampler
    sync
    sleep 1
    before=$(cpu_ticks)
    (while kill -0 "$KEEL_PID" 2>/dev/null; do rss_kib; sleep 0.2; done) >"$OUT/$name.rss" &
    sampler=$!
    echo "== $name: keel bench ${BASE[*]} $*"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    /usr/bin/time -f "client: %e s wall, %U s user, %S s system, %P CPU, max RSS %M KiB" \
        "$KEEL" bench "${BASE[@]}" "$@" --name "$name" --json "$OUT/$name.json" --plot "$OUT/$name.svg" --quiet \
        || echo "(exit status $?)"
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    local ticks=$(( $(cpu_ticks) - before ))
    echo "broker: CPU $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}') s," \
        "max RSS $(sort -n "$OUT/$name.rss" | tail -1) KiB, RSS after $(rss_kib) KiB" | tee -a "$OUT/rss.txt"
}

# (a) acks=1, topic flush policy never, as fast as it goes.
run a-acks1-flush-never "${TIMED[@]}" --subscriptions 0 --max-rate --acks 1 --topic-config flush.policy=never
# (b) the default flush policy (always: acknowledged = fsynced), acks=all, as fast as it goes.
run b-acksall-flush-always "${TIMED[@]}" --subscriptions 0 --max-rate --acks all
# (c) consume from the beginning: a 4 GiB backlog built with consumers paused, producers stop,
#     then one consumer (and then two) read all 8 partitions from offset 0.
run c-consume-1-consumer --subscriptions 1 --consumers 1 --max-rate --acks 1 --topic-config flush.policy=never \
    --warmup 0 --duration 120 --backlog-mib 4096 --stop-producers-for-drain
run c-consume-2-consumers --subscriptions 1 --consumers 2 --max-rate --acks 1 --topic-config flush.policy=never \
    --warmup 0 --duration 120 --backlog-mib 4096 --stop-producers-for-drain
# (d) end-to-end latency at a 100 MiB/s target, acks=all, default flush (always), then never.
run d-e2e-100mib-flush-always "${TIMED[@]}" --subscriptions 1 --consumers 1 --rate-mib 100 --acks all
run d-e2e-100mib-flush-never "${TIMED[@]}" --subscriptions 1 --consumers 1 --rate-mib 100 --acks all \
    --topic-config flush.policy=never
sleep 2
echo "idle RSS after the runs $(rss_kib) KiB" | tee -a "$OUT/rss.txt"
