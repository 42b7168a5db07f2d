#include "freeze_suspend.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <system_error>

namespace dmsnap {

namespace {

constexpr size_t kStackWindow = 64 * 1024;

void FutexWait(std::atomic<int>& word, int value) {
  ::syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAIT_PRIVATE, value, nullptr, nullptr, 0);
}

void FutexWake(std::atomic<int>& word) {
  ::syscall(SYS_futex, reinterpret_cast<int*>(&word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
}

}  // namespace

bool SuspendCrew::Start(int fd, struct dm_ioctl* const* requests, int n) {
  fd_ = fd;
  n_ = n < kMaxSuspendCrew ? n : kMaxSuspendCrew;
  requests_ = requests;
  try {
    for (int i = 1; i < n_; i++) {
      threads_[i] = std::thread(&SuspendCrew::Run, this, i);
      started_ = i;
    }
  } catch (const std::system_error&) {
    Join();
    return false;
  }
  // Every thread parked, its stack locked, before the freeze begins.
  for (int seen; (seen = ready_.load()) != n_ - 1;) FutexWait(ready_, seen);
  return true;
}

void SuspendCrew::Run(int index) {
  // The stack this thread runs on while an origin is suspended.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  const uintptr_t here = reinterpret_cast<uintptr_t>(&index) & ~(page - 1);
  void* window = reinterpret_cast<void*>(here - kStackWindow);
  const bool locked = ::mlock(window, kStackWindow + page) == 0;
  ready_.fetch_add(1);
  FutexWake(ready_);
  while (go_.load() == 0) FutexWait(go_, 0);
  if (go_.load() == 1) {
    errnos_[index] = ::ioctl(fd_, DM_DEV_SUSPEND, requests_[index]) < 0 ? errno : 0;
    done_.fetch_add(1);
    FutexWake(done_);
  }
  if (locked) ::munlock(window, kStackWindow + page);
}

void SuspendCrew::SuspendAll(int* errnos) {
  go_.store(1);
  FutexWake(go_);
  errnos[0] = ::ioctl(fd_, DM_DEV_SUSPEND, requests_[0]) < 0 ? errno : 0;
  for (int seen; (seen = done_.load()) != n_ - 1;) FutexWait(done_, seen);
  for (int i = 1; i < n_; i++) errnos[i] = errnos_[i];
}

void SuspendCrew::Join() {
  if (go_.load() == 0) {
    go_.store(2);
    FutexWake(go_);
  }
  for (int i = 1; i <= started_; i++) {
    if (threads_[i].joinable()) threads_[i].join();
  }
  started_ = 0;
}

}  // namespace dmsnap
