#!/usr/bin/env bash
# Makes sure the host has what the VM test bed needs. The guest runs the host's own
# root file system, so the tools the tests call inside the guest (dmsetup, mdadm,
# mkfs.xfs, lvm, udevd, ...) are installed here too. As root with apt-get, missing
# Debian packages are installed; otherwise the command to install them is printed.
set -euo pipefail

# command-or-file  Debian package
requirements="
qemu-system-x86_64 qemu-system-x86
cpio cpio
depmod kmod
xz xz-utils
dmsetup dmsetup
mdadm mdadm
mkfs.xfs xfsprogs
mkfs.ext4 e2fsprogs
lvm lvm2
udevadm udev
/lib/systemd/systemd-udevd udev
losetup util-linux
setpriv util-linux
blockdev util-linux
fio fio
"

missing=()
while read -r what package; do
  [[ -n $what ]] || continue
  if [[ $what == /* ]]; then [[ -e $what ]] && continue; else command -v "$what" >/dev/null 2>&1 && continue; fi
  missing+=("$package")
done <<< "$requirements"
# A static busybox is the guest's first userland (the dynamic one would not run in the initramfs).
if [[ ! -x /bin/busybox || "$(LC_ALL=C ldd /bin/busybox 2>&1)" != *"not a dynamic executable"* ]]; then
  missing+=(busybox-static)
fi

have_lists() { [[ -n "$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/')" ]]; }

if [[ ${#missing[@]} -eq 0 ]] && have_lists; then exit 0; fi

mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u | sed '/^$/d')
if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "deps.sh: the VM test bed needs these Debian packages: ${missing[*]}" >&2
    echo "deps.sh: install them as root: apt-get update && apt-get install --no-install-recommends ${missing[*]}" >&2
  else
    echo "deps.sh: apt knows no kernel package yet; run 'apt-get update' as root" >&2
  fi
  exit 1
fi

echo "deps.sh: installing ${missing[*]:-package lists}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >&2
if [[ ${#missing[@]} -gt 0 ]]; then
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
