// AVX-512 segment encoder: the 32 lanes are two 16-lane vectors, symbols are encoded from the
// last step to the first as in the scalar encoder, and each vector's renormalisation words are
// compressed (ascending lanes) into the word stream, which grows downwards. Compiled with
// AVX-512 F/BW/VL/VBMI/VBMI2 and called only after a runtime check (segment_encode.cpp).
//
// The quotient x / f uses no division: x < f << 20 after renormalisation, so q = x / f < 2^20,
// and in single precision x * (1/f), with 1/f from the 14-bit reciprocal estimate and one Newton
// step, is within a relative 2^-21.9 (five roundings of 2^-24 and the squared estimate error)
// of x / f, that is within 0.26 of it: truncated, it is q - 1, q or q + 1. The remainder
// x - q f then lies in (-f, 2f), exact in 32-bit arithmetic, and one comparison each way
// corrects both; x' = (q << 12) + remainder + cum needs no second multiply.
#if defined(__x86_64__)
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "permute_avx512.h"
#include "segment_encode.h"

namespace wcodec {

namespace {

// The freq_cum entries of 32 symbols, lanes 0-15 in fc0 and 16-31 in fc1, by byte permutes of
// the three byte tables instead of gathers (permute_avx512.h).
inline void lookup32(const uint8_t* sym32, const EncodeTableSimd& t, __m512i& fc0, __m512i& fc1) {
  // lanes 32-63 are looked up too and never used
  const __m512i idx = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sym32)));
  const __mmask64 high = _mm512_movepi8_mask(idx);
  const __m512i b0 = lookup256(t.bytes[0], idx, high);
  const __m512i b1 = lookup256(t.bytes[1], idx, high);
  const __m512i b2 = lookup256(t.bytes[2], idx, high);
  fc0 = bytes_to_dwords(b0, b1, b2, 0);
  fc1 = bytes_to_dwords(b0, b1, b2, 1);
}

inline __m512i encode_half(__m512i x, __m512i fc, uint16_t*& w) {
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
  // x' = (q << 12) + (x - q f) + cum, q = x / f
  const __m512 fs = _mm512_cvtepi32_ps(f);
  __m512 r = _mm512_rcp14_ps(fs);
  r = _mm512_mul_ps(r, _mm512_fnmadd_ps(fs, r, _mm512_set1_ps(2.0f)));
  __m512i q = _mm512_cvttps_epu32(_mm512_mul_ps(_mm512_cvtepu32_ps(x), r));
  __m512i rem = _mm512_sub_epi32(x, _mm512_mullo_epi32(q, f));
  const __m512i one = _mm512_set1_epi32(1);
  const __mmask16 over = _mm512_cmplt_epi32_mask(rem, _mm512_setzero_si512());
  const __mmask16 under = _mm512_cmpge_epi32_mask(rem, f);
  q = _mm512_mask_add_epi32(_mm512_mask_sub_epi32(q, over, q, one), under, q, one);
  rem = _mm512_mask_sub_epi32(_mm512_mask_add_epi32(rem, over, rem, f), under, rem, f);
  return _mm512_add_epi32(_mm512_add_epi32(_mm512_slli_epi32(q, 12), rem), cum);
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
  __m512i fc0, fc1;
  lookup32(job.sym + c.steps * kLanes, *job.simd, fc0, fc1);
  c.x1 = encode_half(c.x1, fc1, c.w);
  c.x0 = encode_half(c.x0, fc0, c.w);
}

size_t close_coder(const Coder& c, uint8_t* out) {
  _mm512_storeu_si512(out, c.x0);
  _mm512_storeu_si512(out + 64, c.x1);
  const size_t nwords = static_cast<size_t>(c.words_end - c.w);
  return kStateBytes + 2 * nwords;
}

// A segment's steps form one dependency chain (lookup, quotient, remainder), so N segments run
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

void symbol_presence_avx512(const uint8_t* x, uint64_t n, uint8_t seen[256]) {
  // The map (segment_encode.h) also as four registers of 0 / 0xff bytes, made from its words
  // (not loaded from bytes just stored, which would stall on store forwarding): a block of 64
  // bytes is one lookup of its bytes, as in lookup32.
  uint64_t bits[4] = {};
  __m512i t[4];
  for (int k = 0; k < 4; ++k) t[k] = _mm512_setzero_si512();
  uint64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512i v = _mm512_loadu_si512(x + i);
    const __m512i lo = _mm512_permutex2var_epi8(t[0], v, t[1]);
    const __m512i hi = _mm512_permutex2var_epi8(t[2], v, t[3]);
    const __mmask64 known = _mm512_movepi8_mask(_mm512_mask_blend_epi8(_mm512_movepi8_mask(v), lo, hi));
    if (known == ~__mmask64{0}) continue;
    for (uint64_t m = ~known; m; m &= m - 1) mark_symbol(bits, x[i + __builtin_ctzll(m)]);
    for (int k = 0; k < 4; ++k) t[k] = _mm512_movm_epi8(bits[k]);
  }
  for (; i < n; ++i) mark_symbol(bits, x[i]);
  presence_from_bits(bits, seen);
}

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
