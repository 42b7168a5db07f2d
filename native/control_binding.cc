// N-API glue for the device-mapper control node (dm_control.h): a Control object per
// open descriptor. Pending calls share ownership of the descriptor, so close() never
// pulls it from under a call that is still running.
#include <linux/dm-ioctl.h>

#include <memory>
#include <set>
#include <thread>

#include "addon.h"
#include "async_work.h"
#include "control_binding.h"
#include "dm_control.h"
#include "event_poll.h"

namespace dmsnap {

using ControlPtr = std::shared_ptr<DmControl>;

DeviceRef RefArg(const Napi::CallbackInfo& info, size_t index) {
  if (info.Length() <= index) throw Napi::TypeError::New(info.Env(), "ref must be an object");
  return RefValue(info.Env(), info[index]);
}

DeviceRef RefValue(Napi::Env env, Napi::Value value) {
  if (!value.IsObject()) throw Napi::TypeError::New(env, "ref must be an object");
  Napi::Object object = value.As<Napi::Object>();
  DeviceRef ref;
  Napi::Value name = object.Get("name");
  Napi::Value uuid = object.Get("uuid");
  Napi::Value major = object.Get("major");
  Napi::Value minor = object.Get("minor");
  if (name.IsString()) ref.name = name.As<Napi::String>().Utf8Value();
  if (uuid.IsString()) ref.uuid = uuid.As<Napi::String>().Utf8Value();
  if (major.IsNumber() && minor.IsNumber()) {
    ref.has_dev = true;
    ref.major = major.As<Napi::Number>().Uint32Value();
    ref.minor = minor.As<Napi::Number>().Uint32Value();
  }
  if (ref.name.empty() && ref.uuid.empty() && !ref.has_dev) {
    throw Napi::TypeError::New(env, "ref needs a name, a uuid or major and minor");
  }
  return ref;
}

namespace {

std::vector<Target> TargetsArg(const Napi::CallbackInfo& info, size_t index) {
  Napi::Env env = info.Env();
  if (info.Length() <= index || !info[index].IsArray()) throw Napi::TypeError::New(env, "targets must be an array");
  Napi::Array array = info[index].As<Napi::Array>();
  std::vector<Target> targets;
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value item = array.Get(i);
    if (!item.IsObject()) throw Napi::TypeError::New(env, "each target must be an object");
    Napi::Object object = item.As<Napi::Object>();
    Napi::Value start = object.Get("start");
    Napi::Value length = object.Get("length");
    Napi::Value type = object.Get("type");
    Napi::Value params = object.Get("params");
    if (!start.IsNumber() || !length.IsNumber() || !type.IsString() || !params.IsString()) {
      throw Napi::TypeError::New(env, "a target needs numbers start and length and strings type and params");
    }
    Target target;
    target.start = static_cast<uint64_t>(start.As<Napi::Number>().DoubleValue());
    target.length = static_cast<uint64_t>(length.As<Napi::Number>().DoubleValue());
    target.type = type.As<Napi::String>().Utf8Value();
    target.params = params.As<Napi::String>().Utf8Value();
    targets.push_back(std::move(target));
  }
  return targets;
}

// A table to load, shared by the copies of the work that sends it; loaded with
// DM_SECURE_DATA_FLAG, its params are wiped once the last copy is gone.
struct HeldTargets {
  HeldTargets(std::vector<Target> t, bool s) : targets(std::move(t)), secure(s) {}
  HeldTargets(const HeldTargets&) = delete;
  HeldTargets& operator=(const HeldTargets&) = delete;
  ~HeldTargets() {
    if (secure) WipeParams(targets);
  }
  std::vector<Target> targets;
  bool secure;
};

}  // namespace

Napi::Object InfoToJs(Napi::Env env, const DeviceInfo& info) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("name", Napi::String::New(env, info.name));
  out.Set("uuid", Napi::String::New(env, info.uuid));
  out.Set("major", Napi::Number::New(env, info.major));
  out.Set("minor", Napi::Number::New(env, info.minor));
  out.Set("openCount", Napi::Number::New(env, info.open_count));
  out.Set("eventNr", Napi::Number::New(env, info.event_nr));
  out.Set("targetCount", Napi::Number::New(env, info.target_count));
  out.Set("flags", Napi::Number::New(env, info.flags));
  return out;
}

namespace {

Napi::Value InfoResult(Napi::Env env, DeviceInfo& info) { return InfoToJs(env, info); }

Napi::Array TargetsToJs(Napi::Env env, const std::vector<Target>& targets) {
  Napi::Array out = Napi::Array::New(env, targets.size());
  for (size_t i = 0; i < targets.size(); i++) {
    Napi::Object target = Napi::Object::New(env);
    target.Set("start", SafeNumber(env, targets[i].start));
    target.Set("length", SafeNumber(env, targets[i].length));
    target.Set("type", Napi::String::New(env, targets[i].type));
    target.Set("params", Napi::String::New(env, targets[i].params));
    out.Set(static_cast<uint32_t>(i), target);
  }
  return out;
}

class ControlWrap : public Napi::ObjectWrap<ControlWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Control",
                       {
                           InstanceAccessor<&ControlWrap::GetPath>("path"),
                           InstanceAccessor<&ControlWrap::GetClosed>("closed"),
                           InstanceMethod<&ControlWrap::Version>("version"),
                           InstanceMethod<&ControlWrap::ListDevices>("listDevices"),
                           InstanceMethod<&ControlWrap::ListVersions>("listVersions"),
                           InstanceMethod<&ControlWrap::Create>("create"),
                           InstanceMethod<&ControlWrap::Remove>("remove"),
                           InstanceMethod<&ControlWrap::Rename>("rename"),
                           InstanceMethod<&ControlWrap::Suspend>("suspend"),
                           InstanceMethod<&ControlWrap::Resume>("resume"),
                           InstanceMethod<&ControlWrap::Freeze>("freeze"),
                           InstanceMethod<&ControlWrap::Info>("info"),
                           InstanceMethod<&ControlWrap::WaitEvent>("waitEvent"),
                           InstanceMethod<&ControlWrap::Load>("load"),
                           InstanceMethod<&ControlWrap::Clear>("clear"),
                           InstanceMethod<&ControlWrap::Deps>("deps"),
                           InstanceMethod<&ControlWrap::TableStatus>("tableStatus"),
                           InstanceMethod<&ControlWrap::Message>("message"),
                           InstanceMethod<&ControlWrap::ArmPoll>("armPoll"),
                           InstanceMethod<&ControlWrap::PollReadable>("pollReadable"),
                           InstanceMethod<&ControlWrap::CancelPoll>("cancelPoll"),
                           InstanceMethod<&ControlWrap::Close>("close"),
                       });
  }

  // Only openControl() constructs these, passing the opened control in an External.
  explicit ControlWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ControlWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "Control cannot be constructed directly; use openControl()");
    }
    control_ = *info[0].As<Napi::External<ControlPtr>>().Data();
    path_ = control_->path();
  }

 private:
  ControlPtr Get(Napi::Env env) {
    if (!control_) throw Napi::Error::New(env, "the device-mapper control node " + path_ + " is closed");
    return control_;
  }

  // Queues `work` (a call on the control) and converts its DeviceInfo result.
  template <typename Work>
  Napi::Value RunInfo(const Napi::CallbackInfo& info, const char* name, Work work) {
    ControlPtr control = Get(info.Env());
    return PromiseWork<DeviceInfo>::Run(info.Env(), name, [control, work] { return work(*control); }, InfoResult);
  }

  Napi::Value GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !control_); }

  Napi::Value Version(const Napi::CallbackInfo& info) {
    ControlPtr control = Get(info.Env());
    return PromiseWork<DmVersion>::Run(
        info.Env(), "dmsnap.version", [control] { return control->Version(); },
        [](Napi::Env env, DmVersion& v) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, 3);
          out.Set(0u, Napi::Number::New(env, v.major));
          out.Set(1u, Napi::Number::New(env, v.minor));
          out.Set(2u, Napi::Number::New(env, v.patch));
          return out;
        });
  }

  Napi::Value ListDevices(const Napi::CallbackInfo& info) {
    ControlPtr control = Get(info.Env());
    return PromiseWork<std::vector<ListEntry>>::Run(
        info.Env(), "dmsnap.listDevices", [control] { return control->ListDevices(); },
        [](Napi::Env env, std::vector<ListEntry>& entries) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, entries.size());
          for (size_t i = 0; i < entries.size(); i++) {
            Napi::Object entry = Napi::Object::New(env);
            entry.Set("name", Napi::String::New(env, entries[i].name));
            entry.Set("major", Napi::Number::New(env, entries[i].major));
            entry.Set("minor", Napi::Number::New(env, entries[i].minor));
            if (entries[i].event_nr) entry.Set("eventNr", Napi::Number::New(env, *entries[i].event_nr));
            // uuid: the string, null when the device has none, absent when the kernel does not say.
            if (entries[i].uuid_known) {
              entry.Set("uuid", entries[i].uuid.empty() ? env.Null() : Napi::String::New(env, entries[i].uuid));
            }
            out.Set(static_cast<uint32_t>(i), entry);
          }
          return out;
        });
  }

  Napi::Value ListVersions(const Napi::CallbackInfo& info) {
    ControlPtr control = Get(info.Env());
    return PromiseWork<std::vector<TargetVersion>>::Run(
        info.Env(), "dmsnap.listVersions", [control] { return control->ListVersions(); },
        [](Napi::Env env, std::vector<TargetVersion>& versions) -> Napi::Value {
          Napi::Array out = Napi::Array::New(env, versions.size());
          for (size_t i = 0; i < versions.size(); i++) {
            Napi::Object entry = Napi::Object::New(env);
            entry.Set("name", Napi::String::New(env, versions[i].name));
            Napi::Array version = Napi::Array::New(env, 3);
            for (uint32_t k = 0; k < 3; k++) version.Set(k, Napi::Number::New(env, versions[i].version[k]));
            entry.Set("version", version);
            out.Set(static_cast<uint32_t>(i), entry);
          }
          return out;
        });
  }

  Napi::Value Create(const Napi::CallbackInfo& info) {
    std::string name = StringArg(info, 0, "name");
    std::string uuid = StringArg(info, 1, "uuid");
    uint32_t flags = Uint32Arg(info, 2, "flags");
    return RunInfo(info, "dmsnap.create", [=](const DmControl& c) { return c.Create(name, uuid, flags); });
  }

  Napi::Value Remove(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    uint32_t event_nr = Uint32Arg(info, 2, "eventNr");
    return RunInfo(info, "dmsnap.remove", [=](const DmControl& c) { return c.Remove(ref, flags, event_nr); });
  }

  Napi::Value Rename(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    std::string value = StringArg(info, 1, "newNameOrUuid");
    uint32_t flags = Uint32Arg(info, 2, "flags");
    uint32_t event_nr = Uint32Arg(info, 3, "eventNr");
    return RunInfo(info, "dmsnap.rename", [=](const DmControl& c) { return c.Rename(ref, value, flags, event_nr); });
  }

  Napi::Value Suspend(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    return RunInfo(info, "dmsnap.suspend", [=](const DmControl& c) { return c.Suspend(ref, flags); });
  }

  Napi::Value Resume(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    uint32_t event_nr = Uint32Arg(info, 2, "eventNr");
    return RunInfo(info, "dmsnap.resume", [=](const DmControl& c) { return c.Resume(ref, flags, event_nr); });
  }

  // Suspend, resume, resume on a thread of its own, memory locked: see freeze.h.
  Napi::Value Freeze(const Napi::CallbackInfo& info) { return StartFreeze(info, Get(info.Env())); }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    return RunInfo(info, "dmsnap.info", [=](const DmControl& c) { return c.Info(ref, flags); });
  }

  Napi::Value WaitEvent(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t event_nr = Uint32Arg(info, 1, "eventNr");
    return RunInfo(info, "dmsnap.waitEvent", [=](const DmControl& c) { return c.WaitEvent(ref, event_nr); });
  }

  Napi::Value Load(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 2, "flags");
    auto held = std::make_shared<HeldTargets>(TargetsArg(info, 1), (flags & DM_SECURE_DATA_FLAG) != 0);
    return RunInfo(info, "dmsnap.load", [=](const DmControl& c) { return c.Load(ref, held->targets, flags); });
  }

  Napi::Value Clear(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    return RunInfo(info, "dmsnap.clear", [=](const DmControl& c) { return c.Clear(ref); });
  }

  Napi::Value Deps(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    ControlPtr control = Get(info.Env());
    return PromiseWork<DepsResult>::Run(
        info.Env(), "dmsnap.deps", [=] { return control->Deps(ref, flags); },
        [](Napi::Env env, DepsResult& result) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("info", InfoToJs(env, result.info));
          Napi::Array devices = Napi::Array::New(env, result.devices.size());
          for (size_t i = 0; i < result.devices.size(); i++) {
            Napi::Array pair = Napi::Array::New(env, 2);
            pair.Set(0u, Napi::Number::New(env, result.devices[i].first));
            pair.Set(1u, Napi::Number::New(env, result.devices[i].second));
            devices.Set(static_cast<uint32_t>(i), pair);
          }
          out.Set("devices", devices);
          return out;
        });
  }

  Napi::Value TableStatus(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    uint32_t flags = Uint32Arg(info, 1, "flags");
    ControlPtr control = Get(info.Env());
    return PromiseWork<TableResult>::Run(
        info.Env(), "dmsnap.tableStatus", [=] { return control->TableStatus(ref, flags); },
        [](Napi::Env env, TableResult& result) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("info", InfoToJs(env, result.info));
          out.Set("targets", TargetsToJs(env, result.targets));
          return out;
        });
  }

  Napi::Value Message(const Napi::CallbackInfo& info) {
    DeviceRef ref = RefArg(info, 0);
    double sector = NumberArg(info, 1, "sector");
    std::string message = StringArg(info, 2, "message");
    ControlPtr control = Get(info.Env());
    return PromiseWork<std::optional<std::string>>::Run(
        info.Env(), "dmsnap.message", [=] { return control->Message(ref, static_cast<uint64_t>(sector), message); },
        [](Napi::Env env, std::optional<std::string>& reply) -> Napi::Value {
          if (!reply) return env.Null();
          return Napi::String::New(env, *reply);
        });
  }

  Napi::Value ArmPoll(const Napi::CallbackInfo& info) {
    ControlPtr control = Get(info.Env());
    return RunVoid(info.Env(), "dmsnap.armPoll", [control] { control->ArmPoll(); });
  }

  // Waits on a thread of its own (poll(2) on the descriptor and a cancel eventfd) and
  // settles the promise on the main thread through a thread-safe function. An
  // environment cleanup hook, registered after the thread-safe function so that it runs
  // before that function is torn down, cancels and joins the thread when a worker
  // thread (or the process) shuts down in the middle of a wait.
  struct PollJob {
    std::shared_ptr<PollWait> wait;
    std::thread thread;
    bool torn_down = false;  // main thread only: the environment went away first
  };

  // Runs on the main thread while the environment shuts down. The thread's queued
  // completion (if it is still delivered) sees torn_down and touches nothing.
  static void CleanupPollJob(void* arg) {
    auto* holder = static_cast<std::shared_ptr<PollJob>*>(arg);
    std::shared_ptr<PollJob> job = *holder;
    delete holder;
    job->torn_down = true;
    job->wait->Cancel();
    if (job->thread.joinable()) job->thread.join();
  }

  Napi::Value PollReadable(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    ControlPtr control = Get(env);
    auto job = std::make_shared<PollJob>();
    try {
      job->wait = std::make_shared<PollWait>(control);
    } catch (const SysError& e) {
      throw Napi::Error(env, MakeSysError(env, e));
    }
    auto deferred = std::make_shared<Napi::Promise::Deferred>(env);
    Napi::ThreadSafeFunction done =
        Napi::ThreadSafeFunction::New(env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "dmsnap.poll", 0, 1);
    auto* hook_arg = new std::shared_ptr<PollJob>(job);
    napi_add_env_cleanup_hook(env, CleanupPollJob, hook_arg);
    polls_.insert(job->wait);
    Ref();  // keep this object alive until the wait ends
    job->thread = std::thread([this, job, deferred, done, hook_arg]() mutable {
      auto outcome = std::make_shared<std::pair<bool, std::optional<SysError>>>(false, std::nullopt);
      try {
        outcome->first = job->wait->Wait();
      } catch (const SysError& e) {
        outcome->second = e;
      }
      // Runs on the main thread, unless the environment is shutting down first (then
      // the cleanup hook has joined this thread and the call is dropped).
      done.BlockingCall([this, job, deferred, outcome, hook_arg](Napi::Env env, Napi::Function) {
        if (job->torn_down) return;
        napi_remove_env_cleanup_hook(env, CleanupPollJob, hook_arg);
        delete hook_arg;
        if (job->thread.joinable()) job->thread.join();
        polls_.erase(job->wait);
        // A worker thread being terminated refuses every call into JavaScript: then
        // there is nobody left to tell, and nothing may be thrown from here.
        try {
          if (outcome->second) {
            deferred->Reject(MakeSysError(env, *outcome->second));
          } else {
            deferred->Resolve(Napi::Boolean::New(env, outcome->first));
          }
          Unref();
        } catch (const Napi::Error&) {
        }
      });
      done.Release();
    });
    return deferred->Promise();
  }

  Napi::Value CancelPoll(const Napi::CallbackInfo& info) {
    for (const auto& wait : polls_) wait->Cancel();
    return info.Env().Undefined();
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    for (const auto& wait : polls_) wait->Cancel();
    control_.reset();
    return info.Env().Undefined();
  }

  ControlPtr control_;
  std::string path_;
  std::set<std::shared_ptr<PollWait>> polls_;
};

Napi::Value OpenControl(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return PromiseWork<ControlPtr>::Run(
      info.Env(), "dmsnap.openControl", [path] { return std::make_shared<DmControl>(path); },
      [](Napi::Env env, ControlPtr& control) -> Napi::Value {
        // The External only lives for the constructor call; the wrap copies the pointer.
        Napi::External<ControlPtr> external = Napi::External<ControlPtr>::New(env, &control);
        return GetAddonData(env).control_class.New({external});
      });
}

}  // namespace

void RegisterControl(Napi::Env env, Napi::Object exports) {
  Napi::Function control_class = ControlWrap::Define(env);
  GetAddonData(env).control_class = Napi::Persistent(control_class);
  exports.Set("Control", control_class);
  exports.Set("openControl", Napi::Function::New(env, OpenControl, "openControl"));
}

}  // namespace dmsnap
