// N-API glue for DeviceHandle (device_handle.h): a BlockDevice object per open device.
// Pending calls share ownership of the descriptor; close() drops the object's share, so
// the device is released at once when no call is running (the caller awaits them first).
#include <memory>

#include "addon.h"
#include "async_work.h"
#include "block_device.h"
#include "device_handle.h"
#include "js_values.h"
#include "signature_probe.h"

namespace dmsnap {

namespace {

using HandlePtr = std::shared_ptr<DeviceHandle>;

class DeviceHandleWrap : public Napi::ObjectWrap<DeviceHandleWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "BlockDevice",
                       {
                           InstanceAccessor<&DeviceHandleWrap::GetPath>("path"),
                           InstanceAccessor<&DeviceHandleWrap::GetMajor>("major"),
                           InstanceAccessor<&DeviceHandleWrap::GetMinor>("minor"),
                           InstanceAccessor<&DeviceHandleWrap::GetClosed>("closed"),
                           InstanceMethod<&DeviceHandleWrap::Query>("query"),
                           InstanceMethod<&DeviceHandleWrap::Probe>("probeSignatures"),
                           InstanceMethod<&DeviceHandleWrap::Read>("read"),
                           InstanceMethod<&DeviceHandleWrap::ZeroStart>("zeroStart"),
                           InstanceMethod<&DeviceHandleWrap::WriteAt>("writeAt"),
                           InstanceMethod<&DeviceHandleWrap::Close>("close"),
                       });
  }

  // Only openBlockDevice() constructs these, passing the opened device in an External.
  explicit DeviceHandleWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<DeviceHandleWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "BlockDevice cannot be constructed directly; use openBlockDevice()");
    }
    handle_ = *info[0].As<Napi::External<HandlePtr>>().Data();
    path_ = handle_->path();
    major_ = handle_->major();
    minor_ = handle_->minor();
  }

 private:
  HandlePtr Get(Napi::Env env) {
    if (!handle_) throw Napi::Error::New(env, "the block device " + path_ + " is closed");
    return handle_;
  }

  Napi::Value GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }
  Napi::Value GetMajor(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), major_); }
  Napi::Value GetMinor(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), minor_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !handle_); }

  Napi::Value Query(const Napi::CallbackInfo& info) {
    HandlePtr handle = Get(info.Env());
    return PromiseWork<BlockDeviceInfo>::Run(
        info.Env(), "dmsnap.blockDevice.query", [handle] { return QueryBlockDeviceFd(handle->fd(), handle->path()); },
        [](Napi::Env env, BlockDeviceInfo& result) { return BlockDeviceInfoToJs(env, result); });
  }

  Napi::Value Probe(const Napi::CallbackInfo& info) {
    HandlePtr handle = Get(info.Env());
    return PromiseWork<std::vector<Signature>>::Run(
        info.Env(), "dmsnap.blockDevice.probeSignatures",
        [handle] { return ProbeSignaturesFd(handle->fd(), handle->path()); },
        [](Napi::Env env, std::vector<Signature>& result) { return SignaturesToJs(env, result); });
  }

  Napi::Value Read(const Napi::CallbackInfo& info) {
    double offset = NumberArg(info, 0, "offset");
    uint32_t length = Uint32Arg(info, 1, "length");
    if (offset < 0 || offset > 9007199254740991.0) throw Napi::RangeError::New(info.Env(), "offset out of range");
    if (length > 16 * 1024 * 1024) throw Napi::RangeError::New(info.Env(), "length must be at most 16 MiB");
    bool direct = info.Length() > 2 && info[2].ToBoolean().Value();
    HandlePtr handle = Get(info.Env());
    return PromiseWork<std::vector<char>>::Run(
        info.Env(), "dmsnap.blockDevice.read",
        [=] {
          uint64_t at = static_cast<uint64_t>(offset);
          return direct ? ReadFdBytesDirect(handle->fd(), handle->path(), at, length) : ReadFdBytes(handle->fd(), handle->path(), at, length);
        },
        [](Napi::Env env, std::vector<char>& bytes) -> Napi::Value {
          return Napi::Buffer<char>::Copy(env, bytes.data(), bytes.size());
        });
  }

  Napi::Value ZeroStart(const Napi::CallbackInfo& info) {
    double length = NumberArg(info, 0, "lengthBytes");
    if (length < 0 || length > 1073741824.0) throw Napi::RangeError::New(info.Env(), "lengthBytes must be from 0 to 1 GiB");
    HandlePtr handle = Get(info.Env());
    if (!handle->writable()) throw Napi::Error::New(info.Env(), "the block device " + path_ + " was opened read-only");
    return RunVoid(info.Env(), "dmsnap.blockDevice.zeroStart",
                   [=] { ZeroFdStart(handle->fd(), handle->path(), static_cast<uint64_t>(length)); });
  }

  Napi::Value WriteAt(const Napi::CallbackInfo& info) {
    double offset = NumberArg(info, 0, "offset");
    if (offset < 0 || offset > 9007199254740991.0) throw Napi::RangeError::New(info.Env(), "offset out of range");
    if (info.Length() < 2 || !info[1].IsBuffer()) throw Napi::TypeError::New(info.Env(), "data must be a Buffer");
    Napi::Buffer<char> buffer = info[1].As<Napi::Buffer<char>>();
    if (buffer.Length() > 1024 * 1024) throw Napi::RangeError::New(info.Env(), "data must be at most 1 MiB");
    HandlePtr handle = Get(info.Env());
    if (!handle->writable()) throw Napi::Error::New(info.Env(), "the block device " + path_ + " was opened read-only");
    // Copied before going async: the caller may reuse its buffer.
    std::vector<char> data(buffer.Data(), buffer.Data() + buffer.Length());
    return RunVoid(info.Env(), "dmsnap.blockDevice.writeAt",
                   [=] { WriteFdAt(handle->fd(), handle->path(), static_cast<uint64_t>(offset), data); });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    handle_.reset();
    return info.Env().Undefined();
  }

  HandlePtr handle_;
  std::string path_;
  uint32_t major_ = 0;
  uint32_t minor_ = 0;
};

Napi::FunctionReference& HandleClass(Napi::Env env) { return GetAddonData(env).block_device_class; }

Napi::Value OpenBlockDevice(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  if (info.Length() < 3 || !info[1].IsBoolean() || !info[2].IsBoolean()) {
    throw Napi::TypeError::New(info.Env(), "exclusive and writable must be booleans");
  }
  bool exclusive = info[1].As<Napi::Boolean>().Value();
  bool writable = info[2].As<Napi::Boolean>().Value();
  return PromiseWork<HandlePtr>::Run(
      info.Env(), "dmsnap.openBlockDevice", [=] { return std::make_shared<DeviceHandle>(path, exclusive, writable); },
      [](Napi::Env env, HandlePtr& handle) { return DeviceHandleToJs(env, handle); });
}

}  // namespace

Napi::Value DeviceHandleToJs(Napi::Env env, HandlePtr& handle) {
  // The External only lives for the constructor call; the wrap copies the pointer.
  Napi::External<HandlePtr> external = Napi::External<HandlePtr>::New(env, &handle);
  return HandleClass(env).New({external});
}

void RegisterDeviceHandle(Napi::Env env, Napi::Object exports) {
  Napi::Function handle_class = DeviceHandleWrap::Define(env);
  HandleClass(env) = Napi::Persistent(handle_class);
  exports.Set("BlockDevice", handle_class);
  exports.Set("openBlockDevice", Napi::Function::New(env, OpenBlockDevice, "openBlockDevice"));
}

}  // namespace dmsnap
