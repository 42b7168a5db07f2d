// N-API glue for block device queries (block_device.h).
#include "addon.h"
#include "async_work.h"
#include "block_device.h"

namespace dmsnap {

namespace {

std::string PathArgument(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "path must be a string");
  return info[0].As<Napi::String>().Utf8Value();
}

Napi::Value QueryBlockDeviceJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  return PromiseWork<BlockDeviceInfo>::Run(
      info.Env(), "dmsnap.queryBlockDevice", [path] { return QueryBlockDevice(path); },
      [](Napi::Env env, BlockDeviceInfo& result) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("sizeBytes", SafeNumber(env, result.size_bytes));
        out.Set("logicalSectorSize", Napi::Number::New(env, result.logical_sector_size));
        out.Set("physicalSectorSize", Napi::Number::New(env, result.physical_sector_size));
        out.Set("readOnly", Napi::Boolean::New(env, result.read_only));
        out.Set("major", Napi::Number::New(env, result.major));
        out.Set("minor", Napi::Number::New(env, result.minor));
        return out;
      });
}

Napi::Value StatBlockDeviceJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  return PromiseWork<DeviceNumber>::Run(
      info.Env(), "dmsnap.statBlockDevice", [path] { return StatBlockDevice(path); },
      [](Napi::Env env, DeviceNumber& result) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("major", Napi::Number::New(env, result.major));
        out.Set("minor", Napi::Number::New(env, result.minor));
        return out;
      });
}

}  // namespace

void RegisterBlockDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("queryBlockDevice", Napi::Function::New(env, QueryBlockDeviceJs, "queryBlockDevice"));
  exports.Set("statBlockDevice", Napi::Function::New(env, StatBlockDeviceJs, "statBlockDevice"));
}

}  // namespace dmsnap
