// Waiting for a device-mapper event without holding a thread-pool thread: after
// DM_DEV_ARM_POLL, the control descriptor becomes readable on the next event. A
// PollWait runs poll(2) on its own thread, and can be cancelled through an eventfd.
#pragma once

#include <memory>

namespace dmsnap {

class DmControl;

class PollWait {
 public:
  // Keeps `control` (and so its descriptor) alive while waiting. Throws SysError.
  explicit PollWait(std::shared_ptr<const DmControl> control);
  ~PollWait();
  PollWait(const PollWait&) = delete;
  PollWait& operator=(const PollWait&) = delete;

  // Blocks until the control descriptor is readable (true) or Cancel() is called (false).
  bool Wait();
  // Safe from any thread, any number of times.
  void Cancel();

 private:
  std::shared_ptr<const DmControl> control_;
  int cancel_fd_;
};

}  // namespace dmsnap
