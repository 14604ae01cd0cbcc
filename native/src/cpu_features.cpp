#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace wcodec {

Simd cpu_simd() {
#if defined(__x86_64__)
  static const Simd level = [] {
    Simd best = Simd::Scalar;
    if (__builtin_cpu_supports("avx2")) best = Simd::Avx2;
    if (best == Simd::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
        __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vpopcntdq")) {
      best = Simd::Avx512;
    }
    const char* env = std::getenv("WCODEC_SIMD");
    if (env != nullptr && std::strcmp(env, "scalar") == 0) return Simd::Scalar;
    if (env != nullptr && std::strcmp(env, "avx2") == 0 && best == Simd::Avx512) return Simd::Avx2;
    return best;
  }();
  return level;
#elif defined(__aarch64__)
  static const Simd level = [] {
    const char* env = std::getenv("WCODEC_SIMD");
    return env != nullptr && std::strcmp(env, "scalar") == 0 ? Simd::Scalar : Simd::Neon;
  }();
  return level;
#else
  return Simd::Scalar;
#endif
}

bool cpu_prefers_permute_lookups() {
  static const bool permute = [] {
    const char* env = std::getenv("WCODEC_LOOKUP");
    if (env != nullptr && std::strcmp(env, "permute") == 0) return true;
    if (env != nullptr && std::strcmp(env, "gather") == 0) return false;
#if defined(__x86_64__)
    return __builtin_cpu_is("amd") != 0;
#else
    return false;
#endif
  }();
  return permute;
}

}  // namespace wcodec
