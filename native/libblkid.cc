#include "libblkid.h"

#include <dlfcn.h>
#include <errno.h>

#include <mutex>
#include <string>

#include "sys_error.h"

namespace dmsnap {

namespace {

constexpr const char* kSoname = "libblkid.so.1";

template <typename Fn>
void Resolve(void* handle, const char* symbol, Fn& slot, std::string& missing) {
  slot = reinterpret_cast<Fn>(::dlsym(handle, symbol));
  if (!slot && missing.empty()) missing = symbol;
}

}  // namespace

const BlkidApi& Blkid() {
  static BlkidApi api{};
  static std::string missing;
  static std::once_flag once;
  std::call_once(once, [] {
    // Never unloaded: the probe may run on any thread until the process ends.
    void* handle = ::dlopen(kSoname, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      missing = kSoname;
      return;
    }
    Resolve(handle, "blkid_new_probe", api.new_probe, missing);
    Resolve(handle, "blkid_free_probe", api.free_probe, missing);
    Resolve(handle, "blkid_probe_set_device", api.probe_set_device, missing);
    Resolve(handle, "blkid_probe_enable_superblocks", api.probe_enable_superblocks, missing);
    Resolve(handle, "blkid_probe_set_superblocks_flags", api.probe_set_superblocks_flags, missing);
    Resolve(handle, "blkid_probe_enable_partitions", api.probe_enable_partitions, missing);
    Resolve(handle, "blkid_probe_set_partitions_flags", api.probe_set_partitions_flags, missing);
    Resolve(handle, "blkid_do_probe", api.do_probe, missing);
    Resolve(handle, "blkid_probe_lookup_value", api.probe_lookup_value, missing);
    Resolve(handle, "blkid_probe_hide_range", api.probe_hide_range, missing);
    Resolve(handle, "blkid_probe_step_back", api.probe_step_back, missing);
  });
  if (!missing.empty()) throw SysError(ENOENT, "dlopen", "", missing == kSoname ? kSoname : std::string(kSoname) + ":" + missing);
  return api;
}

}  // namespace dmsnap
