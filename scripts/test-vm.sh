#!/usr/bin/env bash
# Runs the VM suite (jest, jest.vm.config.js) inside the VM test bed.
#
# usage: scripts/test-vm.sh [--kernel 5.10|6.1|6.12] [--udev|--no-udev] [--matrix] [JEST ARGS...]
#   --matrix   6.1 and 6.12 each without and with udev, and 5.10 without udev (five cells)
# Without --matrix: one run on $DMSNAP_VM_KERNEL (default 6.1), udev per $DMSNAP_VM_UDEV.
# Each cell runs with DMSNAP_VM_CELL_ROLE: "primary" for kernel 6.1 without udev (the
# long crash and soak tests in full), "secondary" for the others (shorter versions);
# set DMSNAP_VM_CELL_ROLE yourself to force one for every cell.
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

# Cells as KERNEL:UDEV. 5.10 runs without udev only: the guest's udev is the host's
# (Debian 12), which Debian 11's kernel never met outside this test bed.
cells=("$kernel:$udev")
[[ $matrix == 1 ]] && cells=(6.1:0 6.1:1 5.10:0 6.12:0 6.12:1)

failed=()
for cell in "${cells[@]}"; do
  kernel=${cell%:*} udev=${cell#*:}
  flag=--no-udev; [[ $udev == 1 ]] && flag=--udev
  role=${DMSNAP_VM_CELL_ROLE:-$([[ $kernel == 6.1 && $udev == 0 ]] && echo primary || echo secondary)}
  echo "=== VM suite: kernel $kernel, $([[ $udev == 1 ]] && echo with || echo without) udev ($role cell)" >&2
  if ! DMSNAP_VM_CELL_ROLE=$role scripts/vm/run.sh --kernel "$kernel" "$flag" -- \
      env CI=true TERM=dumb node node_modules/jest/bin/jest.js --config jest.vm.config.js --ci "${jest_args[@]}"; then
    failed+=("kernel $kernel $flag")
  fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test-vm.sh: the VM suite failed on: ${failed[*]}" >&2
  exit 1
fi
