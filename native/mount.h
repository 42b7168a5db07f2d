// mount(2) and umount2(2): dmsnap mounts snapshots for backups itself rather than
// running mount(8).
#pragma once

#include <cstdint>
#include <string>

namespace dmsnap {

void MountFilesystem(const std::string& source, const std::string& target, const std::string& fstype,
                     uint32_t flags, const std::string& data);
void UnmountFilesystem(const std::string& target, uint32_t flags);

}  // namespace dmsnap
