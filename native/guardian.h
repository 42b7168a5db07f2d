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

// Spawns the guardian and waits (at most timeout_ms) until it has the control node open
// and says it is ready. Throws SysError.
Guardian StartGuardian(const std::string& executable, const std::string& control_path,
                       const std::string& origin_name, const std::string& lock_path, uint32_t timeout_ms);

// Tells the guardian the freeze ended as planned ("D") or not at all (just closes), and
// reaps it. Returns its exit status.
int FinishGuardian(Guardian guardian, bool done);

}  // namespace dmsnap
