// dmsnap-guardian: the dead-man's switch for a freeze. dmsnap starts it before it
// suspends an origin, with one end of a socket pair as stdin. The guardian opens the
// control node, says "R" (ready), and waits. "D" (done) means the freeze ended as
// planned. End of file without "D" means dmsnap died: the guardian then takes the
// origin's lock (which the dead process no longer holds, so that it never undoes the
// freeze of another dmsnap process that took the lock since), drops any table loaded
// for the swap and resumes the origin, so no filesystem stays frozen. It knows only raw
// ioctls and needs no Node.
//
// usage: dmsnap-guardian CONTROL_PATH ORIGIN_NAME LOCK_PATH
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <linux/dm-ioctl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "dm_control.h"
#include "sys_error.h"

namespace {

constexpr int kLockWaitMs = 30 * 1000;

int Fail(const char* what, const dmsnap::SysError& error) {
  std::fprintf(stderr, "dmsnap-guardian: %s: %s (%s)\n", what, std::strerror(error.errnum), error.ioctl.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: dmsnap-guardian CONTROL_PATH ORIGIN_NAME LOCK_PATH\n");
    return 2;
  }
  // The caller may be gone when we write: never die of SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  dmsnap::DeviceRef origin;
  origin.name = argv[2];
  try {
    dmsnap::DmControl control(argv[1]);
    if (write(STDIN_FILENO, "R", 1) != 1) return 1;
    char byte = 0;
    for (;;) {
      ssize_t n = read(STDIN_FILENO, &byte, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n == 1 && byte == 'D') return 0;
      if (n == 1) continue;
      break;  // end of file: the caller died
    }
    // Another dmsnap process may hold the lock for a moment (and, seeing the origin
    // suspended, give up); after a while, resume anyway: a frozen filesystem is worse.
    int lock = open(argv[3], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    for (int waited_ms = 0; lock >= 0 && waited_ms < kLockWaitMs; waited_ms += 10) {
      if (flock(lock, LOCK_EX | LOCK_NB) == 0) break;
      usleep(10 * 1000);
    }
    dmsnap::DeviceInfo info = control.Info(origin, 0);
    if (!(info.flags & DM_SUSPEND_FLAG)) return 0;
    if (info.flags & DM_INACTIVE_PRESENT_FLAG) control.Clear(origin);
    control.Resume(origin, 0, 0);
    std::fprintf(stderr, "dmsnap-guardian: the dmsnap process died during a freeze; resumed %s\n", info.name.c_str());
    return 0;
  } catch (const dmsnap::SysError& error) {
    return Fail("device-mapper call failed", error);
  }
}
