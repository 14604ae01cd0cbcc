#include "cpu_features.h"

#include <cstdlib>
#include <cstring>

namespace wcodec {

bool cpu_uses_avx2() {
#if defined(__x86_64__)
  static const bool use = [] {
    const char* env = std::getenv("WCODEC_SIMD");
    const bool forced_scalar = env != nullptr && std::strcmp(env, "scalar") == 0;
    return !forced_scalar && __builtin_cpu_supports("avx2");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace wcodec
