#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>

#include "fd.h"
#include "sys_error.h"

namespace dmsnap {

namespace {

constexpr const char* kLoopControl = "/dev/loop-control";
// Numbers taken by another process between LOOP_CTL_GET_FREE and LOOP_CONFIGURE.
constexpr int kAttachAttempts = 8;

std::string LoopPath(int number) { return "/dev/loop" + std::to_string(number); }

int FreeLoopNumber(int control) {
  int number = ::ioctl(control, LOOP_CTL_GET_FREE);
  if (number < 0) throw SysError(errno, "ioctl", "LOOP_CTL_GET_FREE", kLoopControl);
  return number;
}

loop_info64 StatusOfFd(int fd, const std::string& device) {
  loop_info64 info;
  std::memset(&info, 0, sizeof(info));
  if (::ioctl(fd, LOOP_GET_STATUS64, &info) != 0) throw SysError(errno, "ioctl", "LOOP_GET_STATUS64", device);
  return info;
}

// LOOP_CONFIGURE of the open loop device; returns errno (0 on success).
int Configure(int loop, int file, const std::string& tag, uint32_t flags) {
  loop_config config;
  std::memset(&config, 0, sizeof(config));
  config.fd = static_cast<uint32_t>(file);
  config.info.lo_flags = flags;
  std::strncpy(reinterpret_cast<char*>(config.info.lo_file_name), tag.c_str(), LO_NAME_SIZE - 1);
  return ::ioctl(loop, LOOP_CONFIGURE, &config) == 0 ? 0 : errno;
}

// Opens /dev/loopN read-only for one ioctl; the descriptor is closed on every path out.
int OpenLoop(const std::string& device) {
  int fd = ::open(device.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw SysError(errno, "open", "", device);
  return fd;
}

}  // namespace

LoopAttachment AttachLoop(const std::string& file, const std::string& tag, bool direct_io) {
  Fd backing(::open(file.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (backing.get() < 0) throw SysError(errno, "open", "", file);
  Fd control(::open(kLoopControl, O_RDWR | O_CLOEXEC));
  if (control.get() < 0) throw SysError(errno, "open", "", kLoopControl);

  uint32_t flags = LO_FLAGS_AUTOCLEAR | (direct_io ? LO_FLAGS_DIRECT_IO : 0);
  std::string device;
  for (int attempt = 0; attempt < kAttachAttempts; attempt++) {
    int number = FreeLoopNumber(control.get());
    device = LoopPath(number);
    auto handle = std::make_shared<DeviceHandle>(device, false, true);
    int error = Configure(handle->fd(), backing.get(), tag, flags);
    if (error == EINVAL && (flags & LO_FLAGS_DIRECT_IO)) {
      // A kernel or backing filesystem that refuses direct I/O: attach without it.
      flags &= ~LO_FLAGS_DIRECT_IO;
      error = Configure(handle->fd(), backing.get(), tag, flags);
    }
    if (error == EBUSY) continue;  // another process took this number first
    if (error != 0) throw SysError(error, "ioctl", "LOOP_CONFIGURE", device);
    // A read-only policy an earlier user set on this number (BLKROSET) outlives its
    // detach: the device attached read-write is made writable again. On an error the
    // handle's close detaches it (autoclear).
    int read_only = 0;
    if (::ioctl(handle->fd(), BLKROSET, &read_only) != 0) throw SysError(errno, "ioctl", "BLKROSET", device);
    loop_info64 info = StatusOfFd(handle->fd(), device);
    return LoopAttachment{static_cast<uint32_t>(number), info.lo_flags, handle};
  }
  throw SysError(EBUSY, "ioctl", "LOOP_CONFIGURE", device);
}

LoopStatus GetLoopStatus(const std::string& device) {
  Fd fd(OpenLoop(device));
  loop_info64 info = StatusOfFd(fd.get(), device);
  LoopStatus status;
  status.number = info.lo_number;
  status.flags = info.lo_flags;
  status.backing_major = ::major(static_cast<dev_t>(info.lo_device));
  status.backing_minor = ::minor(static_cast<dev_t>(info.lo_device));
  status.backing_inode = info.lo_inode;
  status.offset = info.lo_offset;
  status.size_limit = info.lo_sizelimit;
  const char* name = reinterpret_cast<const char*>(info.lo_file_name);
  status.file_name.assign(name, ::strnlen(name, LO_NAME_SIZE));
  return status;
}

void SetLoopCapacity(const std::string& device) {
  Fd fd(OpenLoop(device));
  if (::ioctl(fd.get(), LOOP_SET_CAPACITY, 0) != 0) throw SysError(errno, "ioctl", "LOOP_SET_CAPACITY", device);
}

void DetachLoop(const std::string& device) {
  Fd fd(OpenLoop(device));
  if (::ioctl(fd.get(), LOOP_CLR_FD, 0) != 0) throw SysError(errno, "ioctl", "LOOP_CLR_FD", device);
}

}  // namespace dmsnap
