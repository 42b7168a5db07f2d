// The suspends of a group's freeze, at once: one thread per origin past the first, started
// before the freeze and parked on a futex, so that every origin's flush and filesystem
// freeze run side by side and a group's freeze lasts about as long as its slowest member's
// suspend, not the sum. Inside the freeze the threads only make their ioctl: no
// allocation, no lock, their stacks locked in memory.
#pragma once

#include <linux/dm-ioctl.h>

#include <atomic>
#include <thread>

namespace dmsnap {

constexpr int kMaxSuspendCrew = 16;

class SuspendCrew {
 public:
  SuspendCrew() = default;
  SuspendCrew(const SuspendCrew&) = delete;
  SuspendCrew& operator=(const SuspendCrew&) = delete;
  ~SuspendCrew() { Join(); }

  // Starts a thread for each of requests[1..n-1], parked until SuspendAll. Returns false
  // (and starts none) when a thread cannot be started: the caller then suspends in order.
  bool Start(int fd, struct dm_ioctl* const* requests, int n);
  // Inside the freeze: releases the threads, suspends requests[0] on this thread, and
  // returns once every suspend has returned; errnos[i] is 0 or the suspend's errno.
  void SuspendAll(int* errnos);
  // Ends the threads (also those never released).
  void Join();

 private:
  void Run(int index);

  int fd_ = -1;
  int n_ = 0;
  struct dm_ioctl* const* requests_ = nullptr;
  int errnos_[kMaxSuspendCrew] = {};
  std::atomic<int> go_{0};     // 1: suspend, 2: leave without suspending
  std::atomic<int> ready_{0};  // threads parked (their stacks locked)
  std::atomic<int> done_{0};   // suspends returned
  std::thread threads_[kMaxSuspendCrew];
  int started_ = 0;
};

}  // namespace dmsnap
