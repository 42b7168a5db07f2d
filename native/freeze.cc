#include "freeze.h"

#include <errno.h>
#include <linux/dm-ioctl.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <mutex>

namespace dmsnap {

namespace {

// Several freezes may overlap (other origins, worker threads): the memory lock is the
// process's, taken by the first and dropped by the last.
std::mutex lock_mutex;
int lock_holders = 0;
bool lock_ours = false;

// Memory the process locked itself (VmLck in /proc/self/status): then dmsnap neither
// locks nor unlocks, so that munlockall never undoes the application's own lock.
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

void LockMemory(FreezeOutcome& outcome) {
  std::lock_guard<std::mutex> guard(lock_mutex);
  if (lock_holders > 0) {
    outcome.memory = lock_ours ? MemoryLock::kLocked : MemoryLock::kAlreadyLocked;
    lock_holders++;
    return;
  }
  if (ProcessHoldsLockedMemory()) {
    outcome.memory = MemoryLock::kAlreadyLocked;
    lock_ours = false;
  } else if (::mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) == 0) {
    // MCL_ONFAULT (Linux 4.4): resident pages stay, the others are locked when touched;
    // nothing is read in now.
    outcome.memory = MemoryLock::kLocked;
    lock_ours = true;
  } else {
    outcome.memory = MemoryLock::kFailed;
    outcome.lock_errno = errno;
    lock_ours = false;
  }
  lock_holders++;
}

void UnlockMemory() {
  std::lock_guard<std::mutex> guard(lock_mutex);
  if (--lock_holders == 0 && lock_ours) {
    ::munlockall();
    lock_ours = false;
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

void Critical(int fd, const FreezePlan& plan, Requests& r, FreezeOutcome& outcome) {
  auto seam = [&](int step) {
    if (plan.seam_step != step) return false;
    if (plan.seam_action == SeamAction::kKill) ::kill(::getpid(), SIGKILL);
    return plan.seam_action == SeamAction::kFail;
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
  if (plan.clear_on_failure) outcome.recovery_clear = ::ioctl(fd, DM_TABLE_CLEAR, &r.clear) < 0 ? errno : 0;
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

  LockMemory(outcome);
  Critical(control.fd(), plan, r, outcome);
  UnlockMemory();

  if (outcome.snapshot_resumed) outcome.snapshot_info = ReadRequestInfo(&r.resume_snapshot.header);
  if (outcome.origin_resumed) {
    outcome.origin_info = ReadRequestInfo(outcome.failed_step < 0 ? &r.resume_origin.header : &r.recover.header);
  }
  return outcome;
}

}  // namespace dmsnap
