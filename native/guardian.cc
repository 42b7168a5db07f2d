#include "guardian.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "sys_error.h"

extern char** environ;

namespace dmsnap {

Guardian SpawnGuardian(const std::string& executable, const std::string& control_path,
                       const std::string& origin_name, const std::string& lock_path, const std::string& lock_id) {
  int pair[2];
  // Close-on-exec on both ends: no other child may inherit our end, or the guardian
  // would never see end of file when we die.
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw SysError(errno, "socketpair", "", "");
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, pair[1], STDIN_FILENO);
  std::vector<char*> argv = {const_cast<char*>(executable.c_str()), const_cast<char*>(control_path.c_str()),
                             const_cast<char*>(origin_name.c_str()), const_cast<char*>(lock_path.c_str()),
                             const_cast<char*>(lock_id.c_str()), nullptr};
  pid_t pid = 0;
  int rc = posix_spawn(&pid, executable.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(pair[1]);
  if (rc != 0) {
    ::close(pair[0]);
    throw SysError(rc, "posix_spawn", "", executable);
  }
  // glibc's posix_spawn returns after the child's exec (it spawns with CLONE_VFORK).
  return Guardian{pid, pair[0]};
}

void AwaitGuardianReady(Guardian guardian, const std::string& executable, uint32_t timeout_ms) {
  struct pollfd fds = {guardian.fd, POLLIN, 0};
  int ready = 0;
  do {
    ready = ::poll(&fds, 1, static_cast<int>(timeout_ms));
  } while (ready < 0 && errno == EINTR);
  char byte = 0;
  if (ready <= 0 || ::read(guardian.fd, &byte, 1) != 1 || byte != 'R') {
    // It could not open the control node, or hung: it is no guardian.
    ::close(guardian.fd);
    ::kill(guardian.pid, SIGKILL);
    int status = 0;
    ::waitpid(guardian.pid, &status, 0);
    throw SysError(ready == 0 ? ETIMEDOUT : ECHILD, "dmsnap-guardian", "", executable);
  }
}

int FinishGuardian(Guardian guardian, bool done) {
  if (done) {
    ssize_t ignored = ::write(guardian.fd, "D", 1);  // if it is gone already, waitpid says so
    (void)ignored;
  }
  ::close(guardian.fd);
  int status = 0;
  while (::waitpid(guardian.pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace dmsnap
