#!/usr/bin/env bash
# Runs the VM suite (jest, jest.vm.config.js) inside the VM test bed.
#
# usage: scripts/test-vm.sh [--kernel 6.1|6.12] [--udev|--no-udev] [--matrix] [JEST ARGS...]
#   --matrix   every kernel line, each without and with udev
# Without --matrix: one run on $DMSNAP_VM_KERNEL (default 6.1), udev per $DMSNAP_VM_UDEV.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

kernels=("${DMSNAP_VM_KERNEL:-6.1}")
udevs=("${DMSNAP_VM_UDEV:-0}")
jest_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) kernels=("${2:?--kernel needs 6.1 or 6.12}"); shift 2 ;;
    --udev) udevs=(1); shift ;;
    --no-udev) udevs=(0); shift ;;
    --matrix) kernels=(6.1 6.12); udevs=(0 1); shift ;;
    *) jest_args+=("$1"); shift ;;
  esac
done

[[ -f dist/test/vm/support/leak-check.js ]] || { echo "test-vm.sh: run 'npm run build:ts' first" >&2; exit 1; }

failed=()
for kernel in "${kernels[@]}"; do
  for udev in "${udevs[@]}"; do
    flag=--no-udev; [[ $udev == 1 ]] && flag=--udev
    echo "=== VM suite: kernel $kernel, $([[ $udev == 1 ]] && echo with || echo without) udev" >&2
    if ! scripts/vm/run.sh --kernel "$kernel" "$flag" -- \
        env CI=true TERM=dumb node node_modules/jest/bin/jest.js --config jest.vm.config.js --ci "${jest_args[@]}"; then
      failed+=("kernel $kernel $flag")
    fi
  done
done

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "test-vm.sh: the VM suite failed on: ${failed[*]}" >&2
  exit 1
fi
