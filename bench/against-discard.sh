#!/usr/bin/env bash
# keel's single node against references measured in the same run (docs/benchmarks.md, "Against
# a broker that discards everything"): one librdkafka producer, 1 KiB records, 8 partitions,
# linger 5 ms, 128 KiB batches, as bench/broker-single-node.sh.
#
#   cargo install tansu --locked      # once, outside the repository
#   cargo build --release -p keel
#   bench/against-discard.sh [OUT_DIR]
#
# In ROUNDS (default 3) rounds, alternately: tansu with its `null://` storage engine (accepts and
# discards every batch) and keel with flush `never`, both acks=1 at the client's maximum rate.
# Then once each: keel acks=all flush `always` against fio writing 128 KiB blocks with an
# fdatasync after each, in the same directory; end-to-end latency at 100 MiB/s with flush
# `never` and `always`. Broker CPU time comes from /proc (utime + stime) around each run.
# With KEEL_BEFORE set (an older keel binary, started with KEEL_BEFORE_ARGS), every keel case runs
# for it too, just before the same case for KEEL, for a before/after ratio in the same run.
# Environment: KEEL, TANSU, SECONDS_MEASURED (default 10), ROUNDS, DATA_ROOT, PORT (default
# 29092; tansu uses PORT+100). Every process started here is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/.."

KEEL=${KEEL:-target/release/keel}
TANSU=${TANSU:-tansu}
MEASURED=${SECONDS_MEASURED:-10}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-29092}
TANSU_PORT=$((PORT + 100))
OUT=${1:-bench/results/against-discard}
DATA_ROOT=${DATA_ROOT:-$( [ -d /work ] && echo /work || echo /tmp )}
mkdir -p "$OUT"
SCRATCH=$(mktemp -d "$DATA_ROOT/keel-bench-discard.XXXXXX")
BROKER_PID=
stop_broker() {
    if [ -n "$BROKER_PID" ]; then
        kill -TERM "$BROKER_PID" 2>/dev/null || true
        wait "$BROKER_PID" 2>/dev/null || true
        BROKER_PID=
    fi
}
trap 'stop_broker; rm -rf "$SCRATCH"' EXIT

wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$BROKER_PID/stat"; }

# start_keel BINARY ARGS...
start_keel() {
    local binary=$1
    shift
    rm -rf "$SCRATCH/keel"
    "$binary" serve --data-dir "$SCRATCH/keel" --listen "127.0.0.1:$PORT" "$@" >>"$OUT/keel-serve.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$PORT"
    sleep 1
}

start_tansu() {
    "$TANSU" broker --listener-url "tcp://127.0.0.1:$TANSU_PORT" --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
        --storage-engine null://tansu/ >>"$OUT/tansu.log" 2>&1 &
    BROKER_PID=$!
    wait_port "$TANSU_PORT"
    sleep 1
}

# run NAME BROKER_PORT ARGS...: one `keel bench`, after a sync, with the broker's CPU time.
run() {
    local name=$1 port=$2 before
    shift 2
    sync
    sleep 1
    before=$(cpu_seconds)
    echo "== $name: load average $(cut -d' ' -f1-3 /proc/loadavg)"
    "$KEEL" bench --brokers "127.0.0.1:$port" --partitions 8 --message-size 1024 --producers 1 --linger-ms 5 \
        --batch-size 131072 --warmup 5 --duration "$MEASURED" "$@" --name "$name" --json "$OUT/$name.json" --quiet \
        || echo "(exit status $?)"
    echo "broker CPU: $(awk -v a="$before" -v b="$(cpu_seconds)" 'BEGIN {printf "%.2f", b - a}') s" | tee "$OUT/$name.cpu"
}

# keels: the binaries to measure, each as "LABEL BINARY ARGS...", before first.
KEELS=()
if [ -n "${KEEL_BEFORE:-}" ]; then
    KEELS+=("before $KEEL_BEFORE ${KEEL_BEFORE_ARGS:-}")
fi
KEELS+=("keel $KEEL --controller-listen 127.0.0.1:0")

MAX=(--subscriptions 0 --max-rate --acks 1)
for round in $(seq "$ROUNDS"); do
    start_tansu
    run "tansu-null-acks1-$round" "$TANSU_PORT" "${MAX[@]}"
    stop_broker
    for keel in "${KEELS[@]}"; do
        read -r -a words <<<"$keel"
        start_keel "${words[@]:1}"
        run "${words[0]}-acks1-flush-never-$round" "$PORT" "${MAX[@]}" --topic-config flush.policy=never
        stop_broker
    done
done

for keel in "${KEELS[@]}"; do
    read -r -a words <<<"$keel"
    start_keel "${words[@]:1}"
    run "${words[0]}-acksall-flush-always" "$PORT" --subscriptions 0 --max-rate --acks all
    run "${words[0]}-e2e-100mib-flush-never" "$PORT" --subscriptions 1 --consumers 1 --rate-mib 100 --acks all \
        --topic-config flush.policy=never
    run "${words[0]}-e2e-100mib-flush-always" "$PORT" --subscriptions 1 --consumers 1 --rate-mib 100 --acks all
    stop_broker
done

echo "== fio: 128 KiB sequential writes, fdatasync after each, in $SCRATCH"
fio --name=keel-reference --directory="$SCRATCH" --rw=write --bs=128k --size=1g --ioengine=sync --fdatasync=1 \
    --end_fsync=1 --output-format=json --output="$OUT/fio-128k-fdatasync.json" >/dev/null
python3 - "$OUT/fio-128k-fdatasync.json" <<'PY' | tee "$OUT/fio.txt"
import json, sys
write = json.load(open(sys.argv[1]))["jobs"][0]["write"]
print(f"fio: {write['bw_bytes'] / 1048576:.1f} MiB/s")
PY
echo "== fio: the same writes without fdatasync, 12 s: what the page cache costs here"
fio --name=keel-buffered --directory="$SCRATCH" --rw=write --bs=128k --size=16g --time_based --runtime=12 \
    --ioengine=sync --output-format=json --output="$OUT/fio-128k-buffered.json" >/dev/null
python3 - "$OUT/fio-128k-buffered.json" <<'PY' | tee -a "$OUT/fio.txt"
import json, sys
job = json.load(open(sys.argv[1]))["jobs"][0]
print(f"fio buffered: {job['write']['bw_bytes'] / 1048576:.1f} MiB/s, {job['sys_cpu'] + job['usr_cpu']:.0f}% of a core")
PY

# A table: MiB/s published, p99 publish and end-to-end latency, and broker CPU-seconds per GiB
# (CPU over warm-up and measurement, against the measured rate times their length).
python3 - "$OUT" "$MEASURED" <<'PY'
import glob, json, os, sys
out, measured = sys.argv[1], float(sys.argv[2])
print(f"{'run':40} {'MiB/s':>8} {'p99 pub ms':>10} {'p99 e2e ms':>10} {'CPU s/GiB':>9}")
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    if os.path.basename(path).startswith("fio"):
        continue
    run = json.load(open(path))
    cpu = float(open(path[:-5] + ".cpu").read().split()[2])
    rate = run["publish"]["mib_per_s"]
    e2e = (run.get("end_to_end_latency") or {}).get("p99_ms")
    pub = (run.get("publish_latency") or {}).get("p99_ms")
    gib = rate * (measured + 5) / 1024
    print(f"{run['name']:40} {rate:8.1f} {pub or 0:10.2f} {e2e or 0:10.2f} {cpu / gib if gib else 0:9.2f}")
PY
