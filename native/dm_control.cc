#include "dm_control.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>

#include "sys_error.h"

namespace dmsnap {

DmControl::DmControl(std::string path) : fd_(-1), path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw SysError(errno, "open", "", path_);
}

DmControl::~DmControl() {
  if (fd_ >= 0) ::close(fd_);
}

DmVersion DmControl::Version() const {
  struct dm_ioctl request;
  std::memset(&request, 0, sizeof(request));
  // DM_VERSION exists since 4.0.0; asking with the lowest version is always accepted.
  request.version[0] = DM_VERSION_MAJOR;
  request.data_size = sizeof(request);
  request.data_start = sizeof(request);
  if (::ioctl(fd_, DM_VERSION, &request) != 0) throw SysError(errno, "ioctl", "DM_VERSION", path_);
  return DmVersion{request.version[0], request.version[1], request.version[2]};
}

}  // namespace dmsnap
