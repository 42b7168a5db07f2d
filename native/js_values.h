// Results shared by more than one binding file, as the JS objects lib/native.ts names.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "block_device.h"
#include "device_handle.h"
#include "signature_probe.h"

namespace dmsnap {

// NativeBlockDeviceInfo (defined in block_device_binding.cc).
Napi::Value BlockDeviceInfoToJs(Napi::Env env, const BlockDeviceInfo& info);
// NativeSignature[] (defined in signature_probe_binding.cc).
Napi::Value SignaturesToJs(Napi::Env env, const std::vector<Signature>& signatures);
// A NativeBlockDevice over an open device (defined in device_handle_binding.cc).
Napi::Value DeviceHandleToJs(Napi::Env env, std::shared_ptr<DeviceHandle>& handle);

}  // namespace dmsnap
