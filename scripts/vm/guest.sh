# Runs inside the guest's chroot (see stage2.sh): prepares the environment and runs
# the command given as arguments from the project directory.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/tmp/home
mkdir -p "$HOME"

if [ "${DMSNAP_VM_UDEV:-0}" = 1 ]; then
  # The udev flavour: a real systemd-udevd manages /dev/mapper and /dev/disk nodes.
  # udevadm refuses to act in a chroot unless told that this one is the real system.
  export SYSTEMD_IGNORE_CHROOT=1
  /lib/systemd/systemd-udevd --daemon --resolve-names=never
  udevadm trigger --action=add >/dev/null 2>&1
  udevadm settle --timeout=30
fi

cd "$DMSNAP_PROJECT" || exit 1
"$@"
status=$?

if [ "${DMSNAP_VM_UDEV:-0}" = 1 ]; then
  udevadm control --exit >/dev/null 2>&1
fi
exit $status
