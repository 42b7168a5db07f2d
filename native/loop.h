// Loop devices attached by dmsnap itself: /dev/loop-control for a free number, then the
// loop ioctls on /dev/loopN (LOOP_CONFIGURE, LOOP_GET_STATUS64, LOOP_SET_CAPACITY,
// LOOP_CLR_FD). Positional and unchecked: lib/system/loop.ts validates first.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "device_handle.h"

namespace dmsnap {

struct LoopAttachment {
  uint32_t number;                         // N of /dev/loopN
  uint32_t flags;                          // lo_flags after the attach (LO_FLAGS_*)
  std::shared_ptr<DeviceHandle> device;    // /dev/loopN held open read-write
};

// Attaches the regular file at `file` (opened O_RDWR | O_NOFOLLOW | O_CLOEXEC) to a free
// loop device with LO_FLAGS_AUTOCLEAR, `tag` in lo_file_name, and LO_FLAGS_DIRECT_IO
// when `direct_io` (attached again without it if the kernel refuses it). A number taken
// by another process between LOOP_CTL_GET_FREE and LOOP_CONFIGURE (EBUSY) is given up
// for the next free one, a few times. The device stays attached while `device` (or
// anything else) holds it open. Throws SysError.
LoopAttachment AttachLoop(const std::string& file, const std::string& tag, bool direct_io);

struct LoopStatus {
  uint32_t number;        // lo_number
  uint32_t flags;         // lo_flags
  uint32_t backing_major;  // lo_device: the device of the backing file's filesystem
  uint32_t backing_minor;
  uint64_t backing_inode;  // lo_inode
  uint64_t offset;         // lo_offset, bytes
  uint64_t size_limit;     // lo_sizelimit, bytes (0: the whole file)
  std::string file_name;   // lo_file_name (up to 63 bytes)
};

// LOOP_GET_STATUS64 of /dev/loopN (opened read-only). ENXIO when nothing is attached.
LoopStatus GetLoopStatus(const std::string& device);

// LOOP_SET_CAPACITY: the device takes the backing file's current size.
void SetLoopCapacity(const std::string& device);

// LOOP_CLR_FD: detaches now when nothing else holds the device open, otherwise the
// kernel marks it LO_FLAGS_AUTOCLEAR and detaches it at the last close.
void DetachLoop(const std::string& device);

}  // namespace dmsnap
