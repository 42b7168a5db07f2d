// Shared by the Control object's binding files: argument and result conversions, and
// the calls that live in files of their own.
#pragma once

#include <napi.h>

#include <memory>

#include "dm_control.h"

namespace dmsnap {

// A { name } / { uuid } / { major, minor } argument; throws TypeError.
DeviceRef RefArg(const Napi::CallbackInfo& info, size_t index);
DeviceRef RefValue(Napi::Env env, Napi::Value value);
// A dm_ioctl header as the JS object lib/native.ts calls NativeDeviceInfo.
Napi::Object InfoToJs(Napi::Env env, const DeviceInfo& info);

// control.freeze(members, options) (freeze_binding.cc): runs the freeze on a thread of its own.
Napi::Value StartFreeze(const Napi::CallbackInfo& info, std::shared_ptr<const DmControl> control);

}  // namespace dmsnap
