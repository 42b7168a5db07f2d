#include "device_handle.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <utility>

#include "sys_error.h"

namespace dmsnap {

DeviceHandle::DeviceHandle(std::string path, bool exclusive, bool writable)
    : fd_(-1), path_(std::move(path)), writable_(writable), major_(0), minor_(0) {
  int flags = (writable ? O_RDWR : O_RDONLY) | (exclusive ? O_EXCL : 0) | O_CLOEXEC;
  fd_ = ::open(path_.c_str(), flags);
  if (fd_ < 0) throw SysError(errno, "open", "", path_);
  struct stat st;
  if (::fstat(fd_, &st) != 0) {
    int error = errno;
    ::close(fd_);
    throw SysError(error, "fstat", "", path_);
  }
  if (!S_ISBLK(st.st_mode)) {
    ::close(fd_);
    throw SysError(ENOTBLK, "open", "", path_);
  }
  major_ = ::major(st.st_rdev);
  minor_ = ::minor(st.st_rdev);
}

DeviceHandle::~DeviceHandle() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace dmsnap
