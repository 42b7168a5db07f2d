#include "file_lock.h"

#include <errno.h>
#include <sys/file.h>

#include "sys_error.h"

namespace dmsnap {

bool TryLockFile(int fd) {
  for (;;) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno == EINTR) continue;
    if (errno == EWOULDBLOCK) return false;
    throw SysError(errno, "flock", "", "");
  }
}

void UnlockFile(int fd) {
  if (::flock(fd, LOCK_UN) != 0) throw SysError(errno, "flock", "", "");
}

}  // namespace dmsnap
