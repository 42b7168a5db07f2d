// Starting and ending dmsnap-guardian (guardian_main.cc), the process that resumes an
// origin if dmsnap dies while it is suspended.
#pragma once

#include <cstdint>
#include <string>

namespace dmsnap {

struct Guardian {
  int pid;
  int fd;  // our end of the socket pair (close-on-exec)
};

// Spawns the guardian. Returns once it runs its own program; it copied our descriptor table
// when it was spawned, so a descriptor opened after this returns never reaches it (an
// exclusive open of the COW held by a half-spawned child would make the kernel answer
// EBUSY to our own next exclusive open). lock_id ("DEV:INO") names the lock file we hold at
// lock_path: the guardian acts only once it holds that same file. Throws SysError.
Guardian SpawnGuardian(const std::string& executable, const std::string& control_path,
                       const std::string& origin_name, const std::string& lock_path, const std::string& lock_id);

// Waits (at most timeout_ms) until the guardian has the control node open and says it is
// ready. If it does not, kills and reaps it, closes our end, and throws SysError.
void AwaitGuardianReady(Guardian guardian, const std::string& executable, uint32_t timeout_ms);

// Tells the guardian the freeze ended as planned ("D") or not at all (just closes), and
// reaps it. Returns its exit status.
int FinishGuardian(Guardian guardian, bool done);

}  // namespace dmsnap
