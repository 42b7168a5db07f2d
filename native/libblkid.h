// libblkid, loaded at run time. Building dmsnap then needs no libblkid-dev: only the
// library itself (libblkid.so.1, part of util-linux on every Linux system) at run time.
// The declarations below are libblkid's stable public ABI (soname libblkid.so.1).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dmsnap {

struct BlkidProbeStruct;
using BlkidProbe = BlkidProbeStruct*;

// Flag values of the public ABI (blkid_probe_set_superblocks_flags / _partitions_flags).
constexpr int kBlkidSublksLabel = 1 << 1;
constexpr int kBlkidSublksUuid = 1 << 3;
constexpr int kBlkidSublksType = 1 << 5;
constexpr int kBlkidSublksUsage = 1 << 7;
constexpr int kBlkidSublksMagic = 1 << 9;
constexpr int kBlkidSublksBadcsum = 1 << 10;
constexpr int kBlkidPartsForceGpt = 1 << 1;
constexpr int kBlkidPartsMagic = 1 << 3;

struct BlkidApi {
  BlkidProbe (*new_probe)();
  void (*free_probe)(BlkidProbe);
  int (*probe_set_device)(BlkidProbe, int fd, int64_t offset, int64_t size);
  int (*probe_enable_superblocks)(BlkidProbe, int enable);
  int (*probe_set_superblocks_flags)(BlkidProbe, int flags);
  int (*probe_enable_partitions)(BlkidProbe, int enable);
  int (*probe_set_partitions_flags)(BlkidProbe, int flags);
  int (*do_probe)(BlkidProbe);
  int (*probe_lookup_value)(BlkidProbe, const char* name, const char** data, size_t* length);
  int (*probe_hide_range)(BlkidProbe, uint64_t offset, uint64_t length);
  int (*probe_step_back)(BlkidProbe);
};

// The library, loaded once per process. Throws SysError (syscall "dlopen", path
// "libblkid.so.1") when it or one of its symbols is missing.
const BlkidApi& Blkid();

}  // namespace dmsnap
