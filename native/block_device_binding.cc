// N-API glue for block device queries (block_device.h).
#include "addon.h"
#include "async_work.h"
#include "block_device.h"
#include "js_values.h"

namespace dmsnap {

Napi::Value BlockDeviceInfoToJs(Napi::Env env, const BlockDeviceInfo& result) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("sizeBytes", SafeNumber(env, result.size_bytes));
  out.Set("logicalSectorSize", Napi::Number::New(env, result.logical_sector_size));
  out.Set("physicalSectorSize", Napi::Number::New(env, result.physical_sector_size));
  out.Set("readOnly", Napi::Boolean::New(env, result.read_only));
  out.Set("major", Napi::Number::New(env, result.major));
  out.Set("minor", Napi::Number::New(env, result.minor));
  return out;
}

namespace {

std::string PathArgument(const Napi::CallbackInfo& info) { return StringArg(info, 0, "path"); }

Napi::Value QueryBlockDeviceJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  return PromiseWork<BlockDeviceInfo>::Run(
      info.Env(), "dmsnap.queryBlockDevice", [path] { return QueryBlockDevice(path); },
      [](Napi::Env env, BlockDeviceInfo& result) { return BlockDeviceInfoToJs(env, result); });
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

Napi::Value MakeBlockNodeJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  uint32_t major = Uint32Arg(info, 1, "major");
  uint32_t minor = Uint32Arg(info, 2, "minor");
  uint32_t mode = Uint32Arg(info, 3, "mode");
  return RunVoid(info.Env(), "dmsnap.makeBlockNode", [=] { MakeBlockNode(path, major, minor, mode); });
}

Napi::Value CheckExclusiveJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  return RunVoid(info.Env(), "dmsnap.checkExclusive", [=] { CheckExclusive(path); });
}

Napi::Value ReadDeviceBytesJs(const Napi::CallbackInfo& info) {
  std::string path = PathArgument(info);
  double offset = NumberArg(info, 1, "offset");
  uint32_t length = Uint32Arg(info, 2, "length");
  if (offset < 0 || offset > 9007199254740991.0) throw Napi::RangeError::New(info.Env(), "offset out of range");
  if (length > 16 * 1024 * 1024) throw Napi::RangeError::New(info.Env(), "length must be at most 16 MiB");
  return PromiseWork<std::vector<char>>::Run(
      info.Env(), "dmsnap.readDeviceBytes", [=] { return ReadDeviceBytes(path, static_cast<uint64_t>(offset), length); },
      [](Napi::Env env, std::vector<char>& bytes) -> Napi::Value {
        return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
      });
}

}  // namespace

void RegisterBlockDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("queryBlockDevice", Napi::Function::New(env, QueryBlockDeviceJs, "queryBlockDevice"));
  exports.Set("statBlockDevice", Napi::Function::New(env, StatBlockDeviceJs, "statBlockDevice"));
  exports.Set("makeBlockNode", Napi::Function::New(env, MakeBlockNodeJs, "makeBlockNode"));
  exports.Set("checkExclusive", Napi::Function::New(env, CheckExclusiveJs, "checkExclusive"));
  exports.Set("readDeviceBytes", Napi::Function::New(env, ReadDeviceBytesJs, "readDeviceBytes"));
}

}  // namespace dmsnap
