// The device-mapper control node (/dev/mapper/control): owns its descriptor and
// marshals struct dm_ioctl requests. Plain C++, no N-API types: the glue in
// control_binding.cc runs these calls on worker threads. Every method may be called
// from several threads at once: each call builds its own request buffer, and the
// descriptor itself is only read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

struct dm_ioctl;

namespace dmsnap {

struct DmVersion {
  uint32_t major;
  uint32_t minor;
  uint32_t patch;
};

// Which device a request is about: the name if set, else the uuid, else major:minor.
struct DeviceRef {
  std::string name;
  std::string uuid;
  bool has_dev = false;
  uint32_t major = 0;
  uint32_t minor = 0;

  std::string Describe() const;  // for error messages
};

// The dm_ioctl header as the kernel returned it.
struct DeviceInfo {
  std::string name;
  std::string uuid;
  uint32_t major = 0;
  uint32_t minor = 0;
  int32_t open_count = 0;
  uint32_t event_nr = 0;
  uint32_t target_count = 0;
  uint32_t flags = 0;
};

struct Target {
  uint64_t start = 0;
  uint64_t length = 0;
  std::string type;
  std::string params;
};

struct ListEntry {
  std::string name;
  uint32_t major = 0;
  uint32_t minor = 0;
  std::optional<uint32_t> event_nr;  // absent on kernels that do not report it
  // Whether the kernel said if the device has a uuid (interface 4.45 and later); if so,
  // `uuid` is it, empty when the device has none. Older kernels leave this unknown.
  bool uuid_known = false;
  std::string uuid;
};

struct TargetVersion {
  std::string name;
  uint32_t version[3];
};

// Overwrites memory that held a key, in a way the compiler cannot drop as a dead store.
void WipeMemory(void* data, size_t size);

// Overwrites the params of every target (where crypt and integrity tables hold keys).
void WipeParams(std::vector<Target>& targets);

// A DM_TABLE_STATUS reply. Asked for with DM_SECURE_DATA_FLAG, its params are wiped
// when it is destroyed.
struct TableResult {
  DeviceInfo info;
  std::vector<Target> targets;
  bool secure = false;

  TableResult() = default;
  TableResult(TableResult&&) = default;  // the moved-from vector is left empty
  TableResult& operator=(TableResult&&) = delete;
  TableResult(const TableResult&) = delete;
  TableResult& operator=(const TableResult&) = delete;
  ~TableResult() {
    if (secure) WipeParams(targets);
  }
};

struct DepsResult {
  DeviceInfo info;
  std::vector<std::pair<uint32_t, uint32_t>> devices;
};

// Writes the device a request is about into a struct dm_ioctl header.
void SetRequestRef(struct dm_ioctl* header, const DeviceRef& ref);
// Reads the device fields of a struct dm_ioctl header the kernel filled in.
DeviceInfo ReadRequestInfo(const struct dm_ioctl* header);

class DmControl {
 public:
  // Opens the control node read-write. Throws SysError (ENOENT when dm-mod is not loaded).
  explicit DmControl(std::string path);
  ~DmControl();
  DmControl(const DmControl&) = delete;
  DmControl& operator=(const DmControl&) = delete;

  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

  DmVersion Version() const;
  std::vector<ListEntry> ListDevices() const;
  std::vector<TargetVersion> ListVersions() const;
  DeviceInfo Create(const std::string& name, const std::string& uuid, uint32_t flags) const;
  DeviceInfo Remove(const DeviceRef& ref, uint32_t flags, uint32_t event_nr) const;
  DeviceInfo Rename(const DeviceRef& ref, const std::string& new_value, uint32_t flags, uint32_t event_nr) const;
  DeviceInfo Suspend(const DeviceRef& ref, uint32_t flags) const;
  DeviceInfo Resume(const DeviceRef& ref, uint32_t flags, uint32_t event_nr) const;
  DeviceInfo Info(const DeviceRef& ref, uint32_t flags) const;
  DeviceInfo WaitEvent(const DeviceRef& ref, uint32_t event_nr) const;
  DeviceInfo Load(const DeviceRef& ref, const std::vector<Target>& targets, uint32_t flags) const;
  DeviceInfo Clear(const DeviceRef& ref) const;
  DepsResult Deps(const DeviceRef& ref, uint32_t flags) const;
  TableResult TableStatus(const DeviceRef& ref, uint32_t flags) const;
  std::optional<std::string> Message(const DeviceRef& ref, uint64_t sector, const std::string& message) const;
  void ArmPoll() const;

 private:
  int fd_;
  std::string path_;
};

}  // namespace dmsnap
