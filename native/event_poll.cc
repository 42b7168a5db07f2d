#include "event_poll.h"

#include <errno.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "dm_control.h"
#include "sys_error.h"

namespace dmsnap {

PollWait::PollWait(std::shared_ptr<const DmControl> control) : control_(std::move(control)), cancel_fd_(-1) {
  cancel_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (cancel_fd_ < 0) throw SysError(errno, "eventfd", "", "");
}

PollWait::~PollWait() {
  if (cancel_fd_ >= 0) ::close(cancel_fd_);
}

bool PollWait::Wait() {
  struct pollfd fds[2] = {{control_->fd(), POLLIN, 0}, {cancel_fd_, POLLIN, 0}};
  for (;;) {
    int n = ::poll(fds, 2, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "poll", "", control_->path());
    }
    if (fds[1].revents) return false;
    if (fds[0].revents & POLLIN) return true;
    if (fds[0].revents & (POLLERR | POLLNVAL)) throw SysError(EBADF, "poll", "", control_->path());
  }
}

void PollWait::Cancel() {
  uint64_t one = 1;
  // Cannot fail in a way that matters: a full counter still wakes the waiter.
  ssize_t ignored = ::write(cancel_fd_, &one, sizeof(one));
  (void)ignored;
}

}  // namespace dmsnap
