#!/usr/bin/env bash
# npm run bench: the benchmark (scripts/bench/run.ts) in one VM session. Prints the
# markdown table and keeps the raw numbers in bench/results.json.
# Options are those of scripts/vm/run.sh (--kernel, --udev); DMSNAP_BENCH_ROUNDS sets the
# cycles per contender (default 12); DMSNAP_BENCH_ONLY=groups, fio or monitor runs the group
# snapshots, the origin writes under snapshots (DMSNAP_BENCH_FIO_ROUNDS runs per kind, default
# 3) or the monitor's idle cost alone.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[[ -f dist/scripts/bench/run.js ]] || { echo "bench.sh: run 'npm run build:ts' first" >&2; exit 1; }
share=$(mktemp -d /tmp/dmsnap-bench.XXXXXX)
trap 'rm -rf "$share"' EXIT
# The guest's /tmp (a tmpfs) holds every loop device's file: origins, COWs, LVM's disk,
# the incremental image; 3 GiB of guest memory is not enough for all of them.
scripts/vm/run.sh --memory "${DMSNAP_VM_MEMORY:-6144}" --share "$share" "$@" -- node dist/scripts/bench/run.js
# DMSNAP_BENCH_ONLY runs a part alone and keeps no results file.
[[ -f $share/bench.json ]] || exit 0
mkdir -p bench
cp "$share/bench.json" bench/results.json
echo "bench.sh: raw numbers in bench/results.json" >&2
