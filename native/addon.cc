// Module entry: per-instance state, the error factory and registration of the bindings.
#include "addon.h"

#include "async_work.h"
#include "sys_error.h"

namespace dmsnap {

AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

Napi::Value SafeNumber(Napi::Env env, uint64_t value) {
  constexpr uint64_t kMaxSafeInteger = (uint64_t{1} << 53) - 1;
  if (value > kMaxSafeInteger) {
    throw Napi::RangeError::New(env, "value " + std::to_string(value) + " from the kernel exceeds Number.MAX_SAFE_INTEGER");
  }
  return Napi::Number::New(env, static_cast<double>(value));
}

// The facts of a failed call go to the factory that lib/ registered, so that every
// native error is an instance of the library's own error classes. Without a factory
// (the addon loaded directly) a plain Error carries the same properties.
Napi::Value MakeSysError(Napi::Env env, const SysError& error) {
  Napi::Object info = Napi::Object::New(env);
  info.Set("errno", Napi::Number::New(env, error.errnum));
  info.Set("syscall", Napi::String::New(env, error.syscall));
  if (!error.ioctl.empty()) info.Set("ioctl", Napi::String::New(env, error.ioctl));
  if (!error.path.empty()) info.Set("path", Napi::String::New(env, error.path));
  if (!error.device.empty()) info.Set("device", Napi::String::New(env, error.device));

  AddonData& data = GetAddonData(env);
  if (!data.error_factory.IsEmpty()) {
    Napi::Value made = data.error_factory.Call({info});
    if (!env.IsExceptionPending()) return made;
    return env.GetAndClearPendingException().Value();
  }
  Napi::Error plain = Napi::Error::New(env, error.syscall + " failed with errno " + std::to_string(error.errnum));
  Napi::Object object = plain.Value();
  for (const auto& key : {"errno", "syscall", "ioctl", "path", "device"}) {
    if (info.Has(key)) object.Set(key, info.Get(key));
  }
  return object;
}

namespace {

Napi::Value SetErrorFactory(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsFunction()) {
    throw Napi::TypeError::New(env, "setErrorFactory expects a function");
  }
  GetAddonData(env).error_factory = Napi::Persistent(info[0].As<Napi::Function>());
  return env.Undefined();
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory, "setErrorFactory"));
  RegisterControl(env, exports);
  RegisterBlockDevice(env, exports);
  return exports;
}

}  // namespace dmsnap

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dmsnap::Init(env, exports); }

NODE_API_MODULE(dmsnap, InitModule)
