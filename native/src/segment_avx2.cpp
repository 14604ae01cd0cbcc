// AVX2 segment decoder: the 32 lanes are four 8-lane vectors. Compiled with -mavx2 and called only
// after a runtime check (segment_scalar.cpp). One step decodes 32 symbols; its latency (gather,
// multiply, renormalisation) rather than its instruction count bounds a single segment, so the
// group decoder runs the steps of two independent segments side by side (more did not pay: the
// four-vector states of more segments do not fit the 16 registers).
#if defined(__x86_64__)
#include <immintrin.h>

#include "segment_decode.h"

namespace wcodec {

namespace {

// kExpand.idx[m][k]: for lane k that needs a word under renormalisation mask m, the index of its
// word among the next eight (the number of lower lanes that also need one).
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

struct Stream {
  const DecodeTable* table;
  __m256i x[4];
  const uint8_t* wp;
  const uint8_t* wend;
  uint8_t* out;
  size_t i;
  size_t n;
};

Stream open_stream(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out, size_t n) {
  Stream s{&table, {}, payload + kStateBytes, payload + len, out, 0, n};
  const __m256i zero = _mm256_setzero_si256();
  __m256i low = zero;
  for (int q = 0; q < 4; ++q) {
    s.x[q] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(payload + 32 * q));
    low = _mm256_or_si256(low, _mm256_cmpeq_epi32(_mm256_srli_epi32(s.x[q], 16), zero));
  }
  if (!_mm256_testz_si256(low, low)) throw FormatError("corrupt segment: initial rANS state below 2^16");
  return s;
}

// A step consumes at most 32 words (64 bytes) and each quarter loads 16 bytes from its current
// position, so steps run only while 64 bytes remain; the rest goes to the bounds-checked tail.
inline bool can_step(const Stream& s) { return s.i + kLanes <= s.n && s.wend - s.wp >= 64; }

inline void step(Stream& s) {
  const __m256i slot_mask = _mm256_set1_epi32(kProbScale - 1);
  __m256i sym[4];
  for (int q = 0; q < 4; ++q) {
    const __m256i slot = _mm256_and_si256(s.x[q], slot_mask);
    const __m256i e = _mm256_i32gather_epi32(reinterpret_cast<const int*>(s.table->entry), slot, 4);
    const __m256i f = _mm256_srli_epi32(e, 20);
    const __m256i offset = _mm256_and_si256(_mm256_srli_epi32(e, 8), slot_mask);
    sym[q] = _mm256_and_si256(e, _mm256_set1_epi32(0xff));
    s.x[q] = _mm256_add_epi32(_mm256_mullo_epi32(f, _mm256_srli_epi32(s.x[q], kProbBits)), offset);
  }
  // Renormalise in lane order: each lane below L takes the next word of the shared stream.
  for (int q = 0; q < 4; ++q) {
    const __m256i need = _mm256_cmpeq_epi32(_mm256_srli_epi32(s.x[q], 16), _mm256_setzero_si256());
    const int m = _mm256_movemask_ps(_mm256_castsi256_ps(need));
    const __m256i words = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s.wp)));
    const __m256i idx = _mm256_load_si256(reinterpret_cast<const __m256i*>(kExpand.idx[m]));
    const __m256i shifted = _mm256_or_si256(_mm256_slli_epi32(s.x[q], 16), _mm256_permutevar8x32_epi32(words, idx));
    s.x[q] = _mm256_blendv_epi8(s.x[q], shifted, need);
    s.wp += 2 * __builtin_popcount(static_cast<unsigned>(m));
  }
  // 32 symbols, one per 32-bit lane, packed to bytes in lane order.
  const __m256i p01 = _mm256_packus_epi32(sym[0], sym[1]);
  const __m256i p23 = _mm256_packus_epi32(sym[2], sym[3]);
  const __m256i bytes = _mm256_permutevar8x32_epi32(_mm256_packus_epi16(p01, p23),
                                                    _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(s.out + s.i), bytes);
  s.i += kLanes;
}

void finish(Stream& s) {
  while (can_step(s)) step(s);
  alignas(32) uint32_t state[kLanes];
  for (int q = 0; q < 4; ++q) _mm256_store_si256(reinterpret_cast<__m256i*>(state + 8 * q), s.x[q]);
  decode_segment_tail(*s.table, state, s.i, s.n, s.wp, s.wend, s.out);
}

}  // namespace

void decode_segment_avx2(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                         size_t n) {
  Stream s = open_stream(table, payload, len, out, n);
  finish(s);
}

template <int N>
void decode_group(const SegmentJob* jobs) {
  Stream s[N] = {};
  for (int k = 0; k < N; ++k) {
    s[k] = open_stream(*jobs[k].table, jobs[k].payload, jobs[k].len, jobs[k].out, jobs[k].n);
  }
  for (;;) {
    bool all = true;
    for (int k = 0; k < N; ++k) all &= can_step(s[k]);
    if (!all) break;
    for (int k = 0; k < N; ++k) step(s[k]);
  }
  for (int k = 0; k < N; ++k) finish(s[k]);
}

void decode_segment_group_avx2(SegmentJob* jobs, int count) {
  for (; count >= 2; count -= 2, jobs += 2) decode_group<2>(jobs);
  if (count == 1) decode_group<1>(jobs);
}

}  // namespace wcodec
#endif
