// An open block device, held from the first check of a device to the last write dmsnap
// makes to it, so that every check and the write reach one device: the one the path
// named when it was opened, whatever happens to the path afterwards.
#pragma once

#include <cstdint>
#include <string>

namespace dmsnap {

class DeviceHandle {
 public:
  // Opens read-only or read-write, with O_EXCL when exclusive (EBUSY while the device is
  // mounted or held by device-mapper, md or another exclusive opener), close-on-exec.
  // Throws SysError; anything but a block device fails with ENOTBLK.
  DeviceHandle(std::string path, bool exclusive, bool writable);
  ~DeviceHandle();
  DeviceHandle(const DeviceHandle&) = delete;
  DeviceHandle& operator=(const DeviceHandle&) = delete;

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  bool writable() const { return writable_; }
  uint32_t major() const { return major_; }
  uint32_t minor() const { return minor_; }

 private:
  int fd_;
  std::string path_;
  bool writable_;
  uint32_t major_;
  uint32_t minor_;
};

}  // namespace dmsnap
