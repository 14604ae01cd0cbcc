// Table lookups by byte permutes (AVX-512 VBMI), shared by the encoder and the decoder: a
// 256-entry byte table is four 64-byte vectors, and a two-table permute covers 128 entries, so
// two permutes and a blend on the index's top bit look up 64 bytes at once, where a 16-lane
// gather loads 16 dwords at several times the cost (on AMD Zen most of all). Include only from
// sources compiled with AVX-512 F/BW/VBMI, and call only after the runtime check.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>

#include <cstdint>

namespace wcodec {

// Entry idx[i] of the 256-byte table t (64-aligned) for each byte i; `high` holds the top bit
// of each index byte (_mm512_movepi8_mask(idx)), computed once by callers that look up several
// tables with one index.
__attribute__((always_inline)) inline __m512i lookup256(const uint8_t* t, __m512i idx, __mmask64 high) {
  const __m512i lo = _mm512_permutex2var_epi8(_mm512_load_si512(t), idx, _mm512_load_si512(t + 64));
  const __m512i hi = _mm512_permutex2var_epi8(_mm512_load_si512(t + 128), idx, _mm512_load_si512(t + 192));
  return _mm512_mask_blend_epi8(high, lo, hi);
}

// Byte lanes 16q .. 16q + 15 (q = 0..3) of three byte vectors as 16 dwords b0 | b1 << 8 |
// b2 << 16: a freq | cum << 12 entry stored as three byte tables, widened for the 32-bit state
// arithmetic. The word permute is the same for q = 2k and 2k + 1; inlined, it is computed once.
__attribute__((always_inline)) inline __m512i bytes_to_dwords(__m512i b0, __m512i b1, __m512i b2, int q) {
  // words of (b0, b1) for byte lanes 0-31, and 32-63
  alignas(64) static constexpr uint8_t kWords[2][64] = {
      {0,  64, 1,  65, 2,  66, 3,  67, 4,  68, 5,  69, 6,  70, 7,  71, 8,  72, 9,  73, 10, 74,
       11, 75, 12, 76, 13, 77, 14, 78, 15, 79, 16, 80, 17, 81, 18, 82, 19, 83, 20, 84, 21, 85,
       22, 86, 23, 87, 24, 88, 25, 89, 26, 90, 27, 91, 28, 92, 29, 93, 30, 94, 31, 95},
      {32, 96,  33, 97,  34, 98,  35, 99,  36, 100, 37, 101, 38, 102, 39, 103, 40, 104, 41, 105, 42, 106,
       43, 107, 44, 108, 45, 109, 46, 110, 47, 111, 48, 112, 49, 113, 50, 114, 51, 115, 52, 116, 53, 117,
       54, 118, 55, 119, 56, 120, 57, 121, 58, 122, 59, 123, 60, 124, 61, 125, 62, 126, 63, 127}};
  // dword j of lane group q: word 16 (q mod 2) + j of those words and byte 16q + j of b2
  alignas(64) static constexpr uint8_t kDwords[4][64] = {
      {0,  1,  64, 0, 2,  3,  65, 0, 4,  5,  66, 0, 6,  7,  67, 0, 8,  9,  68, 0, 10, 11,
       69, 0,  12, 13, 70, 0, 14, 15, 71, 0, 16, 17, 72, 0, 18, 19, 73, 0, 20, 21, 74, 0,
       22, 23, 75, 0, 24, 25, 76, 0, 26, 27, 77, 0, 28, 29, 78, 0, 30, 31, 79, 0},
      {32, 33, 80, 0, 34, 35, 81, 0, 36, 37, 82, 0, 38, 39, 83, 0, 40, 41, 84, 0, 42, 43,
       85, 0,  44, 45, 86, 0, 46, 47, 87, 0, 48, 49, 88, 0, 50, 51, 89, 0, 52, 53, 90, 0,
       54, 55, 91, 0, 56, 57, 92, 0, 58, 59, 93, 0, 60, 61, 94, 0, 62, 63, 95, 0},
      {0,  1,  96,  0, 2,  3,  97,  0, 4,  5,  98,  0, 6,  7,  99,  0, 8,  9,  100, 0, 10, 11,
       101, 0, 12, 13, 102, 0, 14, 15, 103, 0, 16, 17, 104, 0, 18, 19, 105, 0, 20, 21, 106, 0,
       22, 23, 107, 0, 24, 25, 108, 0, 26, 27, 109, 0, 28, 29, 110, 0, 30, 31, 111, 0},
      {32, 33, 112, 0, 34, 35, 113, 0, 36, 37, 114, 0, 38, 39, 115, 0, 40, 41, 116, 0, 42, 43,
       117, 0, 44, 45, 118, 0, 46, 47, 119, 0, 48, 49, 120, 0, 50, 51, 121, 0, 52, 53, 122, 0,
       54, 55, 123, 0, 56, 57, 124, 0, 58, 59, 125, 0, 60, 61, 126, 0, 62, 63, 127, 0}};
  constexpr __mmask64 kLow3 = 0x7777777777777777ull;  // byte 3 of each dword stays zero
  const __m512i words = _mm512_permutex2var_epi8(b0, _mm512_load_si512(kWords[q >> 1]), b1);
  return _mm512_maskz_permutex2var_epi8(kLow3, words, _mm512_load_si512(kDwords[q]), b2);
}

}  // namespace wcodec
#endif
