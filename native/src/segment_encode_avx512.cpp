// AVX-512 segment encoder: the 32 lanes are two 16-lane vectors, symbols are encoded from the
// last step to the first as in the scalar encoder, and each vector's renormalisation words are
// compressed (ascending lanes) into the word stream, which grows downwards. Compiled with
// AVX-512 F/BW/VL/VBMI2 and called only after a runtime check (segment_encode.cpp).
//
// The quotient x / f uses no division: r = 1/f from the 14-bit reciprocal estimate and two
// Newton steps has a relative error below 2^-50, and x < f << 20 after renormalisation, so
// x * r is within 2^-29 of x / f = q + k / f (0 <= k < f <= 4095). Adding 2^-13 and truncating
// therefore gives q: the fraction k / f is 0 or lies in [2^-12, 1 - 2^-12].
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "segment_encode.h"

namespace wcodec {

namespace {

inline __m256i quotient(__m256i x, __m256i f) {
  const __m512d fd = _mm512_cvtepi32_pd(f);
  const __m512d two = _mm512_set1_pd(2.0);
  __m512d r = _mm512_rcp14_pd(fd);
  r = _mm512_mul_pd(r, _mm512_fnmadd_pd(fd, r, two));
  r = _mm512_mul_pd(r, _mm512_fnmadd_pd(fd, r, two));
  const __m512d q = _mm512_fmadd_pd(_mm512_cvtepu32_pd(x), r, _mm512_set1_pd(1.0 / 8192));
  return _mm512_cvttpd_epu32(q);
}

inline __m512i encode_half(__m512i x, const uint8_t* sym16, const EncodeTableSimd& t, uint16_t*& w) {
  const __m512i idx = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sym16)));
  const __m512i fc = _mm512_i32gather_epi32(idx, t.freq_cum, 4);
  const __m512i f = _mm512_and_si512(fc, _mm512_set1_epi32(0xfff));
  const __m512i cum = _mm512_srli_epi32(fc, 12);
  // renormalise: lanes with x >= f << 20 emit their low 16 bits and shift them out
  const __mmask16 need = _mm512_cmpge_epu32_mask(x, _mm512_slli_epi32(f, 20));
  const int count = __builtin_popcount(need);
  const __m256i packed = _mm256_maskz_compress_epi16(need, _mm512_cvtepi32_epi16(x));
  // the selected words move to the top `count` of 16 positions, stored below w; the rest is
  // overwritten later or lies below the final stream start
  const __m256i top = _mm256_maskz_expand_epi16(static_cast<__mmask16>(0xffffu << (16 - count)), packed);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(w - 16), top);
  w -= count;
  x = _mm512_mask_srli_epi32(x, need, x, 16);
  // x' = x + cum + q * (4096 - f), q = x / f
  const __m256i q_lo = quotient(_mm512_castsi512_si256(x), _mm512_castsi512_si256(f));
  const __m256i q_hi = quotient(_mm512_extracti64x4_epi64(x, 1), _mm512_extracti64x4_epi64(f, 1));
  const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(q_lo), q_hi, 1);
  const __m512i cmpl = _mm512_sub_epi32(_mm512_set1_epi32(kProbScale), f);
  return _mm512_add_epi32(_mm512_add_epi32(x, cum), _mm512_mullo_epi32(q, cmpl));
}

// One segment's encoder: its lane states (in registers while the loop runs) and word stream.
struct Coder {
  __m512i x0, x1;
  uint16_t* w;
  uint16_t* words_end;
  uint64_t steps;  // whole steps left, the last first
};

Coder open_coder(const EncodeJob& job) {
  alignas(64) uint32_t state[kLanes];
  for (uint32_t k = 0; k < kLanes; ++k) state[k] = kStateLow;
  uint16_t* const words_end = reinterpret_cast<uint16_t*>(job.out + kStateBytes) + job.n;
  uint16_t* w = words_end;
  // the partial last step (scalar) first
  for (uint64_t i = job.n; i % kLanes;) {
    --i;
    state[i % kLanes] = enc_put(state[i % kLanes], job.tab->sym[job.sym[i]], w);
  }
  return {_mm512_load_si512(state), _mm512_load_si512(state + 16), w, words_end, job.n / kLanes};
}

inline void encode_step(Coder& c, const EncodeJob& job) {
  --c.steps;
  const uint8_t* sym = job.sym + c.steps * kLanes;
  c.x1 = encode_half(c.x1, sym + 16, *job.simd, c.w);
  c.x0 = encode_half(c.x0, sym, *job.simd, c.w);
}

size_t close_coder(const Coder& c, uint8_t* out) {
  _mm512_storeu_si512(out, c.x0);
  _mm512_storeu_si512(out + 64, c.x1);
  const size_t nwords = static_cast<size_t>(c.words_end - c.w);
  return kStateBytes + 2 * nwords;
}

// A segment's steps form one dependency chain (gather, quotient, multiply), so N segments run
// side by side: each first runs alone for the steps it has beyond the shortest, then all step
// together down to the first.
template <int N>
void encode_group(EncodeJob* jobs) {
  Coder c[N];
  uint64_t common = ~uint64_t{0};
  for (int k = 0; k < N; ++k) {
    c[k] = open_coder(jobs[k]);
    common = std::min(common, c[k].steps);
  }
  for (int k = 0; k < N; ++k) {
    while (c[k].steps > common) encode_step(c[k], jobs[k]);
  }
  while (common--) {
#pragma GCC unroll 4
    for (int k = 0; k < N; ++k) encode_step(c[k], jobs[k]);
  }
  for (int k = 0; k < N; ++k) jobs[k].len = close_coder(c[k], jobs[k].out);
}

}  // namespace

size_t encode_segment_avx512(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                             const EncodeTableSimd& simd, uint8_t* out) {
  EncodeJob job{sym, n, &tab, &simd, out, 0};
  encode_group<1>(&job);
  return job.len;
}

void encode_segment_group_avx512(EncodeJob* jobs, int count) {
  static_assert(kMaxEncodeGroup == 2, "one case per group size");
  count == 1 ? encode_group<1>(jobs) : encode_group<2>(jobs);
}

}  // namespace wcodec
#endif
