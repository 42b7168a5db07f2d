# Stage 2 of the VM test bed, run by busybox sh as PID 1 (see stage1-init).
# Builds a chroot out of the host's read-only root with fresh kernel file systems,
# runs the command the host left in the shared folder, records its exit status and
# powers the guest off.
H=/host
share=$H/run/vm-share

mount -t devtmpfs dev $H/dev
mkdir -p $H/dev/pts $H/dev/shm
mount -t devpts devpts $H/dev/pts
mount -t tmpfs shm $H/dev/shm
mount -t proc proc $H/proc
mount -t sysfs sys $H/sys
mount -t tmpfs -o mode=1777 tmp $H/tmp
mount -t tmpfs -o mode=755 run $H/run
mkdir -p $share $H/run/lock
mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=512000 share $share
# Tells the host the kernel booted: a failure from here on is the command's, not the boot's.
echo booted > $share/booted

# The project has a share of its own, mounted at its own path: it may live under a
# folder that the fresh tmpfs mounts above now hide (a clone in /tmp, say).
project=
for word in $(cat /proc/cmdline); do
  case "$word" in dmsnap.project=*) project=${word#dmsnap.project=} ;; esac
done
mkdir -p $H$project 2>/dev/null
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 project $H$project
ip link set lo up 2>/dev/null
hostname dmsnap-vm

# The kernel modules of the initramfs, for tests that unload and reload one.
mkdir -p $H/run/dmsnap-modules && cp /lib/modules/*.ko $H/run/dmsnap-modules/ 2>/dev/null

# The console is a serial line: no CR before LF, so the host sees plain text.
stty -onlcr < /dev/console 2>/dev/null

chroot $H /bin/bash /run/vm-share/guest-run.sh < /dev/console > /dev/console 2>&1
echo $? > $share/status
sync
umount $share 2>/dev/null
echo > /dev/console
poweroff -f
