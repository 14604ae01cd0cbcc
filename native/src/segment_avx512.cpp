// AVX-512 segment decoder: the 32 lanes are two 16-lane vectors. Compiled with AVX-512 F/BW/VL/VBMI/VBMI2
// and called only after a runtime check (segment_scalar.cpp). Renormalisation is one masked
// expand: the 32-bit mask of lanes below L places the next popcount(mask) stream words in those
// lanes, in lane order. A step's latency (gather, multiply, expand) bounds a single segment, so
// the group decoder runs the steps of several independent segments side by side.
#if defined(__x86_64__)
#include <immintrin.h>

#include "segment_decode.h"

namespace wcodec {

namespace {

struct Stream {
  const uint32_t* table;
  __m512i x[2];
  const uint8_t* wp;
  const uint8_t* wend;
  uint8_t* out;
  size_t n;
};

Stream open_stream(const SegmentJob& job) {
  Stream s{job.table->entry, {}, job.payload + kStateBytes, job.payload + job.len, job.out, job.n};
  const __m512i low = _mm512_set1_epi32(static_cast<int>(kStateLow));
  s.x[0] = _mm512_loadu_si512(job.payload);
  s.x[1] = _mm512_loadu_si512(job.payload + 64);
  if (_mm512_cmplt_epu32_mask(s.x[0], low) | _mm512_cmplt_epu32_mask(s.x[1], low)) {
    throw FormatError("corrupt segment: initial rANS state below 2^16");
  }
  return s;
}

// A step consumes at most 32 words and loads 64 bytes from the current position, so steps run
// only while 64 bytes remain; the rest goes to the bounds-checked tail.
inline bool can_step(size_t i, size_t n, const uint8_t* wp, const uint8_t* wend) {
  return i + kLanes <= n && wend - wp >= 64;
}

// Decodes symbols out[0..31]. The states are passed as values (not through the Stream) so that
// they stay in registers across the interleaved steps.
__attribute__((always_inline)) inline __m256i step(const uint32_t* table, __m512i& x0, __m512i& x1,
                                                   const uint8_t*& wp) {
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1);
  const __m512i low = _mm512_set1_epi32(static_cast<int>(kStateLow));
  const __m512i slot0 = _mm512_and_si512(x0, slot_mask);
  const __m512i slot1 = _mm512_and_si512(x1, slot_mask);
  const __m512i e0 = _mm512_i32gather_epi32(slot0, table, 4);
  const __m512i e1 = _mm512_i32gather_epi32(slot1, table, 4);
  const __m512i off0 = _mm512_and_si512(_mm512_srli_epi32(e0, 8), slot_mask);
  const __m512i off1 = _mm512_and_si512(_mm512_srli_epi32(e1, 8), slot_mask);
  x0 = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(e0, 20), _mm512_srli_epi32(x0, kProbBits)), off0);
  x1 = _mm512_add_epi32(_mm512_mullo_epi32(_mm512_srli_epi32(e1, 20), _mm512_srli_epi32(x1, kProbBits)), off1);
  // the low byte of each entry is its symbol: one byte permute gathers all 32 (VBMI)
  const __m512i low_bytes = _mm512_set_epi8(
      0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 124, 120, 116, 112,
      108, 104, 100, 96, 92, 88, 84, 80, 76, 72, 68, 64, 60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0);
  const __m256i symbols = _mm512_castsi512_si256(_mm512_permutex2var_epi8(e0, low_bytes, e1));
  const __mmask16 need0 = _mm512_cmplt_epu32_mask(x0, low);
  const __mmask16 need1 = _mm512_cmplt_epu32_mask(x1, low);
  const __mmask32 need = _mm512_kunpackw(need1, need0);
  const __m512i words = _mm512_maskz_expand_epi16(need, _mm512_loadu_si512(wp));
  // lanes that take no word keep x (their word is zero)
  x0 = _mm512_or_si512(_mm512_mask_slli_epi32(x0, need0, x0, 16),
                       _mm512_cvtepu16_epi32(_mm512_castsi512_si256(words)));
  x1 = _mm512_or_si512(_mm512_mask_slli_epi32(x1, need1, x1, 16),
                       _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(words, 1)));
  wp += 2 * __builtin_popcount(static_cast<unsigned>(need));
  return symbols;
}

// Elements i..i+31 of a merge target from this plane's symbols i..i+31.
inline void store_merged(const MergeTarget& m, size_t i, __m256i symbols) {
  const __m512i mine = _mm512_cvtepu8_epi16(symbols);
  const __m512i other = _mm512_cvtepu8_epi16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(m.partner + i)));
  __m512i v = m.high ? _mm512_or_si512(_mm512_slli_epi16(mine, 8), other)
                     : _mm512_or_si512(_mm512_slli_epi16(other, 8), mine);
  if (m.rotate) v = _mm512_shrdi_epi16(v, v, 1);  // rotated right by one bit
  _mm512_storeu_si512(m.dst + 2 * i, v);
}

// Steps every segment that can still take a whole step, so that segments of different lengths
// keep interleaving until the longest ends; then each segment's scalar tail.
template <int N>
void decode_group(SegmentJob* jobs) {
  Stream s[N];
  for (int k = 0; k < N; ++k) s[k] = open_stream(jobs[k]);
  __m512i x0[N], x1[N];
  const uint8_t* wp[N];
  size_t i[N];
  for (int k = 0; k < N; ++k) {
    x0[k] = s[k].x[0];
    x1[k] = s[k].x[1];
    wp[k] = s[k].wp;
    i[k] = 0;
  }
  for (bool any = true; any;) {
    any = false;
#pragma GCC unroll 4
    for (int k = 0; k < N; ++k) {
      if (!can_step(i[k], s[k].n, wp[k], s[k].wend)) continue;
      const __m256i symbols = step(s[k].table, x0[k], x1[k], wp[k]);
      if (jobs[k].merge) {
        store_merged(*jobs[k].merge, i[k], symbols);
      } else {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(s[k].out + i[k]), symbols);
      }
      i[k] += kLanes;
      any = true;
    }
  }
  for (int k = 0; k < N; ++k) {
    alignas(64) uint32_t state[kLanes];
    _mm512_store_si512(state, x0[k]);
    _mm512_store_si512(state + 16, x1[k]);
    decode_segment_tail(*jobs[k].table, state, i[k], s[k].n, wp[k], s[k].wend, s[k].out);
    if (jobs[k].merge) jobs[k].merged = i[k];
  }
}

}  // namespace

void decode_segment_avx512(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                           size_t n) {
  SegmentJob job{&table, payload, len, out, n};
  decode_group<1>(&job);
}

void decode_segment_group_avx512(SegmentJob* jobs, int count) {
  static_assert(kMaxGroup == 4, "one case per group size");
  switch (count) {
    case 1: decode_group<1>(jobs); break;
    case 2: decode_group<2>(jobs); break;
    case 3: decode_group<3>(jobs); break;
    default: decode_group<4>(jobs); break;
  }
}

}  // namespace wcodec
#endif
