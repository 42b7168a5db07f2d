#!/usr/bin/env bash
# Builds (or finds in the cache) a Debian kernel and a busybox initramfs for the VM test bed.
# Prints two lines: the kernel image path and the initramfs path.
#
# usage: scripts/vm/image.sh [5.10|6.1|6.12] [--refresh]
# The kernel line defaults to $DMSNAP_VM_KERNEL, else 6.1. Downloads land in
# $DMSNAP_VM_CACHE (default ~/.cache/dmsnap-vm) so a second run needs no network.
# 6.1 and 6.12 come from the host's apt sources (Debian 12); 5.10 from Debian 11
# (bullseye, bullseye-security) through a private apt configuration in the cache,
# which leaves the host's sources alone. --refresh also updates those private lists.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
line=${DMSNAP_VM_KERNEL:-6.1}
refresh=0
for arg in "$@"; do
  case "$arg" in
    --refresh) refresh=1 ;;
    5.10|6.1|6.12) line=$arg ;;
    *) echo "image.sh: unknown argument '$arg' (expected 5.10, 6.1, 6.12 or --refresh)" >&2; exit 2 ;;
  esac
done

cache=${DMSNAP_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dmsnap-vm}
dir=$cache/$line
mkdir -p "$dir"

# Modules the guest loads, in dependency order (resolved with modprobe below).
# dm-crypt and dm-integrity (with the ciphers and hashes their test tables name: xts and ecb
# for aes-xts-plain64, ctr and crc32 for integrity's journal_crypt and internal_hash) let
# the tests check how keys in tables are handled. dm-delay slows a COW down, so that a
# merge runs long enough for a test to act while it runs. btrfs: a filesystem with anonymous
# device numbers, whose devices dmsnap finds through mountinfo and sysfs.
wanted=(virtio_pci virtio_blk 9p 9pnet_virtio loop dm-mod dm-snapshot dm-bufio dm-flakey dm-delay dm-zero
        dm-crypt dm-integrity xts ecb ctr crc32_generic
        md-mod raid1 ext4 xfs btrfs crc32c_generic)

need() { command -v "$1" >/dev/null 2>&1 || { echo "image.sh: '$1' is missing; install the Debian package '$2'" >&2; exit 1; }; }
need dpkg-deb dpkg; need depmod kmod; need modprobe kmod; need cpio cpio; need xz xz-utils

busybox=/bin/busybox
if [[ ! -x $busybox || "$(LC_ALL=C ldd "$busybox" 2>&1)" != *"not a dynamic executable"* ]]; then
  echo "image.sh: $busybox is not a static busybox; install the Debian package 'busybox-static'" >&2
  exit 1
fi

# apt options for this line: none (the host's configuration) for the Debian 12 lines;
# for 5.10 a sources list, package lists and cache of its own under $dir/apt.
apt_opts=()
if [[ $line == 5.10 ]]; then
  apt_dir=$dir/apt
  keyring=/usr/share/keyrings/debian-archive-keyring.gpg
  [[ -s $keyring ]] || { echo "image.sh: $keyring is missing; install the Debian package 'debian-archive-keyring'" >&2; exit 1; }
  apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
            -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache"
            -o Dir::Etc::Preferences=/dev/null -o Dir::Etc::PreferencesParts=/dev/null
            -o APT::Sandbox::User=root)
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial"
  cat > "$apt_dir/sources.list.new" <<SOURCES
deb [signed-by=$keyring] http://deb.debian.org/debian bullseye main
deb [signed-by=$keyring] http://deb.debian.org/debian-security bullseye-security main
SOURCES
  mv "$apt_dir/sources.list.new" "$apt_dir/sources.list"
  if [[ $refresh == 1 ]] || ! compgen -G "$apt_dir/lists/*_Packages*" >/dev/null; then
    echo "image.sh: updating the Debian 11 package lists in $apt_dir" >&2
    apt-get -q "${apt_opts[@]}" update >&2
  fi
fi

# Resolve the package name of the kernel for this line, e.g. linux-image-6.1.0-56-amd64:
# the current dependency of the line's metapackage.
resolve_package() {
  local meta
  case "$line" in
    5.10|6.1) meta=linux-image-amd64 ;;
    6.12) meta=linux-image-6.12-amd64 ;;
  esac
  apt-cache "${apt_opts[@]}" depends "$meta" 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'
}

# The module set extracted last time: a changed list of wanted modules extracts them again.
if [[ $refresh == 1 || ! -s $dir/version || ! -s $dir/vmlinuz || ! -s $dir/modules/modules.order ||
      "$(cat "$dir/modules/wanted" 2>/dev/null)" != "${wanted[*]}" ]]; then
  pkg=$(resolve_package)
  if [[ -z "$pkg" ]]; then
    if [[ $line == 5.10 ]]; then echo "image.sh: the Debian 11 lists in $dir/apt name no kernel package; run 'scripts/vm/image.sh 5.10 --refresh'" >&2
    else echo "image.sh: apt-cache knows no kernel package for line $line; run 'apt-get update' first" >&2; fi
    exit 1
  fi
  version=${pkg#linux-image-}
  work=$(mktemp -d "$cache/extract.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "image.sh: downloading $pkg" >&2
  (cd "$work" && apt-get -q -o APT::Sandbox::User=root "${apt_opts[@]}" download "$pkg" >&2)
  dpkg-deb -x "$work"/*.deb "$work/root"
  depmod -b "$work/root" "$version"
  rm -rf "$dir/modules.new" && mkdir -p "$dir/modules.new"
  : > "$dir/modules.new/modules.order"
  # modprobe prints "insmod /path/x.ko[.xz]" per module, dependencies first.
  modprobe -d "$work/root" -S "$version" --show-depends -a "${wanted[@]}" |
    awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' |
    while read -r ko; do
      base=$(basename "$ko"); base=${base%.xz}; base=${base%.zst}
      case "$ko" in
        *.xz) xz -dc "$ko" > "$dir/modules.new/$base" ;;
        *.zst) zstd -dcq "$ko" > "$dir/modules.new/$base" ;;
        *) cp "$ko" "$dir/modules.new/$base" ;;
      esac
      echo "$base" >> "$dir/modules.new/modules.order"
    done
  echo "${wanted[*]}" > "$dir/modules.new/wanted"
  cp "$work/root/boot/vmlinuz-$version" "$dir/vmlinuz"
  rm -rf "$dir/modules" && mv "$dir/modules.new" "$dir/modules"
  echo "$version" > "$dir/version"
  rm -f "$dir"/initrd-*.cpio.gz
fi

# The initramfs depends on the stage-1 init, the module set and busybox: name it by their hash.
hash=$( (cat "$here/stage1-init" "$dir/modules/modules.order"; sha256sum "$busybox") | sha256sum | cut -c1-16)
initrd=$dir/initrd-$hash.cpio.gz
if [[ ! -s $initrd ]]; then
  tree=$(mktemp -d "$cache/initrd.XXXXXX")
  mkdir -p "$tree"/{bin,dev,proc,sys,host,lib/modules}
  cp "$busybox" "$tree/bin/busybox"
  cp "$here/stage1-init" "$tree/init" && chmod 755 "$tree/init"
  cp "$dir"/modules/* "$tree/lib/modules/"
  (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd.tmp"
  mv "$initrd.tmp" "$initrd"
  rm -rf "$tree"
  find "$dir" -maxdepth 1 -name 'initrd-*.cpio.gz' ! -name "$(basename "$initrd")" -delete
fi

echo "$dir/vmlinuz"
echo "$initrd"
