#!/usr/bin/env bash
# Runs every fuzz target for a bounded time on stable Rust, with libFuzzer's coverage guidance:
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]      (default 30; 0 only builds)
#   FUZZ_TARGETS="sasl gossip_datagram" bash fuzz/run.sh 60
#
# Builds the targets with the codegen flags cargo-fuzz uses, minus the sanitizer (which needs
# nightly): a panic aborts, and libFuzzer reports the abort as a crash. Each target starts from
# its committed corpus (fuzz/corpus/<target>, read only) and writes what it finds to a scratch
# directory removed at exit. Exits non-zero if any target crashes, after printing the input,
# saved under fuzz/artifacts/<target>/ (ignored by git), and the command that reproduces it.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-30}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "usage: bash fuzz/run.sh [SECONDS_PER_TARGET]" >&2; exit 2; }
targets=(${FUZZ_TARGETS:-decode_request sasl record_batch gossip_datagram cluster_frame metadata_record group_record})
rss_limit_mb="${FUZZ_RSS_LIMIT_MB:-2048}"

# libfuzzer-sys compiles libFuzzer's C++ sources: it needs a C++ compiler.
if ! command -v c++ >/dev/null && ! command -v clang++ >/dev/null; then
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "fuzz: installing g++ with apt-get (libFuzzer is C++)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++ >/dev/null
    else
        echo "fuzz: no C++ compiler; install g++ (or clang) and run again" >&2
        exit 1
    fi
fi

host=$(rustc -vV | sed -n 's/^host: //p')
# A separate target directory, so these flags never invalidate another build. The explicit
# --target keeps the flags off build scripts and proc macros, which must not be instrumented.
export CARGO_TARGET_DIR="$PWD/target/stable"
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks"
bin_dir="$CARGO_TARGET_DIR/$host/release"

started=$SECONDS
echo "== fuzz: building ${#targets[@]} targets (stable, coverage-instrumented)"
cargo build --release --locked --quiet --target "$host" $(printf -- '--bin %s ' "${targets[@]}")
echo "fuzz: built in $((SECONDS - started)) s: $bin_dir/<target>"
((seconds > 0)) || exit 0

scratch=$(mktemp -d "${TMPDIR:-/tmp}/keel-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target/corpus" "$scratch/$target/artifacts" "corpus/$target"
    log="$scratch/$target/log"
    echo "== fuzz: $target for ${seconds} s"
    status=0
    # The outer timeout bounds a run whose own clock stops (a hang inside one input is
    # libFuzzer's -timeout, reported as a crash).
    timeout --kill-after=10 $((seconds + 60)) "$bin_dir/$target" \
        -max_total_time="$seconds" -rss_limit_mb="$rss_limit_mb" -malloc_limit_mb="$rss_limit_mb" \
        -timeout=10 -max_len=65536 -print_final_stats=1 \
        -artifact_prefix="$scratch/$target/artifacts/" \
        "$scratch/$target/corpus" "corpus/$target" >"$log" 2>&1 || status=$?
    grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' "$log" | sed 's/^/    /' || true
    grep -E '^stat::number_of_executed_units' "$log" | sed 's/^/    /' || true
    if ((status != 0)); then
        failed+=("$target")
        echo "fuzz: $target FAILED (exit $status); the end of its log:"
        grep -v -E '^#[0-9]+[[:space:]]+(NEW|REDUCE|pulse)' "$log" | tail -40 | sed 's/^/    /'
        mkdir -p "artifacts/$target"
        for input in "$scratch/$target/artifacts"/*; do
            [[ -e "$input" ]] || continue
            cp "$input" "artifacts/$target/"
            saved="fuzz/artifacts/$target/$(basename "$input")"
            echo "fuzz: crashing input: $saved"
            echo "fuzz: reproduce (from the repository root): bash fuzz/run.sh 0 && fuzz/target/stable/$host/release/$target $saved"
        done
    fi
done

echo "fuzz: done in $((SECONDS - started)) s"
if ((${#failed[@]})); then
    echo "fuzz: crashes in: ${failed[*]}; add each input to fuzz/corpus/<target>/ and a #[test] in the crate" >&2
    exit 1
fi
