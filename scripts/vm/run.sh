#!/usr/bin/env bash
# Boots the VM test bed and runs one command as root inside the guest, from the
# project directory, on the host's own root file system (shared read-only).
# Exits with the command's status.
#
# usage: scripts/vm/run.sh [--kernel 5.10|6.1|6.12] [--udev] [--memory MiB] [--cpus N]
#                          [--timeout SECONDS] [--share DIR] [--disk FILE]... [--shell]
#                          [--] COMMAND [ARGS...]
#   --kernel   the Debian kernel line (default: $DMSNAP_VM_KERNEL, else 6.1)
#   --udev     start systemd-udevd in the guest (default: $DMSNAP_VM_UDEV, else no udev)
#   --share    a host folder the guest can write, seen there as $DMSNAP_VM_SHARE
#              (default: $DMSNAP_VM_SHARE_DIR, else a temporary one removed at the end)
#   --disk     a host file the guest sees as a virtio disk (/dev/vda, /dev/vdb, ... in
#              order), written through to the file (cache=none): what the guest wrote and
#              flushed outlives the guest, so a later guest can boot with the same disks
#   --shell    an interactive shell in the guest instead of COMMAND
# A command may end its guest with a power cut (sysrq "b": no sync, no unmount) after
# writing the file power-cut in $DMSNAP_VM_SHARE: the run then counts as a success.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/../.." && pwd)
kernel=${DMSNAP_VM_KERNEL:-6.1}
udev=${DMSNAP_VM_UDEV:-0}
memory=${DMSNAP_VM_MEMORY:-3072}
cpus=${DMSNAP_VM_CPUS:-2}
timeout=${DMSNAP_VM_TIMEOUT:-3600}
share=${DMSNAP_VM_SHARE_DIR:-}
shell=0
disks=()

usage() { sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --kernel) kernel=${2:?}; shift 2 ;;
    --udev) udev=1; shift ;;
    --no-udev) udev=0; shift ;;
    --memory) memory=${2:?}; shift 2 ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --timeout) timeout=${2:?}; shift 2 ;;
    --share) share=${2:?}; shift 2 ;;
    --disk) [[ -f ${2:?} ]] || { echo "run.sh: --disk $2 is not a file" >&2; exit 2; }
            disks+=(-drive "file=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"),if=virtio,format=raw,cache=none"); shift 2 ;;
    --shell) shell=1; shift ;;
    --help|-h) usage ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option '$1'" >&2; usage ;;
    *) break ;;
  esac
done
if [[ $shell == 1 ]]; then set -- bash -i; fi
[[ $# -gt 0 ]] || { echo "run.sh: no command given" >&2; usage; }
[[ $project != *[[:space:]]* ]] || { echo "run.sh: the project path '$project' contains white space; move it" >&2; exit 2; }
case "$kernel" in 5.10|6.1|6.12) ;; *) echo "run.sh: --kernel must be 5.10, 6.1 or 6.12, not '$kernel'" >&2; exit 2 ;; esac

"$here/deps.sh"

mapfile -t image < <("$here/image.sh" "$kernel")
[[ ${#image[@]} == 2 ]] || { echo "run.sh: could not build the VM image" >&2; exit 1; }

if [[ -z $share ]]; then
  share=$(mktemp -d /tmp/dmsnap-vm.XXXXXX)
  trap 'rm -rf "$share"' EXIT
fi
mkdir -p "$share"
share=$(cd "$share" && pwd)
rm -f "$share/status"

{
  printf 'export DMSNAP_VM=1 DMSNAP_VM_KERNEL=%q DMSNAP_VM_UDEV=%q DMSNAP_VM_SHARE=/run/vm-share DMSNAP_PROJECT=%q\n' \
    "$kernel" "$udev" "$project"
  # Pass through the variables that steer tests and tools.
  env | grep -E '^(DMSNAP_[A-Z_]+|CI|FORCE_COLOR|NO_COLOR)=' | grep -vE '^DMSNAP_(VM|VM_KERNEL|VM_UDEV|VM_SHARE|PROJECT)=' |
    while IFS='=' read -r name value; do printf 'export %s=%q\n' "$name" "$value"; done || true
  printf 'exec /bin/bash %q' "$here/guest.sh"
  printf ' %q' "$@"
  printf '\n'
} > "$share/guest-run.sh"

flavour=$([[ $udev == 1 ]] && echo "with udev" || echo "without udev")
echo "run.sh: booting Debian kernel $(cat "$(dirname "${image[0]}")/version") ($flavour)" >&2

stdin=/dev/null
[[ $shell == 1 ]] && stdin=/dev/stdin
# Under TCG a kernel now and then oopses while it patches its own code early in boot (seen
# on 6.12 with 2 vCPUs: "Oops: int3" in sched_clock_cpu, before any init ran). Such a guest
# never reaches stage 2, so it is booted again; once stage 2 has started, nothing is retried.
boot_attempts=${DMSNAP_VM_BOOT_ATTEMPTS:-3}
# The emulated CPU is the plain x86-64 baseline: with "-cpu max" glibc, OpenSSL and V8 pick
# their SSE4/AVX code paths, which TCG runs through slow helpers (measured: sha256 of 200
# MiB in node 7.8 s on max, 2.2 s on qemu64; 6.12's secondary cell 554 s against 398 s).
# DMSNAP_VM_CPU_MODEL picks another.
cpu_model=${DMSNAP_VM_CPU_MODEL:-qemu64}
for ((attempt = 1; ; attempt++)); do
  rm -f "$share/status" "$share/booted" "$share/power-cut"
  set +e
  timeout --foreground -k 10 "$timeout" qemu-system-x86_64 \
    -accel tcg -cpu "$cpu_model" -m "$memory" -smp "$cpus" \
    -display none -monitor none -serial stdio -no-reboot \
    -kernel "${image[0]}" -initrd "${image[1]}" \
    -append "console=ttyS0 quiet loglevel=1 panic=-1 dmsnap.stage2=$here/stage2.sh dmsnap.project=$project" \
    -virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$project,mount_tag=project,security_model=none,readonly=on,multidevs=remap" \
    -virtfs "local,path=$share,mount_tag=share,security_model=none,multidevs=remap" \
    "${disks[@]}" \
    < "$stdin"
  qemu_status=$?
  set -e
  [[ -e $share/booted || $qemu_status == 124 || $qemu_status == 137 || $attempt -ge $boot_attempts ]] && break
  echo "run.sh: the guest kernel stopped before it reached stage 2 (attempt $attempt of $boot_attempts); booting it again" >&2
done

if [[ -s $share/status ]]; then
  exit "$(cat "$share/status")"
fi
if [[ -e $share/power-cut && $qemu_status == 0 ]]; then
  echo "run.sh: the guest cut its power, as its command asked ($(cat "$share/power-cut"))" >&2
  exit 0
fi
if [[ $qemu_status == 124 || $qemu_status == 137 ]]; then
  echo "run.sh: the guest did not finish within ${timeout}s and was stopped" >&2
else
  echo "run.sh: the guest stopped without reporting a status (qemu exited $qemu_status); see the console output above" >&2
  [[ -e $share/booted ]] || echo "run.sh: it never reached stage 2, in $attempt boot(s): the kernel or the initramfs failed (scripts/vm/image.sh builds it)" >&2
fi
exit 1
