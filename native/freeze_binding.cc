// N-API glue for the freeze (freeze.h): control.freeze(originRef, originSuspendFlags,
// snapshotRef, snapshotResumeFlags, snapshotEventNr, originResumeFlags, originEventNr,
// options) runs it on a std::thread of its own, never on the libuv thread pool (which
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

// options: { clearOnFailure: boolean, seamStep?: 0 | 1, seamAction?: 'fail' | 'kill' }
void ReadOptions(const Napi::CallbackInfo& info, size_t index, FreezePlan& plan) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsObject()) throw Napi::TypeError::New(env, "options must be an object");
  Napi::Object options = info[index].As<Napi::Object>();
  plan.clear_on_failure = options.Get("clearOnFailure").ToBoolean().Value();
  Napi::Value step = options.Get("seamStep");
  if (step.IsUndefined()) return;
  Napi::Value action = options.Get("seamAction");
  if (!step.IsNumber() || !action.IsString()) throw Napi::TypeError::New(env, "seamStep needs a number and seamAction a string");
  plan.seam_step = step.As<Napi::Number>().Int32Value();
  std::string what = action.As<Napi::String>().Utf8Value();
  if ((plan.seam_step != kSuspendOrigin && plan.seam_step != kResumeSnapshot) || (what != "fail" && what != "kill")) {
    throw Napi::TypeError::New(env, "a freeze seam is step 0 or 1, action 'fail' or 'kill'");
  }
  plan.seam_action = what == "kill" ? SeamAction::kKill : SeamAction::kFail;
}

Napi::Object OutcomeToJs(Napi::Env env, const FreezeJob& job) {
  const FreezeOutcome& o = job.outcome;
  Napi::Object out = Napi::Object::New(env);
  out.Set("freezeMs", Napi::Number::New(env, o.freeze_ms));
  const char* memory = o.memory == MemoryLock::kLocked ? "locked" : o.memory == MemoryLock::kAlreadyLocked ? "already-locked" : "failed";
  out.Set("memoryLock", Napi::String::New(env, memory));
  if (o.memory == MemoryLock::kFailed) out.Set("lockErrno", Napi::Number::New(env, o.lock_errno));
  if (o.snapshot_resumed) out.Set("snapshot", InfoToJs(env, o.snapshot_info));
  if (o.origin_resumed) out.Set("origin", InfoToJs(env, o.origin_info));
  if (o.failed_step >= 0) {
    Napi::Object failure = Napi::Object::New(env);
    failure.Set("step", Napi::String::New(env, kStepNames[o.failed_step]));
    failure.Set("errno", Napi::Number::New(env, o.failed_errno));
    failure.Set("injected", Napi::Boolean::New(env, o.injected));
    failure.Set("ioctl", Napi::String::New(env, "DM_DEV_SUSPEND"));
    failure.Set("path", Napi::String::New(env, job.control->path()));
    const DeviceRef& device = o.failed_step == kResumeSnapshot ? job.plan.snapshot : job.plan.origin;
    failure.Set("device", Napi::String::New(env, device.Describe()));
    out.Set("failure", failure);
  }
  if (o.recovery_resume >= 0) {
    Napi::Object recovery = Napi::Object::New(env);
    recovery.Set("cleared", Napi::Boolean::New(env, o.recovery_clear == 0));
    if (o.recovery_clear > 0) recovery.Set("clearErrno", Napi::Number::New(env, o.recovery_clear));
    recovery.Set("resumed", Napi::Boolean::New(env, o.recovery_resume == 0));
    if (o.recovery_resume > 0) recovery.Set("resumeErrno", Napi::Number::New(env, o.recovery_resume));
    out.Set("recovery", recovery);
  }
  return out;
}

}  // namespace

Napi::Value StartFreeze(const Napi::CallbackInfo& info, std::shared_ptr<const DmControl> control) {
  Napi::Env env = info.Env();
  auto job = std::make_shared<FreezeJob>();
  job->control = std::move(control);
  FreezePlan& plan = job->plan;
  plan.origin = RefArg(info, 0);
  plan.origin_suspend_flags = Uint32Arg(info, 1, "originSuspendFlags");
  plan.snapshot = RefArg(info, 2);
  plan.snapshot_resume_flags = Uint32Arg(info, 3, "snapshotResumeFlags");
  plan.snapshot_event_nr = Uint32Arg(info, 4, "snapshotEventNr");
  plan.origin_resume_flags = Uint32Arg(info, 5, "originResumeFlags");
  plan.origin_event_nr = Uint32Arg(info, 6, "originEventNr");
  ReadOptions(info, 7, plan);

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
