// Signatures on a device (filesystems, RAID and LVM members, LUKS, partition tables, …)
// found by libblkid, so that dmsnap never zeroes a COW device that holds data.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace dmsnap {

struct Signature {
  std::string type;   // blkid's TYPE or PTTYPE: "ext4", "crypto_LUKS", "gpt", …
  std::string usage;  // "filesystem", "raid", "crypto", "partition_table" or "other"
  std::string label;  // empty when the signature has none
  std::string uuid;   // UUID, or PTUUID for a partition table; empty when none
  uint64_t offset;    // byte offset of the magic on the device
};

// Every signature blkid recognises, as wipefs lists them: each probe that matches, plus
// the backup copies (GPT, LUKS2, FAT) found by hiding a match and probing again. Several
// filesystems at once are all reported. Opens the path read-only and never writes; works
// on a block device or a regular file (an image); anything else fails with ENOTBLK.
// Throws SysError.
std::vector<Signature> ProbeSignatures(const std::string& path);

// The same probe of an open block device or file (`path` only names it in errors).
std::vector<Signature> ProbeSignaturesFd(int fd, const std::string& path);

}  // namespace dmsnap
