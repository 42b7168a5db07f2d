// N-API glue for the freeze (freeze.h): control.freeze(members, options), each member
// [originRef, originSuspendFlags, snapshotRef, snapshotResumeFlags, snapshotEventNr,
// originResumeFlags, originEventNr, clearOnFailure], runs it on a std::thread of its own, never on the libuv thread pool (which
// the application's I/O on the frozen filesystem may fill), and settles the promise on
// the main thread through a thread-safe function. An environment cleanup hook,
// registered after the thread-safe function so that it runs first, joins the thread
// when a worker thread (or the process) shuts down during a freeze: the freeze cannot
// be cut short (the origin would stay suspended), so it is waited for.
#include <memory>
#include <string>
#include <system_error>
#include <thread>

#include "addon.h"
#include "async_work.h"
#include "control_binding.h"
#include "freeze.h"

namespace dmsnap {

namespace {

const char* const kStepNames[kFreezeSteps] = {"suspend-origin", "resume-snapshot", "resume-origin"};

struct FreezeJob {
  std::shared_ptr<const DmControl> control;
  FreezePlan plan;
  FreezeOutcome outcome;
  std::thread thread;
  bool torn_down = false;  // main thread only: the environment went away first
};

void CleanupFreezeJob(void* arg) {
  auto* holder = static_cast<std::shared_ptr<FreezeJob>*>(arg);
  std::shared_ptr<FreezeJob> job = *holder;
  delete holder;
  job->torn_down = true;
  if (job->thread.joinable()) job->thread.join();
}

uint32_t Uint32At(Napi::Env env, Napi::Array tuple, uint32_t index, const char* name) {
  Napi::Value value = tuple.Get(index);
  double number = value.IsNumber() ? value.As<Napi::Number>().DoubleValue() : -1;
  if (number < 0 || number > 4294967295.0 || number != static_cast<double>(static_cast<uint32_t>(number))) {
    throw Napi::TypeError::New(env, std::string(name) + " must be an unsigned 32-bit integer");
  }
  return static_cast<uint32_t>(number);
}

// members: [[originRef, originSuspendFlags, snapshotRef, snapshotResumeFlags,
// snapshotEventNr, originResumeFlags, originEventNr, clearOnFailure], ...]
void ReadMembers(const Napi::CallbackInfo& info, size_t index, FreezePlan& plan) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsArray()) throw Napi::TypeError::New(env, "members must be an array");
  Napi::Array members = info[index].As<Napi::Array>();
  if (members.Length() < 1 || members.Length() > static_cast<uint32_t>(kMaxFreezeMembers)) {
    throw Napi::RangeError::New(env, "a freeze takes 1 to " + std::to_string(kMaxFreezeMembers) + " members");
  }
  for (uint32_t i = 0; i < members.Length(); i++) {
    Napi::Value entry = members.Get(i);
    if (!entry.IsArray() || entry.As<Napi::Array>().Length() != 8) throw Napi::TypeError::New(env, "a freeze member is an array of 8");
    Napi::Array tuple = entry.As<Napi::Array>();
    FreezeMember member;
    member.origin = RefValue(env, tuple.Get(0u));
    member.origin_suspend_flags = Uint32At(env, tuple, 1, "originSuspendFlags");
    member.snapshot = RefValue(env, tuple.Get(2u));
    member.snapshot_resume_flags = Uint32At(env, tuple, 3, "snapshotResumeFlags");
    member.snapshot_event_nr = Uint32At(env, tuple, 4, "snapshotEventNr");
    member.origin_resume_flags = Uint32At(env, tuple, 5, "originResumeFlags");
    member.origin_event_nr = Uint32At(env, tuple, 6, "originEventNr");
    member.clear_on_failure = tuple.Get(7u).ToBoolean().Value();
    plan.members.push_back(member);
  }
}

// options: { seamStep?: 0 | 1, seamMember?: number, seamAction?: 'fail' | 'kill' }
void ReadOptions(const Napi::CallbackInfo& info, size_t index, FreezePlan& plan) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object options = info[index].As<Napi::Object>();
  Napi::Value step = options.Get("seamStep");
  if (step.IsUndefined()) return;
  Napi::Value action = options.Get("seamAction");
  Napi::Value member = options.Get("seamMember");
  if (!step.IsNumber() || !action.IsString() || !(member.IsUndefined() || member.IsNumber())) {
    throw Napi::TypeError::New(env, "seamStep and seamMember need numbers and seamAction a string");
  }
  plan.seam_step = step.As<Napi::Number>().Int32Value();
  plan.seam_member = member.IsNumber() ? member.As<Napi::Number>().Int32Value() : 0;
  std::string what = action.As<Napi::String>().Utf8Value();
  if ((plan.seam_step != kSuspendOrigin && plan.seam_step != kResumeSnapshot) || (what != "fail" && what != "kill") ||
      plan.seam_member < 0 || plan.seam_member >= static_cast<int>(plan.members.size())) {
    throw Napi::TypeError::New(env, "a freeze seam is step 0 or 1 of a member, action 'fail' or 'kill'");
  }
  plan.seam_action = what == "kill" ? SeamAction::kKill : SeamAction::kFail;
}

Napi::Object MemberToJs(Napi::Env env, const MemberOutcome& m) {
  Napi::Object out = Napi::Object::New(env);
  if (m.snapshot_resumed) out.Set("snapshot", InfoToJs(env, m.snapshot_info));
  if (m.origin_resumed) out.Set("origin", InfoToJs(env, m.origin_info));
  if (m.recovery_resume >= 0) {
    Napi::Object recovery = Napi::Object::New(env);
    recovery.Set("cleared", Napi::Boolean::New(env, m.recovery_clear == 0));
    if (m.recovery_clear > 0) recovery.Set("clearErrno", Napi::Number::New(env, m.recovery_clear));
    recovery.Set("resumed", Napi::Boolean::New(env, m.recovery_resume == 0));
    if (m.recovery_resume > 0) recovery.Set("resumeErrno", Napi::Number::New(env, m.recovery_resume));
    out.Set("recovery", recovery);
  }
  return out;
}

Napi::Object OutcomeToJs(Napi::Env env, const FreezeJob& job) {
  const FreezeOutcome& o = job.outcome;
  Napi::Object out = Napi::Object::New(env);
  out.Set("freezeMs", Napi::Number::New(env, o.freeze_ms));
  const char* memory = o.memory == MemoryLock::kLocked ? "locked" : o.memory == MemoryLock::kAlreadyLocked ? "already-locked" : "failed";
  out.Set("memoryLock", Napi::String::New(env, memory));
  if (o.memory == MemoryLock::kFailed) out.Set("lockErrno", Napi::Number::New(env, o.lock_errno));
  Napi::Array members = Napi::Array::New(env, o.members.size());
  for (uint32_t i = 0; i < o.members.size(); i++) members.Set(i, MemberToJs(env, o.members[i]));
  out.Set("members", members);
  if (o.failed_step >= 0) {
    Napi::Object failure = Napi::Object::New(env);
    failure.Set("step", Napi::String::New(env, kStepNames[o.failed_step]));
    failure.Set("member", Napi::Number::New(env, o.failed_member));
    failure.Set("errno", Napi::Number::New(env, o.failed_errno));
    failure.Set("injected", Napi::Boolean::New(env, o.injected));
    failure.Set("ioctl", Napi::String::New(env, "DM_DEV_SUSPEND"));
    failure.Set("path", Napi::String::New(env, job.control->path()));
    const FreezeMember& member = job.plan.members[o.failed_member];
    const DeviceRef& device = o.failed_step == kResumeSnapshot ? member.snapshot : member.origin;
    failure.Set("device", Napi::String::New(env, device.Describe()));
    out.Set("failure", failure);
  }
  return out;
}

}  // namespace

Napi::Value StartFreeze(const Napi::CallbackInfo& info, std::shared_ptr<const DmControl> control) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<FreezeJob>();
  job->control = std::move(control);
  FreezePlan& plan = job->plan;
  ReadMembers(info, 0, plan);
  ReadOptions(info, 1, plan);

  auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
  Napi::ThreadSafeFunction done =
      Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "dmsnap.freeze", 0, 1);
  auto* hook_arg = new std::shared_ptr<FreezeJob>(job);
  napi_add_env_cleanup_hook(env, CleanupFreezeJob, hook_arg);
  try {
    job->thread = std::thread([job, deferred, done, hook_arg]() mutable {
      job->outcome = RunFreeze(*job->control, job->plan);
      // Runs on the main thread, unless the environment is shutting down first (then
      // the cleanup hook has joined this thread and the call is dropped).
      done.BlockingCall([job, deferred, hook_arg](Napi::Env env, Napi::Function) {
        if (job->torn_down) return;
        napi_remove_env_cleanup_hook(env, CleanupFreezeJob, hook_arg);
        delete hook_arg;
        if (job->thread.joinable()) job->thread.join();
        // A worker thread being terminated refuses every call into JavaScript: then
        // there is nobody left to tell, and nothing may be thrown from here.
        try {
          deferred->Resolve(OutcomeToJs(env, *job));
        } catch (const Napi::Error&) {
        }
      });
      done.Release();
    });
  } catch (const std::system_error& e) {
    napi_remove_env_cleanup_hook(env, CleanupFreezeJob, hook_arg);
    delete hook_arg;
    done.Release();
    throw Napi::Error::New(env, std::string("cannot start the freeze thread: ") + e.what());
  }
  return deferred->Promise();
}

}  // namespace dmsnap
