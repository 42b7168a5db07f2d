// The freeze of one snapshot, or of a group of snapshots of several origins at one instant,
// as one native sequence on a thread of its own: suspend every origin in order (flush,
// freeze its filesystem), resume every snapshot, resume every origin with its new table.
// Nothing in it waits for the libuv thread pool; what the thread runs on (the addon's and
// libc's mappings, its stack) is locked in memory while an origin is suspended, so a page
// fault cannot wait for a suspended device; and the requests are built before the first
// suspend, on the thread's stack, so that the critical section only makes ioctls.
// Plain C++, no N-API types: freeze_binding.cc runs it and reports the outcome.
#pragma once

#include <cstdint>
#include <vector>

#include "dm_control.h"

namespace dmsnap {

enum FreezeStep : int { kSuspendOrigin = 0, kResumeSnapshot = 1, kResumeOrigin = 2, kFreezeSteps = 3 };

// What the test seams do right after a step (only ever asked for by lib/ when
// DMSNAP_TEST_SEAMS=1): nothing, pretend the next step failed, or SIGKILL the process.
enum class SeamAction { kNone, kFail, kKill };

// The most origins one freeze takes: the requests live on the freeze thread's locked stack.
constexpr int kMaxFreezeMembers = 16;

// One origin and its new snapshot.
struct FreezeMember {
  DeviceRef origin;
  uint32_t origin_suspend_flags = 0;
  DeviceRef snapshot;
  uint32_t snapshot_resume_flags = 0;
  uint32_t snapshot_event_nr = 0;  // the udev cookie of the snapshot's resume
  uint32_t origin_resume_flags = 0;
  uint32_t origin_event_nr = 0;  // the udev cookie of the origin's resume (also on recovery)
  // The origin's new table waits in its inactive slot: a failed freeze drops it
  // (DM_TABLE_CLEAR) before resuming, so the previous table comes back.
  bool clear_on_failure = false;
};

struct FreezePlan {
  std::vector<FreezeMember> members;  // 1 to kMaxFreezeMembers, suspended in this order
  int seam_step = -1;
  int seam_member = 0;  // the seam acts right after this member's step
  SeamAction seam_action = SeamAction::kNone;
};

// The memory lock: taken, or why not.
enum class MemoryLock { kLocked, kAlreadyLocked, kFailed };

// What became of one member.
struct MemberOutcome {
  // Recovery after a failure with this origin suspended: -1 not tried, 0 done, else errno.
  int recovery_clear = -1;
  int recovery_resume = -1;

  bool snapshot_resumed = false;
  DeviceInfo snapshot_info;
  // The origin's resume, by the last step or by the recovery.
  bool origin_resumed = false;
  DeviceInfo origin_info;
};

struct FreezeOutcome {
  MemoryLock memory = MemoryLock::kFailed;
  int lock_errno = 0;  // mlock's errno when memory is kFailed

  // The step that failed (-1: none), the member it failed on, its errno (0 when a test
  // seam made it fail).
  int failed_step = -1;
  int failed_member = -1;
  int failed_errno = 0;
  bool injected = false;

  std::vector<MemberOutcome> members;

  // From just before the first suspend to the end of the last origin's resume (or of the
  // recovery).
  double freeze_ms = 0;
};

// Runs the freeze. Never throws once an origin is suspended: every failure is reported
// in the outcome, after every origin suspended has been resumed where that was possible
// (an origin resumed with its new table before the failure stays so: its snapshot is
// live, and the caller removes it).
FreezeOutcome RunFreeze(const DmControl& control, const FreezePlan& plan);

}  // namespace dmsnap
