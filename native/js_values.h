// Results shared by more than one binding file, as the JS objects lib/native.ts names.
#pragma once

#include <napi.h>

#include <vector>

#include "block_device.h"
#include "signature_probe.h"

namespace dmsnap {

// NativeBlockDeviceInfo (defined in block_device_binding.cc).
Napi::Value BlockDeviceInfoToJs(Napi::Env env, const BlockDeviceInfo& info);
// NativeSignature[] (defined in signature_probe_binding.cc).
Napi::Value SignaturesToJs(Napi::Env env, const std::vector<Signature>& signatures);

}  // namespace dmsnap
