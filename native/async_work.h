// Runs a piece of core work on the libuv thread pool and settles a Promise with its
// result. Core work reports failures by throwing SysError; the glue turns that into
// the JS error made by the factory that lib/ registers once (see addon.cc).
#pragma once

#include <napi.h>

#include <functional>
#include <optional>
#include <string>

#include "sys_error.h"

namespace dmsnap {

// Builds the JS error for a failed system call (defined in addon.cc).
Napi::Value MakeSysError(Napi::Env env, const SysError& error);

template <typename Result>
class PromiseWork : public Napi::AsyncWorker {
 public:
  using Work = std::function<Result()>;
  using ToJs = std::function<Napi::Value(Napi::Env, Result&)>;

  static Napi::Promise Run(Napi::Env env, const char* name, Work work, ToJs to_js) {
    auto* worker = new PromiseWork(env, name, std::move(work), std::move(to_js));
    Napi::Promise promise = worker->deferred_.Promise();
    worker->Queue();
    return promise;
  }

 protected:
  void Execute() override {
    try {
      result_.emplace(work_());
    } catch (const SysError& e) {
      sys_error_.emplace(e);
    } catch (const std::exception& e) {
      message_ = e.what();
    }
  }

  // A worker thread being terminated refuses calls into JavaScript, and node-addon-api
  // then throws from places no caller can catch: nothing is waiting for this result.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);
    } catch (const Napi::Error&) {
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    // Settling can fail only while a worker thread is being terminated (no more calls
    // into JavaScript): nothing is waiting then, and nothing may be thrown from here.
    try {
      if (sys_error_) {
        deferred_.Reject(MakeSysError(env, *sys_error_));
      } else if (!result_) {
        deferred_.Reject(Napi::Error::New(env, "dmsnap native call failed: " + message_).Value());
      } else {
        try {
          deferred_.Resolve(to_js_(env, *result_));
        } catch (const Napi::Error& e) {
          deferred_.Reject(e.Value());
        }
      }
    } catch (const Napi::Error&) {
    }
  }

 private:
  PromiseWork(Napi::Env env, const char* name, Work work, ToJs to_js)
      : Napi::AsyncWorker(env, name),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        to_js_(std::move(to_js)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  ToJs to_js_;
  std::optional<Result> result_;
  std::optional<SysError> sys_error_;
  std::string message_;
};

// Runs core work that returns nothing; the promise resolves with undefined.
struct Nothing {};

template <typename Fn>
Napi::Promise RunVoid(Napi::Env env, const char* name, Fn work) {
  return PromiseWork<Nothing>::Run(
      env, name,
      [work] {
        work();
        return Nothing{};
      },
      [](Napi::Env env, Nothing&) -> Napi::Value { return env.Undefined(); });
}

}  // namespace dmsnap
