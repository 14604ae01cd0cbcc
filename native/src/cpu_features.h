// Which SIMD kernels this CPU may run. Internal header.
#pragma once

namespace wcodec {

// The x86 levels are ordered: a CPU that runs one runs those below it. Neon is AArch64's (always
// present there).
enum class Simd { Scalar, Avx2, Avx512, Neon };

// The best level this CPU runs (Avx512 needs AVX-512 F, BW, VL, VBMI and VBMI2), capped by WCODEC_SIMD
// in the environment: "avx2" or "scalar" (other values are ignored).
Simd cpu_simd();

}  // namespace wcodec
