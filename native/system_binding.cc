// N-API glue for mount(2)/umount2(2) (mount.h), flock(2) (file_lock.h) and fallocate(2)
// (file_space.h).
#include "addon.h"
#include "async_work.h"
#include "file_lock.h"
#include "file_space.h"
#include "guardian.h"
#include "mount.h"

namespace dmsnap {

namespace {

Napi::Value MountJs(const Napi::CallbackInfo& info) {
  std::string source = StringArg(info, 0, "source");
  std::string target = StringArg(info, 1, "target");
  std::string fstype = StringArg(info, 2, "fstype");
  uint32_t flags = Uint32Arg(info, 3, "flags");
  std::string data = StringArg(info, 4, "data");
  return RunVoid(info.Env(), "dmsnap.mount", [=] { MountFilesystem(source, target, fstype, flags, data); });
}

Napi::Value UnmountJs(const Napi::CallbackInfo& info) {
  std::string target = StringArg(info, 0, "target");
  uint32_t flags = Uint32Arg(info, 1, "flags");
  return RunVoid(info.Env(), "dmsnap.unmount", [=] { UnmountFilesystem(target, flags); });
}

Napi::Value PreallocateFileJs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  auto inode = static_cast<uint64_t>(NumberArg(info, 1, "inode"));
  auto length = static_cast<uint64_t>(NumberArg(info, 2, "length"));
  return RunVoid(info.Env(), "dmsnap.preallocateFile", [=] { PreallocateFile(path, inode, length); });
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

Napi::Value SpawnGuardianJs(const Napi::CallbackInfo& info) {
  std::string executable = StringArg(info, 0, "executable");
  std::string control = StringArg(info, 1, "controlPath");
  std::string origin = StringArg(info, 2, "originName");
  std::string lock = StringArg(info, 3, "lockPath");
  std::string lock_id = StringArg(info, 4, "lockId");
  return PromiseWork<Guardian>::Run(
      info.Env(), "dmsnap.spawnGuardian", [=] { return SpawnGuardian(executable, control, origin, lock, lock_id); },
      [](Napi::Env env, Guardian& guardian) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("pid", Napi::Number::New(env, guardian.pid));
        out.Set("fd", Napi::Number::New(env, guardian.fd));
        return out;
      });
}

Napi::Value AwaitGuardianReadyJs(const Napi::CallbackInfo& info) {
  Guardian guardian{static_cast<int>(Uint32Arg(info, 0, "pid")), static_cast<int>(Uint32Arg(info, 1, "fd"))};
  std::string executable = StringArg(info, 2, "executable");
  uint32_t timeout_ms = Uint32Arg(info, 3, "timeoutMs");
  return RunVoid(info.Env(), "dmsnap.awaitGuardianReady", [=] { AwaitGuardianReady(guardian, executable, timeout_ms); });
}

Napi::Value FinishGuardianJs(const Napi::CallbackInfo& info) {
  Guardian guardian{static_cast<int>(Uint32Arg(info, 0, "pid")), static_cast<int>(Uint32Arg(info, 1, "fd"))};
  if (info.Length() < 3 || !info[2].IsBoolean()) throw Napi::TypeError::New(info.Env(), "done must be a boolean");
  bool done = info[2].As<Napi::Boolean>().Value();
  return PromiseWork<int>::Run(
      info.Env(), "dmsnap.finishGuardian", [=] { return FinishGuardian(guardian, done); },
      [](Napi::Env env, int& status) -> Napi::Value { return Napi::Number::New(env, status); });
}

}  // namespace

void RegisterSystem(Napi::Env env, Napi::Object exports) {
  exports.Set("mount", Napi::Function::New(env, MountJs, "mount"));
  exports.Set("unmount", Napi::Function::New(env, UnmountJs, "unmount"));
  exports.Set("preallocateFile", Napi::Function::New(env, PreallocateFileJs, "preallocateFile"));
  exports.Set("tryLock", Napi::Function::New(env, TryLockJs, "tryLock"));
  exports.Set("unlock", Napi::Function::New(env, UnlockJs, "unlock"));
  exports.Set("spawnGuardian", Napi::Function::New(env, SpawnGuardianJs, "spawnGuardian"));
  exports.Set("awaitGuardianReady", Napi::Function::New(env, AwaitGuardianReadyJs, "awaitGuardianReady"));
  exports.Set("finishGuardian", Napi::Function::New(env, FinishGuardianJs, "finishGuardian"));
}

}  // namespace dmsnap
