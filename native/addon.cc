// Module entry: per-instance state, the error factory and registration of the bindings.
#include "addon.h"

#include <linux/dm-ioctl.h>

#include "async_work.h"
#include "sys_error.h"

namespace dmsnap {

AddonData& GetAddonData(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsString()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  }
  return info[index].As<Napi::String>().Utf8Value();
}

double NumberArg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  if (info.Length() <= index || !info[index].IsNumber()) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a number");
  }
  return info[index].As<Napi::Number>().DoubleValue();
}

uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name) {
  double value = NumberArg(info, index, name);
  if (value < 0 || value > 4294967295.0 || value != static_cast<double>(static_cast<uint32_t>(value))) {
    throw Napi::TypeError::New(info.Env(), std::string(name) + " must be an unsigned 32-bit integer");
  }
  return static_cast<uint32_t>(value);
}

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

// Numbers from <linux/dm-ioctl.h>, so that lib/ never hand-copies them.
Napi::Object Constants(Napi::Env env) {
  Napi::Object constants = Napi::Object::New(env);
#define DMSNAP_EXPORT_CONSTANT(name) constants.Set(#name, Napi::Number::New(env, static_cast<double>(name)))
  DMSNAP_EXPORT_CONSTANT(DM_VERSION_MAJOR);
  DMSNAP_EXPORT_CONSTANT(DM_VERSION_MINOR);
  DMSNAP_EXPORT_CONSTANT(DM_VERSION_PATCHLEVEL);
  DMSNAP_EXPORT_CONSTANT(DM_MAX_TYPE_NAME);
  DMSNAP_EXPORT_CONSTANT(DM_NAME_LEN);
  DMSNAP_EXPORT_CONSTANT(DM_UUID_LEN);
  DMSNAP_EXPORT_CONSTANT(DM_READONLY_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_SUSPEND_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_PERSISTENT_DEV_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_STATUS_TABLE_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_ACTIVE_PRESENT_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_INACTIVE_PRESENT_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_BUFFER_FULL_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_SKIP_BDGET_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_SKIP_LOCKFS_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_NOFLUSH_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_QUERY_INACTIVE_TABLE_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_UEVENT_GENERATED_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_UUID_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_SECURE_DATA_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_DATA_OUT_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_DEFERRED_REMOVE);
  DMSNAP_EXPORT_CONSTANT(DM_INTERNAL_SUSPEND_FLAG);
  DMSNAP_EXPORT_CONSTANT(DM_NAME_LIST_FLAG_HAS_UUID);
  DMSNAP_EXPORT_CONSTANT(DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID);
#undef DMSNAP_EXPORT_CONSTANT
  constants.Freeze();
  return constants;
}

}  // namespace

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  env.SetInstanceData(new AddonData());
  exports.Set("setErrorFactory", Napi::Function::New(env, SetErrorFactory, "setErrorFactory"));
  exports.Set("constants", Constants(env));
  RegisterControl(env, exports);
  RegisterBlockDevice(env, exports);
  RegisterDeviceHandle(env, exports);
  RegisterUdevCookie(env, exports);
  RegisterSignatureProbe(env, exports);
  RegisterSystem(env, exports);
  RegisterLoop(env, exports);
  return exports;
}

}  // namespace dmsnap

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return dmsnap::Init(env, exports); }

NODE_API_MODULE(dmsnap, InitModule)
