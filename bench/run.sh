#!/usr/bin/env bash
# The CPU benchmarks (items 1-5 of docs/benchmarks.md), then one table of every result:
# the whole-process ratios against a plain diffusers script first.
#
#   bench/run.sh                     # about 10 minutes on 2 quiet cores
#   BENCH_THREADS=2 bench/run.sh     # torch threads (default 1; all cases use the same)
#
# Needs PostgreSQL at BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/test,
# where it creates and drops scratch databases) and Redis at BENCH_REDIS (default
# redis://127.0.0.1:6379/14, flushed). Scratch files go to BENCH_WORK.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
work=${BENCH_WORK:-bench-work}
results="$work/results"
rm -rf "$results"
mkdir -p "$results"
# A private checkpoint-hash cache: the first batch of a run hashes the checkpoint as usual.
export REPROGRID_HASH_CACHE="$work/file-hashes.json"
common=(--workdir "$work" --threads "${BENCH_THREADS:-1}")
started=$SECONDS
run() {
    local name=$1
    shift
    echo "== $name" >&2
    "$PYTHON" -m "bench.$name" "${common[@]}" --out "$results/$name.json" "$@"
}
run process
run throughput
run distributed
run submit
run query
run memory
run determinism
run review
"$PYTHON" -m bench.report --seconds $((SECONDS - started)) \
    "$results"/{process,throughput,distributed,submit,query,memory,determinism,review}.json
