// Shared declarations of the N-API glue: per-instance addon state and the functions
// each binding file uses to register itself on the exports object.
#pragma once

#include <napi.h>

#include <cstdint>

namespace dmsnap {

// State of one instance of the addon (one per Node environment, so worker threads
// each get their own). Freed by N-API when the environment shuts down.
struct AddonData {
  Napi::FunctionReference error_factory;  // registered once by lib/ (setErrorFactory)
  Napi::FunctionReference control_class;  // the Control constructor
  Napi::FunctionReference block_device_class;  // the BlockDevice constructor
};

AddonData& GetAddonData(Napi::Env env);

// A uint64 from the kernel as a JS number; throws RangeError if it would lose precision.
Napi::Value SafeNumber(Napi::Env env, uint64_t value);

void RegisterControl(Napi::Env env, Napi::Object exports);
void RegisterBlockDevice(Napi::Env env, Napi::Object exports);
void RegisterDeviceHandle(Napi::Env env, Napi::Object exports);
void RegisterUdevCookie(Napi::Env env, Napi::Object exports);
void RegisterSignatureProbe(Napi::Env env, Napi::Object exports);
void RegisterSystem(Napi::Env env, Napi::Object exports);
void RegisterLoop(Napi::Env env, Napi::Object exports);

// Argument helpers shared by the binding files: they throw TypeError on a mismatch.
std::string StringArg(const Napi::CallbackInfo& info, size_t index, const char* name);
uint32_t Uint32Arg(const Napi::CallbackInfo& info, size_t index, const char* name);
double NumberArg(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace dmsnap
