// Queries on block devices: size, sector sizes, read-only flag and device number.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dmsnap {

struct BlockDeviceInfo {
  uint64_t size_bytes;             // BLKGETSIZE64
  uint32_t logical_sector_size;    // BLKSSZGET
  uint32_t physical_sector_size;   // BLKPBSZGET
  bool read_only;                  // BLKROGET
  uint32_t major;
  uint32_t minor;
};

// Opens the path read-only (never exclusively, never for writing) and asks the kernel.
// Throws SysError; a path that is not a block device fails with ENOTBLK.
BlockDeviceInfo QueryBlockDevice(const std::string& path);

// The same questions asked of an open block device (`path` only names it in errors).
BlockDeviceInfo QueryBlockDeviceFd(int fd, const std::string& path);

struct DeviceNumber {
  uint32_t major;
  uint32_t minor;
};

// major:minor of a block device node, from stat(2); no open. ENOTBLK if not a block device.
DeviceNumber StatBlockDevice(const std::string& path);

}  // namespace dmsnap

namespace dmsnap {

// mknod(2) of a block device node with the given permission bits. Throws SysError
// (EEXIST when something is already there: the caller decides what to do with it).
void MakeBlockNode(const std::string& path, uint32_t major, uint32_t minor, uint32_t mode);

}  // namespace dmsnap

namespace dmsnap {

// Opens the block device exclusively (O_EXCL: fails with EBUSY while it is mounted, held
// by device-mapper, md or another exclusive opener) and closes it again.
void CheckExclusive(const std::string& path);

// Writes `length` zero bytes at the start of an open device, then fdatasync.
void ZeroFdStart(int fd, const std::string& path, uint64_t length);

// Writes `data` at `offset` of an open device, then fdatasync: durable when it returns.
void WriteFdAt(int fd, const std::string& path, uint64_t offset, const std::vector<char>& data);

}  // namespace dmsnap

#include <vector>

namespace dmsnap {

// Reads up to `length` bytes at `offset` of a block device or file, opened read-only.
std::vector<char> ReadDeviceBytes(const std::string& path, uint64_t offset, uint32_t length);

// Reads up to `length` bytes at `offset` of an open device or file.
std::vector<char> ReadFdBytes(int fd, const std::string& path, uint64_t offset, uint32_t length);

// The same, bypassing the page cache (O_DIRECT), for data the kernel writes to the device
// without it (dm-io). The open device is opened again through /proc/self/fd, and must
// still be the same device; offset and length must be multiples of its logical block size.
std::vector<char> ReadFdBytesDirect(int fd, const std::string& path, uint64_t offset, uint32_t length);

}  // namespace dmsnap
