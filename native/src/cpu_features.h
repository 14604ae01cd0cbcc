// Which SIMD kernels this CPU may run. Internal header.
#pragma once

namespace wcodec {

// The x86 levels are ordered: a CPU that runs one runs those below it. Neon is AArch64's (always
// present there).
enum class Simd { Scalar, Avx2, Avx512, Neon };

// The best level this CPU runs (Avx512 needs AVX-512 F, BW, VL, VBMI, VBMI2 and VPOPCNTDQ), capped
// by WCODEC_SIMD in the environment: "avx2" or "scalar" (other values are ignored).
Simd cpu_simd();

// Whether the AVX-512 decoder looks table entries up by byte permutes (rank tables, rans.h)
// rather than by gathers: on AMD, whose gathers cost several times what they cost Intel's
// cores, measured faster; elsewhere gathers. WCODEC_LOOKUP=permute or =gather in the
// environment decides instead (other values are ignored). The decoded bytes are the same.
bool cpu_prefers_permute_lookups();

}  // namespace wcodec
