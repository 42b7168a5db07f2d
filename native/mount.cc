#include "mount.h"

#include <errno.h>
#include <sys/mount.h>

#include "sys_error.h"

namespace dmsnap {

void MountFilesystem(const std::string& source, const std::string& target, const std::string& fstype,
                     uint32_t flags, const std::string& data) {
  if (::mount(source.c_str(), target.c_str(), fstype.c_str(), flags, data.empty() ? nullptr : data.c_str()) != 0) {
    throw SysError(errno, "mount", "", target, source);
  }
}

void UnmountFilesystem(const std::string& target, uint32_t flags) {
  if (::umount2(target.c_str(), static_cast<int>(flags)) != 0) throw SysError(errno, "umount2", "", target);
}

}  // namespace dmsnap
