#!/usr/bin/env bash
# Runs every workload in bench/workloads against one broker and keeps the JSON results and
# plots (docs/benchmarks.md, "keel bench: OMB workloads").
#
#   bench/run-workloads.sh LABEL HOST:PORT OUT_DIR [extra keel bench flags...]
#
# e.g. bench/run-workloads.sh keel 127.0.0.1:29092 bench/results/omb
#      bench/run-workloads.sh keel-flush-never 127.0.0.1:29092 bench/results/omb --topic-config flush.policy=never
# Results are OUT_DIR/WORKLOAD.LABEL.json and .svg; WORKLOADS="a b" picks files by name. With
# BROKER_PID set, the broker's CPU time and RSS per workload go to OUT_DIR/LABEL.resources.
set -uo pipefail
cd "$(dirname "$0")/.."

LABEL=$1
BROKERS=$2
OUT=$3
shift 3
KEEL=${KEEL:-target/release/keel}
mkdir -p "$OUT"
for file in bench/workloads/*.toml; do
    name=$(basename "$file" .toml)
    if [ -n "${WORKLOADS:-}" ] && [[ " $WORKLOADS " != *" $name "* ]]; then
        continue
    fi
    sync
    sleep 1
    echo "== $name on $LABEL: keel bench --brokers $BROKERS --workload $file $*"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    ticks=0
    if [ -n "${BROKER_PID:-}" ]; then ticks=$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat"); fi
    /usr/bin/time -f "client: %e s wall, %U s user, %S s system, %P CPU, max RSS %M KiB" \
        timeout 300 "$KEEL" bench --brokers "$BROKERS" --workload "$file" "$@" --name "$name ($LABEL)" \
        --json "$OUT/$name.$LABEL.json" --plot "$OUT/$name.$LABEL.svg" --quiet \
        || echo "(exit status $?)"
    if [ -n "${BROKER_PID:-}" ]; then
        ticks=$(( $(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat") - ticks ))
        echo "$name: broker CPU $(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}') s," \
            "RSS $(awk '/^VmRSS/ {print $2}' "/proc/$BROKER_PID/status") KiB," \
            "peak RSS $(awk '/^VmHWM/ {print $2}' "/proc/$BROKER_PID/status") KiB" | tee -a "$OUT/$LABEL.resources"
    fi
done
