#include "block_device.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "fd.h"
#include "sys_error.h"

namespace dmsnap {

BlockDeviceInfo QueryBlockDevice(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) throw SysError(errno, "open", "", path);

  return QueryBlockDeviceFd(fd.get(), path);
}

BlockDeviceInfo QueryBlockDeviceFd(int raw, const std::string& path) {
  struct stat st;
  if (::fstat(raw, &st) != 0) throw SysError(errno, "fstat", "", path);
  if (!S_ISBLK(st.st_mode)) throw SysError(ENOTBLK, "open", "", path);

  BlockDeviceInfo info{};
  uint64_t size = 0;
  if (::ioctl(raw, BLKGETSIZE64, &size) != 0) throw SysError(errno, "ioctl", "BLKGETSIZE64", path);
  int logical = 0;
  if (::ioctl(raw, BLKSSZGET, &logical) != 0) throw SysError(errno, "ioctl", "BLKSSZGET", path);
  unsigned int physical = 0;
  if (::ioctl(raw, BLKPBSZGET, &physical) != 0) throw SysError(errno, "ioctl", "BLKPBSZGET", path);
  int ro = 0;
  if (::ioctl(raw, BLKROGET, &ro) != 0) throw SysError(errno, "ioctl", "BLKROGET", path);

  info.size_bytes = size;
  info.logical_sector_size = static_cast<uint32_t>(logical);
  info.physical_sector_size = physical;
  info.read_only = ro != 0;
  info.major = ::major(st.st_rdev);
  info.minor = ::minor(st.st_rdev);
  return info;
}

DeviceNumber StatBlockDevice(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) throw SysError(errno, "stat", "", path);
  if (!S_ISBLK(st.st_mode)) throw SysError(ENOTBLK, "stat", "", path);
  return DeviceNumber{::major(st.st_rdev), ::minor(st.st_rdev)};
}

}  // namespace dmsnap

namespace dmsnap {

void MakeBlockNode(const std::string& path, uint32_t major, uint32_t minor, uint32_t mode) {
  if (::mknod(path.c_str(), S_IFBLK | (mode & 07777), ::makedev(major, minor)) != 0) {
    throw SysError(errno, "mknod", "", path);
  }
  // mknod applies the umask; the node gets exactly the mode asked for.
  if (::chmod(path.c_str(), mode & 07777) != 0) throw SysError(errno, "chmod", "", path);
}

}  // namespace dmsnap

namespace dmsnap {

void CheckExclusive(const std::string& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC | O_NONBLOCK));
  if (fd.get() < 0) throw SysError(errno, "open", "", path);
}

void ZeroFdStart(int fd, const std::string& path, uint64_t length) {
  static const char zeros[64 * 1024] = {};
  uint64_t done = 0;
  while (done < length) {
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(sizeof(zeros), length - done));
    ssize_t n = ::pwrite(fd, zeros, chunk, static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "pwrite", "", path);
    }
    done += static_cast<uint64_t>(n);
  }
  if (::fdatasync(fd) != 0) throw SysError(errno, "fdatasync", "", path);
}

void WriteFdAt(int fd, const std::string& path, uint64_t offset, const std::vector<char>& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::pwrite(fd, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "pwrite", "", path);
    }
    if (n == 0) throw SysError(ENOSPC, "pwrite", "", path);
    done += static_cast<size_t>(n);
  }
  if (::fdatasync(fd) != 0) throw SysError(errno, "fdatasync", "", path);
}

}  // namespace dmsnap

namespace dmsnap {

std::vector<char> ReadDeviceBytes(const std::string& path, uint64_t offset, uint32_t length) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw SysError(errno, "open", "", path);
  return ReadFdBytes(fd.get(), path, offset, length);
}

std::vector<char> ReadFdBytes(int fd, const std::string& path, uint64_t offset, uint32_t length) {
  std::vector<char> bytes(length);
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, bytes.data() + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "pread", "", path);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  bytes.resize(done);
  return bytes;
}

std::vector<char> ReadFdBytesDirect(int fd, const std::string& path, uint64_t offset, uint32_t length) {
  struct stat held;
  if (::fstat(fd, &held) != 0) throw SysError(errno, "fstat", "", path);
  std::string self = "/proc/self/fd/" + std::to_string(fd);
  Fd direct(::open(self.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC));
  if (direct.get() < 0) throw SysError(errno, "open", "", path);
  struct stat again;
  if (::fstat(direct.get(), &again) != 0) throw SysError(errno, "fstat", "", path);
  if (again.st_rdev != held.st_rdev || again.st_ino != held.st_ino) throw SysError(ESTALE, "open", "", path);
  void* raw = nullptr;
  if (length > 0 && ::posix_memalign(&raw, 4096, length) != 0) throw SysError(ENOMEM, "posix_memalign", "", path);
  std::unique_ptr<void, decltype(&std::free)> buffer(raw, &std::free);
  char* data = static_cast<char*>(raw);
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(direct.get(), data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "pread", "", path);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return std::vector<char>(data, data + done);
}

}  // namespace dmsnap
