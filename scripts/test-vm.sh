#!/usr/bin/env bash
# Runs the VM suite (jest, jest.vm.config.js) inside the VM test bed.
#
# usage: scripts/test-vm.sh [--kernel 5.10|6.1|6.12] [--udev|--no-udev] [--matrix] [JEST ARGS...]
#   --matrix   6.1 and 6.12 each without and with udev, and 5.10 without udev (five cells,
#              in six guests: the primary cell's two parts run as guests of their own),
#              and the tests across a reboot on each kernel line (two boots each)
#   reboot     as the jest argument: the tests across a reboot (two boots with the same
#              disks, see run_reboot) instead of the suite
# Without --matrix: one run on $DMSNAP_VM_KERNEL (default 6.1), udev per $DMSNAP_VM_UDEV.
# Each cell runs with DMSNAP_VM_CELL_ROLE: "primary" for kernel 6.1 without udev (the
# long crash and soak tests in full), "secondary" for the others (shorter versions, and
# with udev the files udev changes, see jest.vm.config.js); set DMSNAP_VM_CELL_ROLE
# yourself to force one for every cell. With --matrix, two guests run at once (see
# DMSNAP_VM_PARALLEL below).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kernel=${DMSNAP_VM_KERNEL:-6.1}
udev=${DMSNAP_VM_UDEV:-0}
matrix=0
jest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) kernel=${2:?--kernel needs 5.10, 6.1 or 6.12}; shift 2 ;;
    --udev) udev=1; shift ;;
    --no-udev) udev=0; shift ;;
    --matrix) matrix=1; shift ;;
    *) jest_args+=("$1"); shift ;;
  esac
done

[[ -f dist/test/vm/support/leak-check.js ]] || { echo "test-vm.sh: run 'npm run build:ts' first" >&2; exit 1; }

# The tests across a reboot (test/vm/reboot/) run alone, when the jest arguments name
# "reboot".
reboot=no
for arg in "${jest_args[@]}"; do [[ $arg == reboot ]] && reboot=only; done
[[ $reboot == only ]] && jest_args=()

# Jobs as KERNEL:UDEV:PART. 5.10 runs without udev only: the guest's udev is the host's
# (Debian 12), which Debian 11's kernel never met outside this test bed. PART is "all", or
# for the primary cell "kernel" or "logic" (DMSNAP_VM_PART, see jest.vm.config.js): with
# --matrix the primary cell runs as those two guests, so that the work splits evenly.
jobs=("$kernel:$udev:all")
# Longest first: the last to start are the shortest, so the lanes end close together.
# PART "reboot": the tests across a reboot on that kernel (two boots, see run_reboot).
[[ $matrix == 1 ]] && jobs=(6.1:0:kernel 5.10:0:all 6.12:0:all 6.12:1:all 6.1:1:all 6.1:0:logic 5.10:0:reboot 6.1:0:reboot 6.12:0:reboot)

# On a machine with at least two cores, jobs run two at a time (DMSNAP_VM_PARALLEL sets how
# many), each guest with one vCPU: under TCG one vCPU per host core runs best, and guests
# with more vCPUs than the host has cores slow each other down several times over. A job
# run alongside another writes to a log of its own, printed whole when it ends.
parallel=${DMSNAP_VM_PARALLEL:-$([[ $matrix == 1 && $(nproc) -ge 2 ]] && echo 2 || echo 1)}
logs=$(mktemp -d /tmp/dmsnap-vm-cells.XXXXXX)
trap 'rm -rf "$logs"' EXIT

# Kernels are fetched one line at a time before any job starts (jobs share the cache).
if [[ $parallel -gt 1 ]]; then
  for job in "${jobs[@]}"; do echo "${job%%:*}"; done | sort -u | while read -r line; do scripts/vm/image.sh "$line" >/dev/null; done
fi

run_job() {
  local kernel=$1 udev=$2 part=$3 role=$4 alongside=$5 flag=--no-udev cpus=() share=()
  [[ $udev == 1 ]] && flag=--udev
  [[ $alongside == 1 && -z ${DMSNAP_VM_CPUS:-} ]] && cpus=(--cpus 1)
  # Guests running at once must not share one results folder.
  if [[ $alongside == 1 && -n ${DMSNAP_VM_SHARE_DIR:-} ]]; then
    share=(--share "$DMSNAP_VM_SHARE_DIR/$kernel-$udev-$part")
    mkdir -p "${share[1]}"
  fi
  local env_part=()
  [[ $part != all && $part != reboot ]] && env_part=(DMSNAP_VM_PART="$part")
  # The tests that span a reboot: a job of their own in the matrix, or all that runs when
  # asked for with "reboot".
  if [[ $reboot == only || $part == reboot ]]; then
    run_reboot "$kernel" "$role" "${cpus[@]}"
    return
  fi
  env DMSNAP_VM_CELL_ROLE="$role" "${env_part[@]}" scripts/vm/run.sh --kernel "$kernel" "$flag" "${cpus[@]}" "${share[@]}" -- \
    env CI=true TERM=dumb node node_modules/jest/bin/jest.js --config jest.vm.config.js --ci "${jest_args[@]}"
}

# Two boots, DMSNAP_VM_BOOT=1 then 2, of guests sharing twelve fresh disk files and one
# results folder (what boot 1 records for boot 2).
run_reboot() {
  local kernel=$1 role=$2 dir status=0 boot
  shift 2
  dir=$(mktemp -d /tmp/dmsnap-vm-reboot.XXXXXX)
  # vda..vdl: six origins (XFS needs 300 MB) and their COWs; sparse files.
  local sizes=(128M 64M 320M 64M 64M 32M 64M 48M 64M 48M 64M 32M) disks=() i
  for i in "${!sizes[@]}"; do
    truncate -s "${sizes[$i]}" "$dir/disk$i.img"
    disks+=(--disk "$dir/disk$i.img")
  done
  mkdir "$dir/share"
  for boot in 1 2; do
    echo "=== VM suite: tests across a reboot, boot $boot (kernel $kernel)" >&2
    env DMSNAP_VM_CELL_ROLE="$role" DMSNAP_VM_BOOT=$boot scripts/vm/run.sh --kernel "$kernel" --no-udev "$@" \
      --share "$dir/share" "${disks[@]}" -- \
      env CI=true TERM=dumb node node_modules/jest/bin/jest.js --config jest.vm.config.js --ci || { status=$?; break; }
  done
  rm -rf "$dir"
  return $status
}

describe_job() {
  echo "kernel $1, $([[ $2 == 1 ]] && echo with || echo without) udev ($4 cell$([[ $3 != all ]] && echo ", $3 part"))"
}

failed=()
declare -A running=()
finish_one() {
  local pid
  wait -n -p pid "${!running[@]}" && status=0 || status=$?
  local key=${running[$pid]}
  unset "running[$pid]"
  cat "$logs/$key.log" >&2
  echo "=== VM suite: $(describe_job ${key//:/ }) finished $([[ $status == 0 ]] && echo ok || echo "FAILED (exit $status)") after $(($(date +%s) - $(cat "$logs/$key.start")))s" >&2
  [[ $status == 0 ]] || failed+=("$(describe_job ${key//:/ })")
}

suite_start=$(date +%s)
for job in "${jobs[@]}"; do
  IFS=: read -r kernel udev part <<< "$job"
  role=${DMSNAP_VM_CELL_ROLE:-$([[ $kernel == 6.1 && $udev == 0 ]] && echo primary || echo secondary)}
  echo "=== VM suite: $(describe_job "$kernel" "$udev" "$part" "$role")" >&2
  if [[ $parallel -le 1 ]]; then
    start=$(date +%s)
    run_job "$kernel" "$udev" "$part" "$role" 0 || failed+=("$(describe_job "$kernel" "$udev" "$part" "$role")")
    echo "=== VM suite: $(describe_job "$kernel" "$udev" "$part" "$role") took $(($(date +%s) - start))s" >&2
    continue
  fi
  while [[ ${#running[@]} -ge $parallel ]]; do finish_one; done
  key="$kernel:$udev:$part:$role"
  date +%s > "$logs/$key.start"
  run_job "$kernel" "$udev" "$part" "$role" 1 > "$logs/$key.log" 2>&1 &
  running[$!]=$key
done
while [[ ${#running[@]} -gt 0 ]]; do finish_one; done
echo "=== VM suite: ${#jobs[@]} guest(s) in $(($(date +%s) - suite_start))s" >&2

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test-vm.sh: the VM suite failed on: ${failed[*]}" >&2
  exit 1
fi
