#include "dm_control.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/dm-ioctl.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <functional>

#include "sys_error.h"

namespace dmsnap {

namespace {

// The oldest interface version that has each command (as libdevmapper sends them):
// the kernel refuses a request whose minor version is newer than its own.
constexpr uint32_t kMinorBase = 0;        // 4.0.0: every original command
constexpr uint32_t kMinorListVersions = 1;
constexpr uint32_t kMinorTargetMsg = 2;
constexpr uint32_t kMinorArmPoll = 36;
// From 4.45 on, DM_LIST_DEVICES with DM_UUID_FLAG reports each device's uuid.
constexpr uint32_t kMinorListUuids = 45;

// First payload size tried for commands that return data; doubled on DM_BUFFER_FULL_FLAG.
constexpr size_t kInitialPayload = 16 * 1024;
constexpr size_t kMaxPayload = 256 * 1024 * 1024;

size_t Align8(size_t n) { return (n + 7) & ~size_t{7}; }

// One request: a struct dm_ioctl header followed by its data area, 8-byte aligned.
// A request sent with DM_SECURE_DATA_FLAG (a table with keys, a table or status query)
// is wiped before its memory is freed, as the kernel wipes its own copy.
class Request {
 public:
  explicit Request(size_t payload) : storage_((sizeof(struct dm_ioctl) + payload + 7) / 8, 0) {
    header()->data_size = static_cast<uint32_t>(storage_.size() * 8);
    header()->data_start = sizeof(struct dm_ioctl);
  }
  Request(Request&& other) noexcept : storage_(std::move(other.storage_)), secure_(other.secure_) {
    other.storage_.clear();
  }
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request() {
    if (secure_) WipeMemory(storage_.data(), storage_.size() * sizeof(uint64_t));
  }

  void set_secure() { secure_ = true; }

  struct dm_ioctl* header() { return reinterpret_cast<struct dm_ioctl*>(storage_.data()); }
  const struct dm_ioctl* header() const { return reinterpret_cast<const struct dm_ioctl*>(storage_.data()); }
  char* bytes() { return reinterpret_cast<char*>(storage_.data()); }
  const char* bytes() const { return reinterpret_cast<const char*>(storage_.data()); }
  size_t size() const { return storage_.size() * 8; }

  // The data the kernel returned: [data_start, data_size), bounded by the buffer.
  const char* data() const { return bytes() + header()->data_start; }
  size_t data_length() const {
    size_t end = std::min<size_t>(header()->data_size, size());
    return end > header()->data_start ? end - header()->data_start : 0;
  }

 private:
  std::vector<uint64_t> storage_;
  bool secure_ = false;
};

// Copies s into a fixed-size char field; the caller has validated the length.
void CopyField(char* field, size_t size, const std::string& s) {
  std::memset(field, 0, size);
  std::memcpy(field, s.data(), std::min(s.size(), size - 1));
}

std::string ReadField(const char* field, size_t size) { return std::string(field, strnlen(field, size)); }

// A bounded C string inside the returned data, never reading past `end`.
std::string ReadString(const char* p, const char* end) {
  if (p >= end) return std::string();
  return std::string(p, strnlen(p, static_cast<size_t>(end - p)));
}

}  // namespace

void SetRequestRef(struct dm_ioctl* header, const DeviceRef& ref) {
  if (!ref.name.empty()) {
    CopyField(header->name, sizeof(header->name), ref.name);
  } else if (!ref.uuid.empty()) {
    CopyField(header->uuid, sizeof(header->uuid), ref.uuid);
  } else if (ref.has_dev) {
    header->dev = makedev(ref.major, ref.minor);
  }
}

DeviceInfo ReadRequestInfo(const struct dm_ioctl* header) {
  DeviceInfo info;
  info.name = ReadField(header->name, sizeof(header->name));
  info.uuid = ReadField(header->uuid, sizeof(header->uuid));
  info.major = ::major(header->dev);
  info.minor = ::minor(header->dev);
  info.open_count = header->open_count;
  info.event_nr = header->event_nr;
  info.target_count = header->target_count;
  info.flags = header->flags;
  return info;
}

void WipeMemory(void* data, size_t size) {
  if (data != nullptr && size > 0) ::explicit_bzero(data, size);
}

void WipeParams(std::vector<Target>& targets) {
  for (Target& t : targets) WipeMemory(t.params.data(), t.params.size());
}

namespace {

// The fields after a DM_LIST_DEVICES record's name, from `extra` (8-byte aligned after
// it) to `record_end`. Kernels since 4.37 put a u32 event_nr there; 4.45 and later add a
// u32 flags word and, with DM_NAME_LIST_FLAG_HAS_UUID, the uuid (8-byte aligned after
// it). Before 4.45 the word after event_nr is padding left as the request sent it (zero
// here): the uuid is known only when the kernel is new enough and set one of the two bits.
void ReadListExtras(const char* extra, const char* record_end, bool lists_uuids, ListEntry& entry) {
  if (extra + sizeof(uint32_t) > record_end) return;
  uint32_t event_nr;
  std::memcpy(&event_nr, extra, sizeof(event_nr));
  entry.event_nr = event_nr;
  if (!lists_uuids || extra + 2 * sizeof(uint32_t) > record_end) return;
  uint32_t flags;
  std::memcpy(&flags, extra + sizeof(uint32_t), sizeof(flags));
  if (flags & DM_NAME_LIST_FLAG_HAS_UUID) {
    entry.uuid_known = true;
    entry.uuid = ReadString(extra + Align8(2 * sizeof(uint32_t)), record_end);
  } else if (flags & DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID) {
    entry.uuid_known = true;
  }
}

}  // namespace

std::string DeviceRef::Describe() const {
  if (!name.empty()) return name;
  if (!uuid.empty()) return "uuid " + uuid;
  if (has_dev) return std::to_string(major) + ":" + std::to_string(minor);
  return std::string();
}

DmControl::DmControl(std::string path) : fd_(-1), path_(std::move(path)) {
  fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
  if (fd_ < 0) throw SysError(errno, "open", "", path_);
}

DmControl::~DmControl() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

struct Command {
  unsigned long request;
  const char* name;
  uint32_t minor;
};

// Runs one command. `fill` writes the header fields and any input payload into a fresh
// request of the given payload size; when the kernel answers DM_BUFFER_FULL_FLAG (with
// rc 0) the request is rebuilt with twice the room and sent again.
Request Run(int fd, const std::string& path, const Command& command, const std::string& device, size_t payload,
            const std::function<void(Request&)>& fill) {
  for (;;) {
    Request request(payload);
    struct dm_ioctl* header = request.header();
    header->version[0] = DM_VERSION_MAJOR;
    header->version[1] = command.minor;
    header->version[2] = 0;
    fill(request);
    if (header->flags & DM_SECURE_DATA_FLAG) request.set_secure();
    // Some commands answer with a positive value (a message to a device without a live
    // table returns 2): only a negative return is a failure.
    if (::ioctl(fd, command.request, request.bytes()) < 0) {
      throw SysError(errno, "ioctl", command.name, path, device);
    }
    if (!(request.header()->flags & DM_BUFFER_FULL_FLAG)) return request;
    if (payload >= kMaxPayload) throw SysError(ENOBUFS, "ioctl", command.name, path, device);
    payload *= 2;
  }
}

}  // namespace

DmVersion DmControl::Version() const {
  Request r = Run(fd_, path_, {DM_VERSION, "DM_VERSION", kMinorBase}, "", 0, [](Request&) {});
  return DmVersion{r.header()->version[0], r.header()->version[1], r.header()->version[2]};
}

std::vector<ListEntry> DmControl::ListDevices() const {
  Request r = Run(fd_, path_, {DM_LIST_DEVICES, "DM_LIST_DEVICES", kMinorBase}, "", kInitialPayload,
                  [](Request& req) { req.header()->flags |= DM_UUID_FLAG; });
  // Every reply header carries the kernel's own interface version.
  const bool lists_uuids = r.header()->version[0] > DM_VERSION_MAJOR ||
                           (r.header()->version[0] == DM_VERSION_MAJOR && r.header()->version[1] >= kMinorListUuids);
  std::vector<ListEntry> entries;
  const char* data = r.data();
  const size_t length = r.data_length();
  const char* end = data + length;
  constexpr size_t kNameOffset = offsetof(struct dm_name_list, name);
  if (length < sizeof(struct dm_name_list)) return entries;
  size_t offset = 0;
  for (;;) {
    if (offset + kNameOffset > length) break;
    const auto* record = reinterpret_cast<const struct dm_name_list*>(data + offset);
    if (record->dev == 0) break;  // the kernel's "no devices" marker
    // Each record ends where the next begins (`next` counts from this record), or at
    // the end of the data for the last one.
    const char* record_end = record->next ? data + offset + record->next : end;
    if (record_end > end) record_end = end;
    ListEntry entry;
    const char* name = data + offset + kNameOffset;
    entry.name = ReadString(name, record_end);
    entry.major = ::major(record->dev);
    entry.minor = ::minor(record->dev);
    ReadListExtras(data + Align8(offset + kNameOffset + entry.name.size() + 1), record_end, lists_uuids, entry);
    entries.push_back(std::move(entry));
    if (!record->next) break;
    offset += record->next;
  }
  return entries;
}

std::vector<TargetVersion> DmControl::ListVersions() const {
  Request r = Run(fd_, path_, {DM_LIST_VERSIONS, "DM_LIST_VERSIONS", kMinorListVersions}, "", kInitialPayload,
                  [](Request&) {});
  std::vector<TargetVersion> versions;
  const char* data = r.data();
  const size_t length = r.data_length();
  constexpr size_t kNameOffset = offsetof(struct dm_target_versions, name);
  size_t offset = 0;
  while (offset + kNameOffset <= length) {
    const auto* record = reinterpret_cast<const struct dm_target_versions*>(data + offset);
    TargetVersion version;
    const char* record_end = record->next ? data + offset + record->next : data + length;
    if (record_end > data + length) record_end = data + length;
    version.name = ReadString(data + offset + kNameOffset, record_end);
    std::memcpy(version.version, record->version, sizeof(version.version));
    if (version.name.empty()) break;
    versions.push_back(std::move(version));
    if (!record->next) break;
    offset += record->next;  // counted from this record
  }
  return versions;
}

DeviceInfo DmControl::Create(const std::string& name, const std::string& uuid, uint32_t flags) const {
  Request r = Run(fd_, path_, {DM_DEV_CREATE, "DM_DEV_CREATE", kMinorBase}, name, 0, [&](Request& req) {
    CopyField(req.header()->name, sizeof(req.header()->name), name);
    if (!uuid.empty()) CopyField(req.header()->uuid, sizeof(req.header()->uuid), uuid);
    req.header()->flags |= flags;
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Remove(const DeviceRef& ref, uint32_t flags, uint32_t event_nr) const {
  Request r = Run(fd_, path_, {DM_DEV_REMOVE, "DM_DEV_REMOVE", kMinorBase}, ref.Describe(), 0, [&](Request& req) {
    SetRequestRef(req.header(), ref);
    req.header()->flags |= flags;
    req.header()->event_nr = event_nr;
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Rename(const DeviceRef& ref, const std::string& new_value, uint32_t flags,
                             uint32_t event_nr) const {
  Request r = Run(fd_, path_, {DM_DEV_RENAME, "DM_DEV_RENAME", kMinorBase}, ref.Describe(), Align8(new_value.size() + 1),
                  [&](Request& req) {
                    SetRequestRef(req.header(), ref);
                    req.header()->flags |= flags;
                    req.header()->event_nr = event_nr;
                    // The new name (or uuid) is a string at the start of the data area.
                    std::memcpy(req.bytes() + req.header()->data_start, new_value.c_str(), new_value.size() + 1);
                  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Suspend(const DeviceRef& ref, uint32_t flags) const {
  Request r = Run(fd_, path_, {DM_DEV_SUSPEND, "DM_DEV_SUSPEND", kMinorBase}, ref.Describe(), 0, [&](Request& req) {
    SetRequestRef(req.header(), ref);
    req.header()->flags |= flags | DM_SUSPEND_FLAG;
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Resume(const DeviceRef& ref, uint32_t flags, uint32_t event_nr) const {
  Request r = Run(fd_, path_, {DM_DEV_SUSPEND, "DM_DEV_SUSPEND", kMinorBase}, ref.Describe(), 0, [&](Request& req) {
    SetRequestRef(req.header(), ref);
    req.header()->flags |= flags & ~static_cast<uint32_t>(DM_SUSPEND_FLAG);
    req.header()->event_nr = event_nr;
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Info(const DeviceRef& ref, uint32_t flags) const {
  Request r = Run(fd_, path_, {DM_DEV_STATUS, "DM_DEV_STATUS", kMinorBase}, ref.Describe(), 0, [&](Request& req) {
    SetRequestRef(req.header(), ref);
    req.header()->flags |= flags;
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::WaitEvent(const DeviceRef& ref, uint32_t event_nr) const {
  // DM_DEV_WAIT answers with the status of the live table; keep the reply small.
  Request r = Run(fd_, path_, {DM_DEV_WAIT, "DM_DEV_WAIT", kMinorBase}, ref.Describe(), kInitialPayload,
                  [&](Request& req) {
                    SetRequestRef(req.header(), ref);
                    req.header()->event_nr = event_nr;
                  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Load(const DeviceRef& ref, const std::vector<Target>& targets, uint32_t flags) const {
  size_t payload = 0;
  for (const Target& t : targets) payload += Align8(sizeof(struct dm_target_spec) + t.params.size() + 1);
  Request r = Run(fd_, path_, {DM_TABLE_LOAD, "DM_TABLE_LOAD", kMinorBase}, ref.Describe(), payload, [&](Request& req) {
    SetRequestRef(req.header(), ref);
    req.header()->flags |= flags;
    req.header()->target_count = static_cast<uint32_t>(targets.size());
    size_t offset = req.header()->data_start;
    for (const Target& t : targets) {
      auto* spec = reinterpret_cast<struct dm_target_spec*>(req.bytes() + offset);
      spec->sector_start = t.start;
      spec->length = t.length;
      spec->status = 0;
      CopyField(spec->target_type, sizeof(spec->target_type), t.type);
      std::memcpy(req.bytes() + offset + sizeof(struct dm_target_spec), t.params.c_str(), t.params.size() + 1);
      // On input, `next` counts from the start of this spec to the next one.
      size_t size = Align8(sizeof(struct dm_target_spec) + t.params.size() + 1);
      spec->next = static_cast<uint32_t>(size);
      offset += size;
    }
  });
  return ReadRequestInfo(r.header());
}

DeviceInfo DmControl::Clear(const DeviceRef& ref) const {
  Request r = Run(fd_, path_, {DM_TABLE_CLEAR, "DM_TABLE_CLEAR", kMinorBase}, ref.Describe(), 0,
                  [&](Request& req) { SetRequestRef(req.header(), ref); });
  return ReadRequestInfo(r.header());
}

DepsResult DmControl::Deps(const DeviceRef& ref, uint32_t flags) const {
  Request r = Run(fd_, path_, {DM_TABLE_DEPS, "DM_TABLE_DEPS", kMinorBase}, ref.Describe(), kInitialPayload,
                  [&](Request& req) {
                    SetRequestRef(req.header(), ref);
                    req.header()->flags |= flags;
                  });
  DepsResult result;
  result.info = ReadRequestInfo(r.header());
  const size_t length = r.data_length();
  if (length >= sizeof(struct dm_target_deps)) {
    const auto* deps = reinterpret_cast<const struct dm_target_deps*>(r.data());
    size_t room = (length - sizeof(struct dm_target_deps)) / sizeof(uint64_t);
    for (size_t i = 0; i < deps->count && i < room; i++) {
      uint64_t dev;
      std::memcpy(&dev, r.data() + sizeof(struct dm_target_deps) + i * sizeof(uint64_t), sizeof(dev));
      result.devices.emplace_back(::major(dev), ::minor(dev));
    }
  }
  return result;
}

TableResult DmControl::TableStatus(const DeviceRef& ref, uint32_t flags) const {
  Request r = Run(fd_, path_, {DM_TABLE_STATUS, "DM_TABLE_STATUS", kMinorBase}, ref.Describe(), kInitialPayload,
                  [&](Request& req) {
                    SetRequestRef(req.header(), ref);
                    req.header()->flags |= flags;
                  });
  TableResult result;
  result.secure = (flags & DM_SECURE_DATA_FLAG) != 0;
  result.info = ReadRequestInfo(r.header());
  // Room for every target up front: growing the vector would leave copies behind.
  result.targets.reserve(std::min<size_t>(r.header()->target_count, r.data_length() / sizeof(struct dm_target_spec)));
  const char* data = r.data();
  const size_t length = r.data_length();
  size_t offset = 0;
  for (uint32_t i = 0; i < r.header()->target_count; i++) {
    if (offset + sizeof(struct dm_target_spec) > length) break;
    const auto* spec = reinterpret_cast<const struct dm_target_spec*>(data + offset);
    Target target;
    target.start = spec->sector_start;
    target.length = spec->length;
    target.type = ReadField(spec->target_type, sizeof(spec->target_type));
    target.params = ReadString(data + offset + sizeof(struct dm_target_spec), data + length);
    result.targets.push_back(std::move(target));
    // On output, `next` counts from the start of the data area, not from this spec.
    if (spec->next <= offset) break;
    offset = spec->next;
  }
  return result;
}

std::optional<std::string> DmControl::Message(const DeviceRef& ref, uint64_t sector, const std::string& message) const {
  size_t payload = std::max(kInitialPayload, Align8(sizeof(struct dm_target_msg) + message.size() + 1));
  Request r = Run(fd_, path_, {DM_TARGET_MSG, "DM_TARGET_MSG", kMinorTargetMsg}, ref.Describe(), payload,
                  [&](Request& req) {
                    SetRequestRef(req.header(), ref);
                    auto* msg = reinterpret_cast<struct dm_target_msg*>(req.bytes() + req.header()->data_start);
                    msg->sector = sector;
                    std::memcpy(req.bytes() + req.header()->data_start + sizeof(struct dm_target_msg),
                                message.c_str(), message.size() + 1);
                  });
  if (!(r.header()->flags & DM_DATA_OUT_FLAG)) return std::nullopt;
  return ReadString(r.data(), r.data() + r.data_length());
}

void DmControl::ArmPoll() const {
  Run(fd_, path_, {DM_DEV_ARM_POLL, "DM_DEV_ARM_POLL", kMinorArmPoll}, "", 0, [](Request&) {});
}

}  // namespace dmsnap
