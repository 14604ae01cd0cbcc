// Which SIMD kernels this CPU may run. Internal header.
#pragma once

namespace wcodec {

// True where the CPU has AVX2 and WCODEC_SIMD=scalar is not set in the environment.
bool cpu_uses_avx2();

}  // namespace wcodec
