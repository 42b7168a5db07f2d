// A failed system call, described the way the JavaScript layer needs it to build a
// Node-style error (code, errno, syscall, path). The core throws it; the N-API glue
// turns it into a JS error on the main thread.
#pragma once

#include <exception>
#include <string>

namespace dmsnap {

class SysError : public std::exception {
 public:
  SysError(int errnum, std::string syscall, std::string ioctl, std::string path,
           std::string device = {})
      : errnum(errnum),
        syscall(std::move(syscall)),
        ioctl(std::move(ioctl)),
        path(std::move(path)),
        device(std::move(device)) {}

  const char* what() const noexcept override { return "system call failed"; }

  int errnum;           // positive errno value
  std::string syscall;  // "open", "ioctl", "stat", ...
  std::string ioctl;    // "DM_VERSION", "BLKGETSIZE64", ... (empty unless syscall is ioctl)
  std::string path;     // the file the call was made on
  std::string device;   // the device-mapper device the call was about, if any
};

}  // namespace dmsnap
