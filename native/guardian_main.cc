// dmsnap-guardian: the dead-man's switch for a freeze. dmsnap starts it before it
// suspends an origin, with one end of a socket pair as stdin. The guardian opens the
// control node, says "R" (ready), and waits. "D" (done) means the freeze ended as
// planned. End of file without "D" means dmsnap died: the guardian then takes the
// origin's lock (which the dead process no longer holds, so that it never undoes the
// freeze of another dmsnap process that took the lock since), drops any table loaded
// for the swap and resumes the origin, so no filesystem stays frozen. It knows only raw
// ioctls and needs no Node.
//
// The lock must be the very file dmsnap held (LOCK_ID is its DEV:INO). It is opened
// relative to a descriptor of its directory, opened without following a symlink and
// checked to be root's alone (dmsnap checked every parent before it took the lock), and
// never created: if it is anything else, the guardian refuses to act.
//
// The devices are named by their uuids (DMSNAP-<id>-origin, and for a rollback also the
// snapshot being merged), so that a device renamed or made since under the same name is
// never touched. UUIDS is a comma-separated list, undone in that order: each one's table
// waiting in its inactive slot is dropped and, if it is suspended, it is resumed (a
// rollback names the origin first: its snapshot-merge table, until it is dropped, keeps
// the suspended snapshot from resuming). The guardian acts only under the lock: if
// another process holds it, the guardian waits, and gives up as soon as none of them is
// suspended (that process resumed them, e.g. "dmsnap recover").
//
// usage: dmsnap-guardian CONTROL_PATH UUIDS LOCK_PATH LOCK_ID
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <linux/dm-ioctl.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dm_control.h"
#include "sys_error.h"

namespace {

constexpr int kPollMs = 10;
constexpr int kNoticeAfterMs = 30 * 1000;

int Fail(const char* what, const dmsnap::SysError& error) {
  std::fprintf(stderr, "dmsnap-guardian: %s: %s (%s)\n", what, std::strerror(error.errnum), error.ioctl.c_str());
  return 1;
}

// Opens the lock file dmsnap held. Returns the descriptor, or -1 with `why` set.
int OpenHeldLock(const std::string& path, const char* id, std::string& why) {
  unsigned long long dev = 0, ino = 0;
  char end = 0;
  if (std::sscanf(id, "%llu:%llu%c", &dev, &ino, &end) != 2) {
    why = "malformed lock id";
    return -1;
  }
  size_t slash = path.rfind('/');
  std::string dir_path = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
  int dir = open(dir_path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  struct stat st;
  if (dir < 0 || fstat(dir, &st) != 0) {
    why = std::string("cannot open its directory: ") + std::strerror(errno);
    if (dir >= 0) close(dir);
    return -1;
  }
  if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
    why = "its directory is owned by uid " + std::to_string(st.st_uid) + " or writable by other users";
    close(dir);
    return -1;
  }
  int fd = openat(dir, base.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
  int open_errno = errno;
  close(dir);
  if (fd < 0 || fstat(fd, &st) != 0) {
    why = std::string("cannot open it: ") + std::strerror(fd < 0 ? open_errno : errno);
    if (fd >= 0) close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || st.st_nlink != 1 || st.st_dev != dev || st.st_ino != ino) {
    why = "it is not the lock dmsnap held (another file is at that path now)";
    close(fd);
    return -1;
  }
  return fd;
}

// The devices of a comma-separated list of uuids.
std::vector<dmsnap::DeviceRef> ParseUuids(const std::string& list) {
  std::vector<dmsnap::DeviceRef> devices;
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    dmsnap::DeviceRef ref;
    ref.uuid = list.substr(start, comma - start);
    if (!ref.uuid.empty()) devices.push_back(ref);
    start = comma + 1;
  }
  return devices;
}

bool AnySuspended(dmsnap::DmControl& control, const std::vector<dmsnap::DeviceRef>& devices) {
  for (const auto& device : devices) {
    try {
      if (control.Info(device, 0).flags & DM_SUSPEND_FLAG) return true;
    } catch (const dmsnap::SysError&) {
      // gone: nothing to resume
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<dmsnap::DeviceRef> devices = argc == 5 ? ParseUuids(argv[2]) : std::vector<dmsnap::DeviceRef>{};
  if (devices.empty()) {
    std::fprintf(stderr, "usage: dmsnap-guardian CONTROL_PATH UUID[,UUID...] LOCK_PATH LOCK_ID\n");
    return 2;
  }
  // The caller may be gone when we write: never die of SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
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
    // suspended, give up, or resume it itself): act only once the lock is ours.
    std::string why;
    int lock = OpenHeldLock(argv[3], argv[4], why);
    if (lock < 0) {
      std::fprintf(stderr,
                   "dmsnap-guardian: the dmsnap process died, but its lock %s is unusable: %s; "
                   "%s is left as it is: run \"dmsnap recover\"\n",
                   argv[3], why.c_str(), argv[2]);
      return 1;
    }
    for (int waited_ms = 0; flock(lock, LOCK_EX | LOCK_NB) != 0; waited_ms += kPollMs) {
      if (waited_ms % 100 == 0 && !AnySuspended(control, devices)) return 0;
      if (waited_ms == kNoticeAfterMs) {
        std::fprintf(stderr, "dmsnap-guardian: %s is suspended and its lock %s has been held by another process for 30 s; waiting for it\n",
                     argv[2], argv[3]);
      }
      usleep(kPollMs * 1000);
    }
    if (!AnySuspended(control, devices)) return 0;
    for (const auto& device : devices) {
      dmsnap::DeviceInfo info;
      try {
        info = control.Info(device, 0);
      } catch (const dmsnap::SysError&) {
        continue;  // gone
      }
      if (info.flags & DM_INACTIVE_PRESENT_FLAG) control.Clear(device);
      if (!(info.flags & DM_SUSPEND_FLAG)) continue;
      control.Resume(device, 0, 0);
      std::fprintf(stderr, "dmsnap-guardian: the dmsnap process died while %s was suspended; resumed it\n", info.name.c_str());
    }
    return 0;
  } catch (const dmsnap::SysError& error) {
    return Fail("device-mapper call failed", error);
  }
}
