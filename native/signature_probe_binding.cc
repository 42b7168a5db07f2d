// N-API glue for the signature probe (signature_probe.h).
#include "addon.h"
#include "async_work.h"
#include "js_values.h"
#include "signature_probe.h"

namespace dmsnap {

Napi::Value SignaturesToJs(Napi::Env env, const std::vector<Signature>& result) {
  Napi::Array out = Napi::Array::New(env, result.size());
  for (size_t i = 0; i < result.size(); i++) {
    const Signature& signature = result[i];
    Napi::Object item = Napi::Object::New(env);
    item.Set("type", Napi::String::New(env, signature.type));
    item.Set("usage", Napi::String::New(env, signature.usage));
    item.Set("label", Napi::String::New(env, signature.label));
    item.Set("uuid", Napi::String::New(env, signature.uuid));
    item.Set("offset", SafeNumber(env, signature.offset));
    out.Set(static_cast<uint32_t>(i), item);
  }
  return out;
}

namespace {

using Signatures = std::vector<Signature>;

Napi::Value ProbeSignaturesJs(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "path");
  return PromiseWork<Signatures>::Run(
      info.Env(), "dmsnap.probeSignatures", [path] { return ProbeSignatures(path); },
      [](Napi::Env env, Signatures& result) { return SignaturesToJs(env, result); });
}

}  // namespace

void RegisterSignatureProbe(Napi::Env env, Napi::Object exports) {
  exports.Set("probeSignatures", Napi::Function::New(env, ProbeSignaturesJs, "probeSignatures"));
}

}  // namespace dmsnap
