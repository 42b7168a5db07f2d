// N-API glue for mount(2)/umount2(2) (mount.h) and flock(2) (file_lock.h).
#include "addon.h"
#include "async_work.h"
#include "file_lock.h"
#include "mount.h"

namespace dmsnap {

namespace {

struct Nothing {};

Napi::Value MountJs(const Napi::CallbackInfo& info) {
  std::string source = StringArg(info, 0, "source");
  std::string target = StringArg(info, 1, "target");
  std::string fstype = StringArg(info, 2, "fstype");
  uint32_t flags = Uint32Arg(info, 3, "flags");
  std::string data = StringArg(info, 4, "data");
  return PromiseWork<Nothing>::Run(
      info.Env(), "dmsnap.mount",
      [=] {
        MountFilesystem(source, target, fstype, flags, data);
        return Nothing{};
      },
      [](Napi::Env env, Nothing&) -> Napi::Value { return env.Undefined(); });
}

Napi::Value UnmountJs(const Napi::CallbackInfo& info) {
  std::string target = StringArg(info, 0, "target");
  uint32_t flags = Uint32Arg(info, 1, "flags");
  return PromiseWork<Nothing>::Run(
      info.Env(), "dmsnap.unmount",
      [=] {
        UnmountFilesystem(target, flags);
        return Nothing{};
      },
      [](Napi::Env env, Nothing&) -> Napi::Value { return env.Undefined(); });
}

// flock with LOCK_NB never blocks: a plain synchronous call.
Napi::Value TryLockJs(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(Uint32Arg(info, 0, "fd"));
  try {
    return Napi::Boolean::New(info.Env(), TryLockFile(fd));
  } catch (const SysError& e) {
    throw Napi::Error(info.Env(), MakeSysError(info.Env(), e));
  }
}

Napi::Value UnlockJs(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(Uint32Arg(info, 0, "fd"));
  try {
    UnlockFile(fd);
  } catch (const SysError& e) {
    throw Napi::Error(info.Env(), MakeSysError(info.Env(), e));
  }
  return info.Env().Undefined();
}

}  // namespace

void RegisterSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, MountJs, "mount"));
  exports.Set("unmount", Napi::Function::New(env, UnmountJs, "unmount"));
  exports.Set("tryLock", Napi::Function::New(env, TryLockJs, "tryLock"));
  exports.Set("unlock", Napi::Function::New(env, UnlockJs, "unlock"));
}

}  // namespace dmsnap
