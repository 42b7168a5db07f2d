// Reserving a file's space (fallocate(2)): a COW file made with --preallocate can never
// fail a write for want of room on its filesystem.
#pragma once

#include <cstdint>
#include <string>

namespace dmsnap {

// Opens `path` (never through a symlink), checks that it is the regular file with inode
// `inode`, and allocates its first `length` bytes (the file grows to `length` if shorter),
// then fsyncs it. ESTALE if the path names another file now.
void PreallocateFile(const std::string& path, uint64_t inode, uint64_t length);

}  // namespace dmsnap
