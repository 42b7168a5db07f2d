#include "freeze.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <linux/dm-ioctl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace dmsnap {

namespace {

// What the freeze thread runs on while the origin is suspended is locked in memory: the
// addon's and libc's mappings (shared by every freeze: locked by the first, unlocked by
// the last) and a window of the thread's own stack. Only this thread must make progress
// for the origin to be resumed, and locking the whole process (mlockall) would make the
// kernel unlock every resident page when the process dies, delaying the guardian.
std::mutex lock_mutex;
int lock_holders = 0;
bool shared_locked = false;
int shared_failed_errno = 0;
std::vector<std::pair<uintptr_t, size_t>> shared_ranges;

constexpr size_t kStackWindow = 64 * 1024;

// Memory the process locked itself (VmLck in /proc/self/status): then dmsnap neither
// locks nor unlocks, so that munlock never undoes the application's own lock.
bool ProcessHoldsLockedMemory() {
  FILE* status = std::fopen("/proc/self/status", "re");
  if (!status) return false;
  char line[256];
  unsigned long kb = 0;
  while (std::fgets(line, sizeof(line), status)) {
    if (std::sscanf(line, "VmLck: %lu kB", &kb) == 1) break;
  }
  std::fclose(status);
  return kb > 0;
}

// The mappings of the files that hold `addresses` (from /proc/self/maps).
std::vector<std::pair<uintptr_t, size_t>> MappingsOf(std::initializer_list<const void*> addresses) {
  std::vector<std::string> files;
  for (const void* address : addresses) {
    Dl_info info;
    if (!::dladdr(address, &info) || !info.dli_fname) continue;
    char resolved[PATH_MAX];
    files.emplace_back(::realpath(info.dli_fname, resolved) ? resolved : info.dli_fname);
  }
  std::vector<std::pair<uintptr_t, size_t>> ranges;
  FILE* maps = std::fopen("/proc/self/maps", "re");
  if (!maps) return ranges;
  char line[4096];
  while (std::fgets(line, sizeof(line), maps)) {
    unsigned long start = 0, end = 0;
    int path_at = 0;
    if (std::sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &start, &end, &path_at) < 2 || path_at == 0) continue;
    std::string path(line + path_at);
    while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
    for (const std::string& file : files) {
      if (path == file) ranges.emplace_back(start, end - start);
    }
  }
  std::fclose(maps);
  return ranges;
}

struct StackLock {
  uintptr_t start = 0;
  size_t length = 0;
};

void LockMemory(FreezeOutcome& outcome, StackLock& stack) {
  std::lock_guard<std::mutex> guard(lock_mutex);
  if (lock_holders == 0) {
    shared_locked = false;
    shared_failed_errno = 0;
    if (ProcessHoldsLockedMemory()) {
      outcome.memory = MemoryLock::kAlreadyLocked;
      lock_holders++;
      return;
    }
    shared_ranges = MappingsOf({reinterpret_cast<const void*>(&RunFreeze), reinterpret_cast<const void*>(&::ioctl)});
    shared_locked = true;
    for (const auto& range : shared_ranges) {
      if (::mlock(reinterpret_cast<void*>(range.first), range.second) != 0 && shared_failed_errno == 0) shared_failed_errno = errno;
    }
  }
  lock_holders++;
  if (!shared_locked) {
    outcome.memory = MemoryLock::kAlreadyLocked;
    return;
  }
  // The stack below this frame, which the critical section grows into.
  const long page = ::sysconf(_SC_PAGESIZE);
  uintptr_t here = reinterpret_cast<uintptr_t>(&stack) & ~static_cast<uintptr_t>(page - 1);
  stack.start = here - kStackWindow;
  stack.length = kStackWindow + static_cast<size_t>(page);
  int errnum = shared_failed_errno;
  if (::mlock(reinterpret_cast<void*>(stack.start), stack.length) != 0) {
    if (errnum == 0) errnum = errno;
    stack.length = 0;
  }
  outcome.memory = errnum == 0 && !shared_ranges.empty() ? MemoryLock::kLocked : MemoryLock::kFailed;
  if (outcome.memory == MemoryLock::kFailed) outcome.lock_errno = errnum != 0 ? errnum : ENOENT;
}

void UnlockMemory(const StackLock& stack) {
  std::lock_guard<std::mutex> guard(lock_mutex);
  if (stack.length) ::munlock(reinterpret_cast<void*>(stack.start), stack.length);
  if (--lock_holders == 0 && shared_locked) {
    for (const auto& range : shared_ranges) ::munlock(reinterpret_cast<void*>(range.first), range.second);
    shared_locked = false;
  }
}

// A DM_DEV_SUSPEND or DM_TABLE_CLEAR request with no payload, filled in ahead of time.
struct alignas(8) Request {
  struct dm_ioctl header;
};

void Prepare(Request& request, const DeviceRef& ref, uint32_t flags, uint32_t event_nr) {
  std::memset(&request, 0, sizeof(request));
  request.header.version[0] = DM_VERSION_MAJOR;
  request.header.data_size = sizeof(request);
  request.header.data_start = sizeof(request);
  request.header.flags = flags;
  request.header.event_nr = event_nr;
  SetRequestRef(&request.header, ref);
}

double Now() {
  struct timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// The critical section. Only ioctls, clock reads and (for the test seams) kill: no
// allocation, no lock, nothing that could wait for the suspended device.
struct Requests {
  Request suspend, resume_snapshot, resume_origin, clear, recover;
};

// Reads nothing from the heap: the caller copies the plan's scalars onto this thread's stack.
void Critical(int fd, int seam_step, SeamAction seam_action, bool clear_on_failure, Requests& r, FreezeOutcome& outcome) {
  auto seam = [&](int step) {
    if (seam_step != step) return false;
    if (seam_action == SeamAction::kKill) ::kill(::getpid(), SIGKILL);
    return seam_action == SeamAction::kFail;
  };
  auto fail = [&](int step, int errnum) {
    outcome.failed_step = step;
    outcome.failed_errno = errnum;
    outcome.injected = errnum == 0;
  };
  const double started = Now();
  if (::ioctl(fd, DM_DEV_SUSPEND, &r.suspend) < 0) {
    // The kernel undoes a suspend that fails: the origin runs as it did.
    fail(kSuspendOrigin, errno);
    outcome.freeze_ms = Now() - started;
    return;
  }
  if (seam(kSuspendOrigin)) {
    fail(kSuspendOrigin, 0);
  } else if (::ioctl(fd, DM_DEV_SUSPEND, &r.resume_snapshot) < 0) {
    fail(kResumeSnapshot, errno);
  } else {
    outcome.snapshot_resumed = true;
    if (seam(kResumeSnapshot)) {
      fail(kResumeSnapshot, 0);
    } else if (::ioctl(fd, DM_DEV_SUSPEND, &r.resume_origin) < 0) {
      fail(kResumeOrigin, errno);
    } else {
      outcome.origin_resumed = true;
      outcome.freeze_ms = Now() - started;
      return;
    }
  }
  // Never leave the origin suspended: drop the new table, resume the previous one.
  if (clear_on_failure) outcome.recovery_clear = ::ioctl(fd, DM_TABLE_CLEAR, &r.clear) < 0 ? errno : 0;
  outcome.recovery_resume = ::ioctl(fd, DM_DEV_SUSPEND, &r.recover) < 0 ? errno : 0;
  outcome.origin_resumed = outcome.recovery_resume == 0;
  outcome.freeze_ms = Now() - started;
}

}  // namespace

FreezeOutcome RunFreeze(const DmControl& control, const FreezePlan& plan) {
  FreezeOutcome outcome;
  Requests r;
  Prepare(r.suspend, plan.origin, plan.origin_suspend_flags | DM_SUSPEND_FLAG, 0);
  Prepare(r.resume_snapshot, plan.snapshot, plan.snapshot_resume_flags & ~static_cast<uint32_t>(DM_SUSPEND_FLAG),
          plan.snapshot_event_nr);
  const uint32_t origin_resume = plan.origin_resume_flags & ~static_cast<uint32_t>(DM_SUSPEND_FLAG);
  Prepare(r.resume_origin, plan.origin, origin_resume, plan.origin_event_nr);
  Prepare(r.clear, plan.origin, 0, 0);
  Prepare(r.recover, plan.origin, origin_resume, plan.origin_event_nr);

  StackLock stack;
  LockMemory(outcome, stack);
  Critical(control.fd(), plan.seam_step, plan.seam_action, plan.clear_on_failure, r, outcome);
  UnlockMemory(stack);

  if (outcome.snapshot_resumed) outcome.snapshot_info = ReadRequestInfo(&r.resume_snapshot.header);
  if (outcome.origin_resumed) {
    outcome.origin_info = ReadRequestInfo(outcome.failed_step < 0 ? &r.resume_origin.header : &r.recover.header);
  }
  return outcome;
}

}  // namespace dmsnap
