// AVX2 segment encoder: the 32 lanes are four 8-lane vectors, symbols are encoded from the last
// step to the first as in the scalar encoder, and each vector's renormalisation words are
// compacted (ascending lanes) into the word stream, which grows downwards. Compiled with
// -mavx2 and called only after a runtime check (segment_encode.cpp).
#if defined(__x86_64__)
#include <immintrin.h>

#include <cstring>

#include "segment_encode.h"

namespace wcodec {

namespace {

// kCompress.idx[m]: a permutation moving the lanes set in m, in ascending order, to the top
// positions of the vector (positions 8 - popcount(m) .. 7).
struct CompressTable {
  alignas(32) uint32_t idx[256][8];
  CompressTable() {
    for (int m = 0; m < 256; ++m) {
      const int count = __builtin_popcount(static_cast<unsigned>(m));
      int pos = 8 - count;
      for (int k = 0; k < 8; ++k) idx[m][k] = 0;
      for (int k = 0; k < 8; ++k) {
        if (m & (1 << k)) idx[m][pos++] = static_cast<uint32_t>(k);
      }
    }
  }
};
const CompressTable kCompress;

// x >= y for unsigned 32-bit lanes
inline __m256i cmpge_epu32(__m256i x, __m256i y) {
  return _mm256_cmpeq_epi32(_mm256_max_epu32(x, y), x);
}

inline __m256d to_double_epu32(__m128i x) {
  const __m128i flipped = _mm_xor_si128(x, _mm_set1_epi32(static_cast<int>(0x80000000u)));
  return _mm256_add_pd(_mm256_cvtepi32_pd(flipped), _mm256_set1_pd(2147483648.0));
}

inline __m256i encode_quarter(__m256i x, const uint8_t* sym8, const EncodeTableSimd& t, uint16_t*& w) {
  const __m256i idx = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(sym8)));
  const __m256i fc = _mm256_i32gather_epi32(reinterpret_cast<const int*>(t.freq_cum), idx, 4);
  const __m256i f = _mm256_and_si256(fc, _mm256_set1_epi32(0xfff));
  const __m256i cum = _mm256_srli_epi32(fc, 12);
  // renormalise: lanes with x >= f << 20 emit their low 16 bits and shift them out
  const __m256i need = cmpge_epu32(x, _mm256_slli_epi32(f, 20));
  const int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
  const __m256i top = _mm256_permutevar8x32_epi32(
      x, _mm256_load_si256(reinterpret_cast<const __m256i*>(kCompress.idx[m])));
  const __m256i pick = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1,
                                        0, 1, 4, 5, 8, 9, 12, 13, -1, -1, -1, -1, -1, -1, -1, -1);
  const __m256i words = _mm256_permute4x64_epi64(_mm256_shuffle_epi8(top, pick), 0xD8);
  // 8 words stored below w; the selected ones are the top popcount(m), the rest is overwritten
  // later or lies below the final stream start
  _mm_storeu_si128(reinterpret_cast<__m128i*>(w - 8), _mm256_castsi256_si128(words));
  w -= __builtin_popcount(static_cast<unsigned>(m));
  x = _mm256_blendv_epi8(x, _mm256_srli_epi32(x, 16), need);
  // q = x / f (exact, see EncodeTableSimd), then x' = x + cum + q * (4096 - f)
  const __m128i q_lo = _mm256_cvttpd_epi32(_mm256_div_pd(to_double_epu32(_mm256_castsi256_si128(x)),
                                                         _mm256_cvtepi32_pd(_mm256_castsi256_si128(f))));
  const __m128i q_hi = _mm256_cvttpd_epi32(_mm256_div_pd(to_double_epu32(_mm256_extracti128_si256(x, 1)),
                                                         _mm256_cvtepi32_pd(_mm256_extracti128_si256(f, 1))));
  const __m256i q = _mm256_set_m128i(q_hi, q_lo);
  const __m256i cmpl = _mm256_sub_epi32(_mm256_set1_epi32(kProbScale), f);
  return _mm256_add_epi32(_mm256_add_epi32(x, cum), _mm256_mullo_epi32(q, cmpl));
}

}  // namespace

size_t encode_segment_avx2(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                           const EncodeTableSimd& simd, uint8_t* out) {
  alignas(32) uint32_t state[kLanes];
  for (uint32_t k = 0; k < kLanes; ++k) state[k] = kStateLow;
  uint16_t* const words_end = reinterpret_cast<uint16_t*>(out + kStateBytes) + n;
  uint16_t* w = words_end;
  // the partial last step (scalar), then whole steps, last to first
  uint64_t i = n;
  while (i % kLanes) {
    --i;
    state[i % kLanes] = enc_put(state[i % kLanes], tab.sym[sym[i]], w);
  }
  __m256i x[4];
  for (int q = 0; q < 4; ++q) x[q] = _mm256_load_si256(reinterpret_cast<const __m256i*>(state + 8 * q));
  while (i) {
    i -= kLanes;
    for (int q = 3; q >= 0; --q) x[q] = encode_quarter(x[q], sym + i + 8 * q, simd, w);
  }
  for (int q = 0; q < 4; ++q) _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + 32 * q), x[q]);
  const size_t nwords = static_cast<size_t>(words_end - w);
  return kStateBytes + 2 * nwords;
}

void symbol_presence_avx2(const uint8_t* x, uint64_t n, uint8_t seen[256]) {
  // The map's 32 bytes (segment_encode.h) as two 16-byte shuffle tables in both lanes: a byte v
  // finds its map byte at v >> 3 (the low or the high table by its top bit) and its bit there by
  // a shuffle of v & 7.
  uint64_t bits[4] = {};
  __m256i lo = _mm256_setzero_si256(), hi = lo;
  const __m256i bit_of = _mm256_setr_epi8(1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128, 1, 2, 4, 8, 16,
                                          32, 64, -128, 1, 2, 4, 8, 16, 32, 64, -128);
  uint64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
    const __m256i at = _mm256_and_si256(_mm256_srli_epi16(v, 3), _mm256_set1_epi8(0x1f));
    const __m256i row = _mm256_blendv_epi8(_mm256_shuffle_epi8(lo, at), _mm256_shuffle_epi8(hi, at), v);
    const __m256i bit = _mm256_shuffle_epi8(bit_of, _mm256_and_si256(v, _mm256_set1_epi8(7)));
    const __m256i unseen = _mm256_cmpeq_epi8(_mm256_and_si256(row, bit), _mm256_setzero_si256());
    const unsigned mask = static_cast<unsigned>(_mm256_movemask_epi8(unseen));
    if (!mask) continue;
    for (unsigned m = mask; m; m &= m - 1) mark_symbol(bits, x[i + __builtin_ctz(m)]);
    lo = _mm256_set_epi64x(static_cast<int64_t>(bits[1]), static_cast<int64_t>(bits[0]),
                           static_cast<int64_t>(bits[1]), static_cast<int64_t>(bits[0]));
    hi = _mm256_set_epi64x(static_cast<int64_t>(bits[3]), static_cast<int64_t>(bits[2]),
                           static_cast<int64_t>(bits[3]), static_cast<int64_t>(bits[2]));
  }
  for (; i < n; ++i) mark_symbol(bits, x[i]);
  presence_from_bits(bits, seen);
}

}  // namespace wcodec
#endif
