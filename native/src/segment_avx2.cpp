// AVX2 segment decoder: the 32 lanes are four 8-lane vectors. Compiled with -mavx2 and called only
// after a runtime check (segment_scalar.cpp).
#if defined(__x86_64__)
#include <immintrin.h>

#include "segment_decode.h"

namespace wcodec {

namespace {

// kExpand[m][k]: for lane k that needs a word under renormalisation mask m, the index of its word
// among the next eight (the number of lower lanes that also need one).
struct ExpandTable {
  alignas(32) uint32_t idx[256][8];
  ExpandTable() {
    for (int m = 0; m < 256; ++m) {
      int c = 0;
      for (int k = 0; k < 8; ++k) {
        idx[m][k] = static_cast<uint32_t>(c);
        if (m & (1 << k)) ++c;
      }
    }
  }
};
const ExpandTable kExpand;

inline __m256i decode_quarter(const DecodeTable& table, __m256i x, __m256i* sym) {
  const __m256i slot_mask = _mm256_set1_epi32(kProbScale - 1);
  const __m256i slot = _mm256_and_si256(x, slot_mask);
  const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(table.entry), slot, 4);
  const __m256i f = _mm256_and_si256(_mm256_srli_epi32(e, 8), slot_mask);
  const __m256i c = _mm256_srli_epi32(e, 20);
  *sym = _mm256_and_si256(e, _mm256_set1_epi32(0xff));
  return _mm256_sub_epi32(_mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(x, kProbBits)), slot), c);
}

// Shifts one word into each lane whose state fell below L; words are taken in lane order.
inline __m256i renorm_quarter(__m256i x, const uint8_t*& wp) {
  const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(x, 16), _mm256_setzero_si256());
  const int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
  const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(wp)));
  const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.idx[m]));
  const __m256i placed = _mm256_permutevar8x32_epi32(words, idx);
  const __m256i shifted = _mm256_or_si256(_mm256_slli_epi32(x, 16), placed);
  wp += 2 * __builtin_popcount(static_cast<unsigned>(m));
  return _mm256_blendv_epi8(x, shifted, need);
}

}  // namespace

void decode_segment_avx2(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                         size_t n) {
  __m256i x[4];
  for (int q = 0; q < 4; ++q) x[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(payload + 32 * q));
  const __m256i zero = _mm256_setzero_si256();
  __m256i low = zero;
  for (int q = 0; q < 4; ++q) low = _mm256_or_si256(low, _mm256_cmpeq_epi32(_mm256_srli_epi32(x[q], 16), zero));
  if (!_mm256_testz_si256(low, low)) throw FormatError("corrupt segment: initial rANS state below 2^16");

  const uint8_t* wp = payload + kStateBytes;
  const uint8_t* const wend = payload + len;
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  size_t i = 0;
  // A step consumes at most 32 words (64 bytes) and each quarter loads 16 bytes from its current
  // position, so the fast loop runs only while 64 bytes remain; the tail is bounds-checked.
  while (i + kLanes <= n && wend - wp >= 64) {
    __m256i s[4];
    for (int q = 0; q < 4; ++q) x[q] = decode_quarter(table, x[q], &s[q]);
    for (int q = 0; q < 4; ++q) x[q] = renorm_quarter(x[q], wp);
    const __m256i p01 = _mm256_packus_epi32(s[0], s[1]);
    const __m256i p23 = _mm256_packus_epi32(s[2], s[3]);
    const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23), order);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), bytes);
    i += kLanes;
  }
  alignas(32) uint32_t state[kLanes];
  for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(state + 8 * q), x[q]);
  decode_segment_tail(table, state, i, n, wp, wend, out);
}

}  // namespace wcodec
#endif
