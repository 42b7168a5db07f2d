#include "mount.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <unistd.h>

#include <string>

#include "sys_error.h"

namespace dmsnap {

// mount(2) follows a symlink in the last component of its target. Mounting on the
// /proc/self/fd link of a descriptor opened with O_PATH | O_NOFOLLOW | O_DIRECTORY mounts
// on the very directory that was opened, and refuses a symlink (ELOOP or ENOTDIR).
void MountFilesystem(const std::string& source, const std::string& target, const std::string& fstype,
                     uint32_t flags, const std::string& data) {
  int fd = ::open(target.c_str(), O_PATH | O_NOFOLLOW | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw SysError(errno, "open", "", target);
  std::string via = "/proc/self/fd/" + std::to_string(fd);
  int rc = ::mount(source.c_str(), via.c_str(), fstype.c_str(), flags, data.empty() ? nullptr : data.c_str());
  int mount_errno = errno;
  ::close(fd);
  if (rc != 0) throw SysError(mount_errno, "mount", "", target, source);
}

// UMOUNT_NOFOLLOW: a symlink put where the mount point was is never followed.
void UnmountFilesystem(const std::string& target, uint32_t flags) {
  if (::umount2(target.c_str(), static_cast<int>(flags) | UMOUNT_NOFOLLOW) != 0) throw SysError(errno, "umount2", "", target);
}

}  // namespace dmsnap
