// N-API glue for the device-mapper control node (dm_control.h): a Control object per
// open descriptor. Pending calls share ownership of the descriptor, so close() never
// pulls it from under a call that is still running on the thread pool.
#include <memory>

#include "addon.h"
#include "async_work.h"
#include "dm_control.h"

namespace dmsnap {

namespace {

class ControlWrap : public Napi::ObjectWrap<ControlWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "Control",
                       {
                           InstanceAccessor<&ControlWrap::GetPath>("path"),
                           InstanceAccessor<&ControlWrap::GetClosed>("closed"),
                           InstanceMethod<&ControlWrap::Version>("version"),
                           InstanceMethod<&ControlWrap::Close>("close"),
                       });
  }

  // Only openControl() constructs these, passing the opened control in an External.
  explicit ControlWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ControlWrap>(info) {
    if (info.Length() != 1 || !info[0].IsExternal()) {
      throw Napi::TypeError::New(info.Env(), "Control cannot be constructed directly; use openControl()");
    }
    auto* holder = info[0].As<Napi::External<std::shared_ptr<DmControl>>>().Data();
    control_ = *holder;
    path_ = control_->path();
  }

 private:
  std::shared_ptr<DmControl> Get(Napi::Env env) {
    if (!control_) throw Napi::Error::New(env, "the device-mapper control node " + path_ + " is closed");
    return control_;
  }

  Napi::Value GetPath(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), path_); }
  Napi::Value GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !control_); }

  Napi::Value Version(const Napi::CallbackInfo& info) {
    auto control = Get(info.Env());
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

  Napi::Value Close(const Napi::CallbackInfo& info) {
    control_.reset();
    return info.Env().Undefined();
  }

  std::shared_ptr<DmControl> control_;
  std::string path_;
};

Napi::Value OpenControl(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  return PromiseWork<std::shared_ptr<DmControl>>::Run(
      env, "dmsnap.openControl", [path] { return std::make_shared<DmControl>(path); },
      [](Napi::Env env, std::shared_ptr<DmControl>& control) -> Napi::Value {
        auto holder = std::make_unique<std::shared_ptr<DmControl>>(control);
        // The External only lives for the constructor call; the wrap copies the pointer.
        Napi::External<std::shared_ptr<DmControl>> external =
            Napi::External<std::shared_ptr<DmControl>>::New(env, holder.get());
        Napi::Value made = GetAddonData(env).control_class.New({external});
        return made;
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
