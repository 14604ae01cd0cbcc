// CRC32C by folding: four 512-bit accumulators (sixteen 128-bit lanes) each take the next 256
// bytes' lane after multiplying the lane's previous value forward by 256 bytes; at the end every
// lane is multiplied forward to the last one and the sum is reduced with the crc32 instruction.
//
// Polynomials are reflected: a 128-bit lane loaded from memory holds its first 8 bytes (the high
// coefficients, A_hi) in its low qword, the next 8 (A_lo) in its high qword, bit i of a qword
// being the coefficient of x^(63 - i). A carry-less product of such a qword with a 32-bit reflected
// constant k (bit j is x^(31 - j)) puts the coefficient of x^(94 - s) of A*k at bit s, which is
// x^(127 - s) in the lane frame: the product is A*k*x^33 there. Moving a lane forward by d bits,
// A*x^d = A_hi*x^(64 + d) + A_lo*x^d, therefore takes k = x^(d + 31) for A_hi and x^(d - 33) for
// A_lo, both modulo the polynomial so the products fit in 96 bits.
#include <immintrin.h>

#include "crc32c_internal.h"

namespace wcodec {

namespace {

// The (A_hi, A_lo) constants that move a 128-bit lane forward by `bytes`, as one 128-bit lane.
__m128i fold_constant(uint64_t bytes) {
  const uint64_t d = 8 * bytes;
  return _mm_set_epi64x(crc32c_xpow(d - 33), crc32c_xpow(d + 31));
}

struct FoldConstants {
  __m512i block;     // forward by one 256-byte block, in every lane
  __m512i tail[4];   // accumulator a, lane l: forward to the last lane (zero for the last lane)
  FoldConstants() {
    block = _mm512_broadcast_i32x4(fold_constant(kFoldBlock));
    for (int a = 0; a < 4; ++a) {
      __m128i lanes[4];
      for (int l = 0; l < 4; ++l) {
        const int later = 15 - (4 * a + l);  // lanes after this one in the last block
        lanes[l] = later == 0 ? _mm_setzero_si128() : fold_constant(16 * uint64_t(later));
      }
      tail[a] = _mm512_inserti32x4(
          _mm512_inserti32x4(_mm512_inserti32x4(_mm512_castsi128_si512(lanes[0]), lanes[1], 1), lanes[2], 2),
          lanes[3], 3);
    }
  }
};

inline __m512i fold(__m512i x, __m512i k) {
  return _mm512_xor_si512(_mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11));
}

}  // namespace

uint32_t crc32c_fold_avx512(uint32_t c, const uint8_t* p, size_t n) {
  static const FoldConstants K;
  // The state enters as an xor into the first four message bytes (the CRC is linear).
  __m512i x0 = _mm512_xor_si512(_mm512_loadu_si512(p), _mm512_castsi128_si512(_mm_cvtsi32_si128(static_cast<int>(c))));
  __m512i x1 = _mm512_loadu_si512(p + 64);
  __m512i x2 = _mm512_loadu_si512(p + 128);
  __m512i x3 = _mm512_loadu_si512(p + 192);
  for (size_t i = kFoldBlock; i < n; i += kFoldBlock) {
    const uint8_t* q = p + i;
    x0 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x0, K.block, 0x00),
                                   _mm512_clmulepi64_epi128(x0, K.block, 0x11), _mm512_loadu_si512(q), 0x96);
    x1 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x1, K.block, 0x00),
                                   _mm512_clmulepi64_epi128(x1, K.block, 0x11), _mm512_loadu_si512(q + 64), 0x96);
    x2 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x2, K.block, 0x00),
                                   _mm512_clmulepi64_epi128(x2, K.block, 0x11), _mm512_loadu_si512(q + 128), 0x96);
    x3 = _mm512_ternarylogic_epi64(_mm512_clmulepi64_epi128(x3, K.block, 0x00),
                                   _mm512_clmulepi64_epi128(x3, K.block, 0x11), _mm512_loadu_si512(q + 192), 0x96);
  }
  // Sum of all lanes moved to the last one; that lane itself (x3's lane 3) enters as it is.
  const __m512i last = _mm512_maskz_mov_epi64(0xc0, x3);
  __m512i y = _mm512_ternarylogic_epi64(fold(x0, K.tail[0]), fold(x1, K.tail[1]), fold(x2, K.tail[2]), 0x96);
  y = _mm512_ternarylogic_epi64(y, fold(x3, K.tail[3]), last, 0x96);
  const __m256i y2 = _mm256_xor_si256(_mm512_castsi512_si256(y), _mm512_extracti64x4_epi64(y, 1));
  const __m128i y1 = _mm_xor_si128(_mm256_castsi256_si128(y2), _mm256_extracti128_si256(y2, 1));
  // The remaining 128-bit message R has raw CRC R*x^32 mod P: the crc32 instruction from zero.
  uint64_t r = _mm_crc32_u64(0, static_cast<uint64_t>(_mm_cvtsi128_si64(y1)));
  r = _mm_crc32_u64(r, static_cast<uint64_t>(_mm_extract_epi64(y1, 1)));
  return static_cast<uint32_t>(r);
}

}  // namespace wcodec
