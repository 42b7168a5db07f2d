#include "signature_probe.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>
#include <type_traits>
#include <utility>

#include "fd.h"
#include "libblkid.h"
#include "sys_error.h"

namespace dmsnap {

namespace {

struct FreeProbe {
  void operator()(BlkidProbe probe) const { Blkid().free_probe(probe); }
};
using Probe = std::unique_ptr<BlkidProbeStruct, FreeProbe>;

// Guards against a probe that keeps matching after its magic was hidden; real devices
// carry a handful of signatures.
constexpr int kMaxResults = 256;

// libblkid returns -1 and leaves the cause in errno (newer versions may return -errno).
int ProbeErrno(int rc) {
  if (rc < -1) return -rc;
  return errno != 0 ? errno : EIO;
}

// A text value of the current result ("" when absent); blkid's lengths count the NUL.
std::string TextValue(BlkidProbe probe, const char* name) {
  const char* data = nullptr;
  size_t length = 0;
  if (Blkid().probe_lookup_value(probe, name, &data, &length) != 0 || data == nullptr) return {};
  return std::string(data, ::strnlen(data, length));
}

// blkid reports magic offsets as decimal text.
uint64_t OffsetValue(BlkidProbe probe, const char* name) {
  std::string text = TextValue(probe, name);
  if (text.empty()) return 0;
  return std::strtoull(text.c_str(), nullptr, 10);
}

size_t MagicLength(BlkidProbe probe, const char* name) {
  const char* data = nullptr;
  size_t length = 0;
  if (Blkid().probe_lookup_value(probe, name, &data, &length) != 0) return 0;
  return length;
}

std::string Usage(const std::string& blkid_usage) {
  if (blkid_usage == "filesystem" || blkid_usage == "raid" || blkid_usage == "crypto") return blkid_usage;
  return "other";
}

}  // namespace

std::vector<Signature> ProbeSignatures(const std::string& path) {
  // Read-only and not O_EXCL: probing must work on a device that is in use.
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) throw SysError(errno, "open", "", path);
  return ProbeSignaturesFd(fd.get(), path);
}

std::vector<Signature> ProbeSignaturesFd(int fd, const std::string& path) {
  // Images are probed too (tests, and COW files behind loop devices); anything else,
  // such as a character device, cannot hold a COW.
  struct stat st;
  if (::fstat(fd, &st) != 0) throw SysError(errno, "fstat", "", path);
  if (!S_ISBLK(st.st_mode) && !S_ISREG(st.st_mode)) throw SysError(ENOTBLK, "open", "", path);

  Probe probe(Blkid().new_probe());
  if (!probe) throw SysError(ENOMEM, "blkid_new_probe", "", path);
  BlkidProbe pr = probe.get();

  errno = 0;
  int rc = Blkid().probe_set_device(pr, fd, 0, 0);
  if (rc != 0) throw SysError(ProbeErrno(rc), "blkid_probe_set_device", "", path);

  Blkid().probe_enable_superblocks(pr, 1);
  // BADCSUM: a filesystem whose checksum fails still holds the user's data.
  Blkid().probe_set_superblocks_flags(pr, kBlkidSublksType | kBlkidSublksUsage | kBlkidSublksLabel |
                                            kBlkidSublksUuid | kBlkidSublksMagic | kBlkidSublksBadcsum);
  Blkid().probe_enable_partitions(pr, 1);
  // FORCE_GPT: report a GPT even when its protective MBR is missing or damaged.
  Blkid().probe_set_partitions_flags(pr, kBlkidPartsMagic | kBlkidPartsForceGpt);

  std::vector<Signature> found;
  std::set<std::pair<std::string, uint64_t>> seen;
  for (int results = 0; results < kMaxResults; results++) {
    errno = 0;
    rc = Blkid().do_probe(pr);
    if (rc == 1) break;  // every prober of every chain has run
    if (rc < 0) throw SysError(ProbeErrno(rc), "blkid_do_probe", "", path);

    Signature signature{};
    size_t magic_length = 0;
    std::string type = TextValue(pr, "TYPE");
    if (!type.empty()) {
      signature.type = type;
      signature.usage = Usage(TextValue(pr, "USAGE"));
      signature.label = TextValue(pr, "LABEL");
      signature.uuid = TextValue(pr, "UUID");
      signature.offset = OffsetValue(pr, "SBMAGIC_OFFSET");
      magic_length = MagicLength(pr, "SBMAGIC");
    } else {
      type = TextValue(pr, "PTTYPE");
      if (type.empty()) continue;
      signature.type = type;
      signature.usage = "partition_table";
      signature.uuid = TextValue(pr, "PTUUID");
      signature.offset = OffsetValue(pr, "PTMAGIC_OFFSET");
      magic_length = MagicLength(pr, "PTMAGIC");
    }
    if (!seen.insert({signature.type, signature.offset}).second) continue;
    found.push_back(std::move(signature));

    // Hide this magic (in blkid's buffers only, nothing is written) and run the same
    // prober again: that finds the backup copies (GPT, LUKS2, FAT) a wipe would leave.
    if (magic_length > 0 && Blkid().probe_hide_range(pr, found.back().offset, magic_length) == 0) {
      Blkid().probe_step_back(pr);
    }
  }
  return found;
}

}  // namespace dmsnap
