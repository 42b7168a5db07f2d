#!/usr/bin/env bash
# The seed procedure, step 1 (take) and step 5 (drop), exactly as the write-up runs it
# with dmsetup processes, including its separate "origin" device whose table is copied
# into the wrapper, and `dmsetup mknodes` where no udev makes the nodes.
#
# usage: seed-dmsetup.sh take WRAPPER DUP COW CHUNK
#        seed-dmsetup.sh drop WRAPPER DUP
set -e
mknodes() { [ -e /run/udev/control ] || dmsetup mknodes; }
case "$1" in
  take)
    wrapper=$2 dup=$3 cow=$4 chunk=$5
    dd if=/dev/zero of="$cow" bs=512 count="$chunk" status=none
    dmsetup suspend "$wrapper"
    echo "0 $(blockdev --getsz "/dev/mapper/$dup") snapshot /dev/mapper/$dup $cow p $chunk" | dmsetup create seedcow
    echo "0 $(blockdev --getsz "/dev/mapper/$dup") snapshot-origin /dev/mapper/$dup" | dmsetup create seedorigin
    dmsetup table seedorigin | dmsetup load "$wrapper"
    dmsetup resume "$wrapper"
    mknodes
    ;;
  drop)
    wrapper=$2 dup=$3
    dmsetup suspend "$wrapper"
    dmsetup remove seedorigin
    dmsetup remove seedcow
    dmsetup table "$dup" | dmsetup load "$wrapper"
    dmsetup resume "$wrapper"
    mknodes
    ;;
  *) echo "usage: seed-dmsetup.sh take|drop ..." >&2; exit 2 ;;
esac
