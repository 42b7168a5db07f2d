// The device-mapper control node (/dev/mapper/control): owns its descriptor and
// marshals struct dm_ioctl requests. Plain C++, no N-API types: the glue in addon.cc
// runs these calls on worker threads. Every method is safe to call from several
// threads at once: each call builds its own request buffer and the descriptor is
// only read.
#pragma once

#include <cstdint>
#include <string>

namespace dmsnap {

struct DmVersion {
  uint32_t major;
  uint32_t minor;
  uint32_t patch;
};

class DmControl {
 public:
  // Opens the control node read-write. Throws SysError (ENOENT when dm-mod is not loaded).
  explicit DmControl(std::string path);
  ~DmControl();
  DmControl(const DmControl&) = delete;
  DmControl& operator=(const DmControl&) = delete;

  const std::string& path() const { return path_; }

  // DM_VERSION: the version of the kernel's ioctl interface.
  DmVersion Version() const;

 private:
  int fd_;
  std::string path_;
};

}  // namespace dmsnap
