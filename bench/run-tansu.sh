#!/usr/bin/env bash
# Runs every workload in bench/workloads against tansu (https://tansu.io), a fresh broker and
# SQLite database per workload: tansu 0.6.0's SQLite engine panicked after a run's DeleteTopics
# ("more or less than one row", tansu-storage lite.rs:503) and then failed every request.
#
#   cargo install tansu --locked --features dynostore,libsql --root /work/tansu
#   TANSU=/work/tansu/bin/tansu bench/run-tansu.sh bench/results/omb
#
# Results are OUT_DIR/WORKLOAD.tansu-sqlite.json and .svg, with tansu's CPU time and RSS in
# OUT_DIR/tansu-sqlite.resources. PORT (default 29192) and WORKLOADS as in run-workloads.sh.
set -uo pipefail
cd "$(dirname "$0")/.."

TANSU=${TANSU:-tansu}
OUT=${1:-bench/results/omb}
PORT=${PORT:-29192}
for file in bench/workloads/*.toml; do
    name=$(basename "$file" .toml)
    if [ -n "${WORKLOADS:-}" ] && [[ " $WORKLOADS " != *" $name "* ]]; then
        continue
    fi
    dir=$(mktemp -d "${TMPDIR:-/tmp}/keel-bench-tansu.XXXXXX")
    (cd "$dir" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" --storage-engine sqlite://tansu.db >"$dir/tansu.log" 2>&1) &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    sleep 1
    echo "tansu pid $pid, idle RSS $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") KiB"
    WORKLOADS=$name BROKER_PID=$pid bench/run-workloads.sh tansu-sqlite "127.0.0.1:$PORT" "$OUT"
    kill -TERM "$pid"
    sleep 2
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
    wait "$pid" 2>/dev/null
    echo "$name: tansu panics: $(grep -c panicked "$dir/tansu.log")"
    rm -rf "$dir"
done
