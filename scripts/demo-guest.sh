#!/usr/bin/env bash
# The seed procedure told with the real dmsnap CLI, inside the VM test bed
# (npm run demo). Exits 0 only if every check held.
set -uo pipefail
project=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dmsnap() { node "$project/dist/dmsnap.js" "$@"; }

bold=$(printf '\033[1m'); dim=$(printf '\033[2m'); off=$(printf '\033[0m')
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$off"; }
say() { printf '%s%s%s\n' "$dim" "$*" "$off"; }
show() { printf '$ %s\n' "$*"; "$@"; }
failures=()
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then printf '   ok: %s\n' "$what"; else printf '   FAILED: %s\n' "$what"; failures+=("$what"); fi
}

work=$(mktemp -d /tmp/dmsnap-demo.XXXXXX)
cleanup() {
  [[ -n ${writer:-} ]] && kill "$writer" 2>/dev/null && wait "$writer" 2>/dev/null
  mountpoint -q "$work/origin" && umount "$work/origin"
  mountpoint -q "$work/image" && umount "$work/image"
  dmsnap drop demo -q 2>/dev/null; dmsnap release demo -q 2>/dev/null
  mdadm --stop /dev/md/demo >/dev/null 2>&1 || mdadm --stop /dev/md120 >/dev/null 2>&1
  losetup -D
}
trap cleanup EXIT

step "Step 0: an md RAID1 of two disks, wrapped by dmsnap before it is mounted"
for i in 1 2; do truncate -s 320M "$work/disk$i.img"; done
for i in 1 2 3 4; do truncate -s 64M "$work/cow$i.img"; done
disk1=$(losetup -f --show "$work/disk1.img"); disk2=$(losetup -f --show "$work/disk2.img")
cow1=$(losetup -f --show "$work/cow1.img"); cow2=$(losetup -f --show "$work/cow2.img"); cow3=$(losetup -f --show "$work/cow3.img")
show mdadm --create /dev/md120 --metadata=0.90 --level=1 --raid-devices=2 --assume-clean --run --quiet "$disk1" "$disk2"
show dmsnap prepare /dev/md120 --name demo
show mkfs.xfs -q /dev/mapper/demo
mkdir -p "$work/origin"
show mount /dev/mapper/demo "$work/origin"

say "Some data, and its checksums:"
mkdir -p "$work/origin/data"
for i in $(seq 1 40); do head -c $((RANDOM * 8 + 4096)) /dev/urandom > "$work/origin/data/file$i"; done
(cd "$work/origin" && sha256sum data/* > "$work/manifest")
sync
say "A writer that never stops: it appends synced 4 KiB records to $work/origin/log."
( while :; do head -c 4096 /dev/urandom >> "$work/origin/log"; sync "$work/origin/log" 2>/dev/null || sync; done ) &
writer=$!
sleep 1

step "Step 1: a snapshot while the writer keeps writing"
freeze_line=$(dmsnap snapshot demo --cow "$cow1" 2>&1 >"$work/snapdev")
echo "$(cat "$work/snapdev")"
echo "$freeze_line"
freeze_ms=$(sed -n 's/.*frozen for \([0-9.]*\) ms.*/\1/p' <<<"$freeze_line")
check "snapshot device exists" test -b "$(cat "$work/snapdev")"

say "The live filesystem changes after the snapshot; the snapshot must not:"
show rm "$work/origin/data/file1"
echo changed > "$work/origin/data/file2"

step "Step 4: status"
show dmsnap status demo
used=$(dmsnap status demo --json | node -e 'const s=JSON.parse(require("fs").readFileSync(0,"utf8")).origins[0].snapshots[0]; console.log(`${s.allocatedSectors}/${s.totalSectors} sectors (${s.usedPercent.toFixed(1)}%)`)')

step "A file-level backup of the frozen view: dmsnap backup -- tar"
say "(its own snapshot, on another COW; the first snapshot stays)"
(cd "$work/origin" && sha256sum data/* > "$work/manifest-at-backup")
show dmsnap backup demo --cow "$cow2" --snapshot-name demo-backup -- tar -cf "$work/backup.tar" data
mkdir -p "$work/restore" && tar -xf "$work/backup.tar" -C "$work/restore"
check "backup matches the checksum manifest" bash -c "cd '$work/restore' && sha256sum --quiet -c '$work/manifest-at-backup'"

step "A block-level image: dmsnap image"
show dmsnap image demo --cow "$cow3" --snapshot-name demo-image --output "$work/demo.img" --sparse
mkdir -p "$work/image"
show mount -o loop,nouuid "$work/demo.img" "$work/image"
check "image holds the data as it was" bash -c "cd '$work/image' && sha256sum --quiet -c '$work/manifest-at-backup'"
umount "$work/image"

step "The first snapshot still shows the data as it was at step 1"
mkdir -p "$work/snap"
show mount -o ro,nouuid "$(cat "$work/snapdev")" "$work/snap"
check "snapshot matches the manifest taken at step 1" bash -c "cd '$work/snap' && sha256sum --quiet -c '$work/manifest'"
umount "$work/snap"

step "Step 5: drop, and a clean state"
show dmsnap drop demo
kill "$writer"; wait "$writer" 2>/dev/null; writer=
check "origin table is linear again" bash -c "[ \"\$(dmsetup table demo)\" = \"\$(dmsetup table demo-real)\" ]"
show dmsnap ls
umount "$work/origin"
say "$ xfs_repair -n /dev/mapper/demo"
check "origin filesystem is clean (xfs_repair -n)" bash -c "xfs_repair -n /dev/mapper/demo >/dev/null 2>&1"
show dmsnap release demo
check "no dmsnap devices left" bash -c "[ -z \"\$(dmsetup info -c --noheadings -o uuid | grep DMSNAP-)\" ]"

step "Summary"
printf '  freeze time:      %s ms\n' "${freeze_ms:-?}"
printf '  COW usage:        %s\n' "${used:-?}"
printf '  backup verified:  %s\n' "$([[ " ${failures[*]} " == *"backup matches"* ]] && echo no || echo yes)"
if [[ ${#failures[@]} -gt 0 ]]; then
  printf '  %d check(s) failed: %s\n' "${#failures[@]}" "${failures[*]}"
  exit 1
fi
printf '  every check held\n'
