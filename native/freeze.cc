#include "freeze.h"

#include "freeze_suspend.h"

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

// A part of the caller's frame the critical section uses (its requests, its progress).
struct FrameRange {
  const void* start;
  size_t length;
};

void LockMemory(FreezeOutcome& outcome, StackLock& stack, std::initializer_list<FrameRange> frame) {
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
  // The caller's frame (its requests and progress) and the stack below it, which the
  // critical section grows into.
  const uintptr_t page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  uintptr_t low = reinterpret_cast<uintptr_t>(&stack), high = low + sizeof(stack);
  for (const FrameRange& range : frame) {
    const uintptr_t start = reinterpret_cast<uintptr_t>(range.start);
    if (start < low) low = start;
    if (start + range.length > high) high = start + range.length;
  }
  low &= ~(page - 1);
  high = (high + page - 1) & ~(page - 1);
  stack.start = low - kStackWindow;
  stack.length = kStackWindow + (high - low);
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

// The requests of the critical section, built before it on the freeze thread's stack.
struct Requests {
  Request suspend[kMaxFreezeMembers], resume_snapshot[kMaxFreezeMembers], resume_origin[kMaxFreezeMembers],
      clear[kMaxFreezeMembers], recover[kMaxFreezeMembers];
};

// What the critical section records, on the stack too; copied into the outcome afterwards.
struct Progress {
  int failed_step = -1, failed_member = -1, failed_errno = 0;
  bool suspended[kMaxFreezeMembers] = {};
  bool snapshot_resumed[kMaxFreezeMembers] = {};
  bool origin_resumed[kMaxFreezeMembers] = {};
  int recovery_clear[kMaxFreezeMembers];
  int recovery_resume[kMaxFreezeMembers];
  double freeze_ms = 0;
};

struct Seam {
  int step, member;
  SeamAction action;
};

// The critical section: only ioctls, clock reads and (for the test seams) kill; no
// allocation, no lock, no heap: nothing that could wait for a suspended device.
void Critical(int fd, int n, const bool* clear_on_failure, Seam seam_at, SuspendCrew* crew, Requests& r, Progress& p) {
  auto seam = [&](int step, int member) {
    if (seam_at.step != step || seam_at.member != member) return false;
    if (seam_at.action == SeamAction::kKill) ::kill(::getpid(), SIGKILL);
    return seam_at.action == SeamAction::kFail;
  };
  auto fail = [&](int step, int member, int errnum) {
    p.failed_step = step;
    p.failed_member = member;
    p.failed_errno = errnum;
  };
  for (int i = 0; i < n; i++) p.recovery_clear[i] = p.recovery_resume[i] = -1;
  const double started = Now();
  bool failed = false;
  // Every origin suspended: at once by the crew, or in order without one (the kernel
  // undoes a suspend that fails: that origin runs as it did).
  if (crew) {
    int errnos[kMaxFreezeMembers];
    crew->SuspendAll(errnos);
    for (int i = 0; i < n; i++) {
      p.suspended[i] = errnos[i] == 0;
      if (!failed && errnos[i] != 0) fail(kSuspendOrigin, i, errnos[i]), failed = true;
    }
    for (int i = 0; i < n && !failed; i++) {
      if (seam(kSuspendOrigin, i)) fail(kSuspendOrigin, i, 0), failed = true;
    }
  }
  for (int i = 0; i < n && !failed && !crew; i++) {
    if (::ioctl(fd, DM_DEV_SUSPEND, &r.suspend[i]) < 0) {
      fail(kSuspendOrigin, i, errno);
      failed = true;
    } else {
      p.suspended[i] = true;
      if (seam(kSuspendOrigin, i)) fail(kSuspendOrigin, i, 0), failed = true;
    }
  }
  for (int i = 0; i < n && !failed; i++) {
    if (::ioctl(fd, DM_DEV_SUSPEND, &r.resume_snapshot[i]) < 0) {
      fail(kResumeSnapshot, i, errno);
      failed = true;
    } else {
      p.snapshot_resumed[i] = true;
      if (seam(kResumeSnapshot, i)) fail(kResumeSnapshot, i, 0), failed = true;
    }
  }
  for (int i = 0; i < n && !failed; i++) {
    if (::ioctl(fd, DM_DEV_SUSPEND, &r.resume_origin[i]) < 0) {
      fail(kResumeOrigin, i, errno);
      failed = true;
    } else {
      p.origin_resumed[i] = true;
    }
  }
  // Never leave an origin suspended: drop its new table, resume the previous one.
  for (int i = 0; failed && i < n; i++) {
    if (!p.suspended[i] || p.origin_resumed[i]) continue;
    if (clear_on_failure[i]) p.recovery_clear[i] = ::ioctl(fd, DM_TABLE_CLEAR, &r.clear[i]) < 0 ? errno : 0;
    p.recovery_resume[i] = ::ioctl(fd, DM_DEV_SUSPEND, &r.recover[i]) < 0 ? errno : 0;
    p.origin_resumed[i] = p.recovery_resume[i] == 0;
  }
  p.freeze_ms = Now() - started;
}

}  // namespace

FreezeOutcome RunFreeze(const DmControl& control, const FreezePlan& plan) {
  FreezeOutcome outcome;
  const int n = static_cast<int>(plan.members.size());
  if (n < 1 || n > kMaxFreezeMembers) {
    outcome.failed_step = kSuspendOrigin;
    outcome.failed_member = 0;
    outcome.failed_errno = EINVAL;
    return outcome;
  }
  Requests r;
  Progress p;
  bool clear_on_failure[kMaxFreezeMembers] = {};
  for (int i = 0; i < n; i++) {
    const FreezeMember& m = plan.members[i];
    const uint32_t origin_resume = m.origin_resume_flags & ~static_cast<uint32_t>(DM_SUSPEND_FLAG);
    Prepare(r.suspend[i], m.origin, m.origin_suspend_flags | DM_SUSPEND_FLAG, 0);
    Prepare(r.resume_snapshot[i], m.snapshot, m.snapshot_resume_flags & ~static_cast<uint32_t>(DM_SUSPEND_FLAG), m.snapshot_event_nr);
    Prepare(r.resume_origin[i], m.origin, origin_resume, m.origin_event_nr);
    Prepare(r.clear[i], m.origin, 0, 0);
    Prepare(r.recover[i], m.origin, origin_resume, m.origin_event_nr);
    clear_on_failure[i] = m.clear_on_failure;
  }

  // A group's origins are suspended at once, by a crew of threads started now (outside the
  // freeze: starting a thread allocates).
  struct dm_ioctl* suspends[kMaxFreezeMembers];
  for (int i = 0; i < n; i++) suspends[i] = &r.suspend[i].header;
  SuspendCrew crew;
  const bool together = n > 1 && crew.Start(control.fd(), suspends, n);

  StackLock stack;
  LockMemory(outcome, stack, {{&r, sizeof(r)}, {&p, sizeof(p)}, {clear_on_failure, sizeof(clear_on_failure)}, {&crew, sizeof(crew)}});
  Critical(control.fd(), n, clear_on_failure, Seam{plan.seam_step, plan.seam_member, plan.seam_action}, together ? &crew : nullptr, r, p);
  UnlockMemory(stack);
  crew.Join();

  outcome.failed_step = p.failed_step;
  outcome.failed_member = p.failed_member;
  outcome.failed_errno = p.failed_errno;
  outcome.injected = p.failed_step >= 0 && p.failed_errno == 0;
  outcome.freeze_ms = p.freeze_ms;
  outcome.members.resize(n);
  for (int i = 0; i < n; i++) {
    MemberOutcome& m = outcome.members[i];
    m.recovery_clear = p.recovery_clear[i];
    m.recovery_resume = p.recovery_resume[i];
    m.snapshot_resumed = p.snapshot_resumed[i];
    if (m.snapshot_resumed) m.snapshot_info = ReadRequestInfo(&r.resume_snapshot[i].header);
    m.origin_resumed = p.origin_resumed[i];
    if (m.origin_resumed) m.origin_info = ReadRequestInfo(m.recovery_resume < 0 ? &r.resume_origin[i].header : &r.recover[i].header);
  }
  return outcome;
}

}  // namespace dmsnap
