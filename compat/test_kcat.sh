#!/usr/bin/env bash
# keel compatibility test: kcat (Debian's kcat 1.7.1, built on librdkafka 2.0.x).
#
# Usage: test_kcat.sh BOOTSTRAP    (e.g. 127.0.0.1:9092)
#
# Produces keyed lines with `kcat -P -K:` (plain, then `-z snappy`) to partition 0 of a topic
# that the first produce auto-creates, consumes the partition back with
# `kcat -C -e -o beginning -f '%k %s %o\n'` and compares byte-for-byte (order and offsets
# included), then checks the topic in `kcat -L` metadata.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 BOOTSTRAP" >&2
    exit 2
fi
BOOTSTRAP=$1
say() { printf '[kcat] %s\n' "$*"; }
die() { printf '[kcat] FAIL: %s\n' "$*"; exit 1; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/keel-compat-kcat.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

say "$(kcat -V 2>&1 | grep -m1 -i 'version')"

TOPIC="compat-kcat-$$-$RANDOM"
KCAT=(kcat -b "$BOOTSTRAP" -X broker.address.family=v4 -X socket.timeout.ms=10000)
N=300

# Keyed lines: a value may contain spaces, the key delimiter ':' (only the first one splits),
# tabs and UTF-8. Empty lines are skipped by kcat -P, so there are none.
make_lines() {  # $1 = tag
    local i
    for ((i = 0; i < N; i++)); do
        case $((i % 5)) in
            0) printf '%s-k%d:%s value %d\n' "$1" "$i" "$1" "$i" ;;
            1) printf '%s-k%d:with:colons:%d\n' "$1" "$i" "$i" ;;
            2) printf '%s-k%d:tab\there %d\n' "$1" "$i" "$i" ;;
            3) printf '%s-k%d:ünïcødé ✓ %d\n' "$1" "$i" "$i" ;;
            4) printf '%s-k%d:%s\n' "$1" "$i" "$(printf 'x%.0s' $(seq 1 $((i % 50 + 1))))" ;;
        esac
    done
}

make_lines plain >"$WORK/plain.in"
make_lines snappy >"$WORK/snappy.in"

# Expected consume output: "%k %s %o" per record, offsets continuing across both batches.
awk -v OFS=' ' '{ i = index($0, ":"); print substr($0, 1, i - 1), substr($0, i + 1), NR - 1 }' \
    "$WORK/plain.in" "$WORK/snappy.in" >"$WORK/expected"

say "producing $N keyed lines (no compression) to $TOPIC [0]"
"${KCAT[@]}" -P -t "$TOPIC" -p 0 -K: <"$WORK/plain.in" >/dev/null 2>"$WORK/produce-plain.err" \
    || { cat "$WORK/produce-plain.err"; die "kcat -P (plain) exited non-zero"; }
say "producing $N keyed lines with -z snappy to $TOPIC [0]"
# -d msg: librdkafka logs each produced batch with its codec, so the test can tell whether the
# batch really went out snappy-compressed (librdkafka quietly sends uncompressed batches when
# it decides, from ApiVersions, that the broker cannot take the codec).
"${KCAT[@]}" -P -t "$TOPIC" -p 0 -K: -z snappy -d msg <"$WORK/snappy.in" 2>"$WORK/produce-snappy.err" \
    || { cat "$WORK/produce-snappy.err"; die "kcat -P -z snappy exited non-zero"; }
if grep -E '^%[0-4]\||ERROR|[Dd]elivery failed' "$WORK/produce-plain.err" "$WORK/produce-snappy.err"; then
    die "kcat -P reported errors"
fi
if grep 'not compressing' "$WORK/produce-snappy.err"; then
    die "librdkafka did not snappy-compress the batch"
fi
grep -q 'Produce MessageSet with .*, snappy)' "$WORK/produce-snappy.err" \
    || { grep 'Produce MessageSet' "$WORK/produce-snappy.err"; die "no snappy-compressed batch was produced"; }

say "consuming $TOPIC [0] from the beginning"
if ! "${KCAT[@]}" -C -t "$TOPIC" -p 0 -o beginning -e -f '%k %s %o\n' \
    >"$WORK/got" 2>"$WORK/consume.err"; then
    sed 's/^/[kcat] consumer: /' "$WORK/consume.err"
    die "kcat -C exited non-zero after $(wc -l <"$WORK/got") of $((2 * N)) records"
fi
if ! cmp -s "$WORK/expected" "$WORK/got"; then
    sed 's/^/[kcat] consumer: /' "$WORK/consume.err"
    diff "$WORK/expected" "$WORK/got" | head -20 | sed 's/^/[kcat] diff: /'
    die "consumed records differ from produced ones ($(wc -l <"$WORK/got") lines, want $((2 * N)))"
fi
say "consumed $((2 * N)) records back, byte-for-byte equal with offsets 0..$((2 * N - 1))"

say "metadata listing (kcat -L)"
"${KCAT[@]}" -L >"$WORK/meta" 2>"$WORK/meta.err" || { cat "$WORK/meta.err"; die "kcat -L failed"; }
{ grep -E 'brokers:|broker [0-9]+ at' "$WORK/meta"; grep -A1 "topic \"$TOPIC\"" "$WORK/meta"; } | sed 's/^/[kcat]   /'
grep -q "^ *broker [0-9]* at $BOOTSTRAP" "$WORK/meta" || die "kcat -L lists no broker at $BOOTSTRAP"
grep -q "topic \"$TOPIC\" with 1 partitions:" "$WORK/meta" || die "kcat -L does not list $TOPIC with 1 partition"
grep -A1 "topic \"$TOPIC\"" "$WORK/meta" | grep -q "partition 0, leader [0-9]*, replicas: [0-9]*, isrs: [0-9]*" \
    || die "kcat -L: partition 0 of $TOPIC has no leader/replicas/isrs line"
# Metadata for just this topic, too (a Metadata request naming the topic).
"${KCAT[@]}" -L -t "$TOPIC" 2>&1 | grep -q "topic \"$TOPIC\" with 1 partitions:" \
    || die "kcat -L -t $TOPIC does not list the topic"

say "all checks passed"
