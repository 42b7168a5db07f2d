// N-API glue for loop devices (loop.h).
#include <linux/loop.h>

#include "addon.h"
#include "async_work.h"
#include "js_values.h"
#include "loop.h"

namespace dmsnap {

namespace {

Napi::Value LoopAttachJs(const Napi::CallbackInfo& info) {
  std::string file = StringArg(info, 0, "file");
  std::string tag = StringArg(info, 1, "tag");
  if (info.Length() < 3 || !info[2].IsBoolean()) throw Napi::TypeError::New(info.Env(), "directIo must be a boolean");
  bool direct_io = info[2].As<Napi::Boolean>().Value();
  return PromiseWork<LoopAttachment>::Run(
      info.Env(), "dmsnap.loopAttach", [=] { return AttachLoop(file, tag, direct_io); },
      [](Napi::Env env, LoopAttachment& result) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("number", Napi::Number::New(env, result.number));
        out.Set("flags", Napi::Number::New(env, result.flags));
        out.Set("device", DeviceHandleToJs(env, result.device));
        return out;
      });
}

Napi::Value LoopStatusJs(const Napi::CallbackInfo& info) {
  std::string device = StringArg(info, 0, "device");
  return PromiseWork<LoopStatus>::Run(
      info.Env(), "dmsnap.loopStatus", [=] { return GetLoopStatus(device); },
      [](Napi::Env env, LoopStatus& status) -> Napi::Value {
        Napi::Object out = Napi::Object::New(env);
        out.Set("number", Napi::Number::New(env, status.number));
        out.Set("flags", Napi::Number::New(env, status.flags));
        out.Set("backingMajor", Napi::Number::New(env, status.backing_major));
        out.Set("backingMinor", Napi::Number::New(env, status.backing_minor));
        out.Set("backingInode", SafeNumber(env, status.backing_inode));
        out.Set("offset", SafeNumber(env, status.offset));
        out.Set("sizeLimit", SafeNumber(env, status.size_limit));
        out.Set("fileName", Napi::String::New(env, status.file_name));
        return out;
      });
}

Napi::Value LoopSetCapacityJs(const Napi::CallbackInfo& info) {
  std::string device = StringArg(info, 0, "device");
  return RunVoid(info.Env(), "dmsnap.loopSetCapacity", [=] { SetLoopCapacity(device); });
}

Napi::Value LoopDetachJs(const Napi::CallbackInfo& info) {
  std::string device = StringArg(info, 0, "device");
  return RunVoid(info.Env(), "dmsnap.loopDetach", [=] { DetachLoop(device); });
}

// The LO_FLAGS_* bits of <linux/loop.h>, so that lib/ never hand-copies them.
Napi::Object LoopConstants(Napi::Env env) {
  Napi::Object constants = Napi::Object::New(env);
  constants.Set("LO_FLAGS_READ_ONLY", Napi::Number::New(env, LO_FLAGS_READ_ONLY));
  constants.Set("LO_FLAGS_AUTOCLEAR", Napi::Number::New(env, LO_FLAGS_AUTOCLEAR));
  constants.Set("LO_FLAGS_PARTSCAN", Napi::Number::New(env, LO_FLAGS_PARTSCAN));
  constants.Set("LO_FLAGS_DIRECT_IO", Napi::Number::New(env, LO_FLAGS_DIRECT_IO));
  constants.Set("LO_NAME_SIZE", Napi::Number::New(env, LO_NAME_SIZE));
  constants.Freeze();
  return constants;
}

}  // namespace

void RegisterLoop(Napi::Env env, Napi::Object exports) {
  exports.Set("loopConstants", LoopConstants(env));
  exports.Set("loopAttach", Napi::Function::New(env, LoopAttachJs, "loopAttach"));
  exports.Set("loopStatus", Napi::Function::New(env, LoopStatusJs, "loopStatus"));
  exports.Set("loopSetCapacity", Napi::Function::New(env, LoopSetCapacityJs, "loopSetCapacity"));
  exports.Set("loopDetach", Napi::Function::New(env, LoopDetachJs, "loopDetach"));
}

}  // namespace dmsnap
