// N-API glue for the udev cookie semaphores (udev_cookie.h).
#include "addon.h"
#include "async_work.h"
#include "udev_cookie.h"

namespace dmsnap {

namespace {

int SemidArg(const Napi::CallbackInfo& info) { return static_cast<int>(Uint32Arg(info, 0, "semid")); }

Napi::Value Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    UdevCookie cookie = CreateUdevCookie();
    Napi::Object out = Napi::Object::New(env);
    out.Set("base", Napi::Number::New(env, cookie.base));
    out.Set("semid", Napi::Number::New(env, cookie.semid));
    return out;
  } catch (const SysError& e) {
    throw Napi::Error(env, MakeSysError(env, e));
  }
}

Napi::Value Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int semid = SemidArg(info);
  double delta = NumberArg(info, 1, "delta");
  if (delta != 1 && delta != -1) throw Napi::TypeError::New(env, "delta must be 1 or -1");
  try {
    AddToUdevCookie(semid, static_cast<int>(delta));
  } catch (const SysError& e) {
    throw Napi::Error(env, MakeSysError(env, e));
  }
  return env.Undefined();
}

Napi::Value Wait(const Napi::CallbackInfo& info) {
  int semid = SemidArg(info);
  uint32_t timeout_ms = Uint32Arg(info, 1, "timeoutMs");
  return PromiseWork<bool>::Run(
      info.Env(), "dmsnap.udevCookieWait", [=] { return WaitUdevCookie(semid, timeout_ms); },
      [](Napi::Env env, bool& done) -> Napi::Value { return Napi::Boolean::New(env, done); });
}

Napi::Value Destroy(const Napi::CallbackInfo& info) {
  DestroyUdevCookie(SemidArg(info));
  return info.Env().Undefined();
}

}  // namespace

void RegisterUdevCookie(Napi::Env env, Napi::Object exports) {
  exports.Set("udevCookieCreate", Napi::Function::New(env, Create, "udevCookieCreate"));
  exports.Set("udevCookieAdd", Napi::Function::New(env, Add, "udevCookieAdd"));
  exports.Set("udevCookieWait", Napi::Function::New(env, Wait, "udevCookieWait"));
  exports.Set("udevCookieDestroy", Napi::Function::New(env, Destroy, "udevCookieDestroy"));
}

}  // namespace dmsnap
