// AVX-512 segment decoder: the 32 lanes are two 16-lane vectors. Compiled with AVX-512
// F/BW/VL/VBMI/VBMI2/VPOPCNTDQ and called only after a runtime check (segment_scalar.cpp).
// Renormalisation places the next popcount(mask) stream words in the lanes below L, in lane
// order. A step's latency (lookup, multiply, renormalisation) bounds a single segment, so the
// group decoder runs the steps of several independent segments side by side. Entries are looked
// up by gathers, or, where cpu_prefers_permute_lookups, by byte permutes of the rank tables, two
// segments of one table at a time.
#if defined(__x86_64__)
#include <immintrin.h>

#include "cpu_features.h"
#include "permute_avx512.h"
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

// Renormalises the 32 lanes of one segment: the lanes below L take the next words of its stream
// in lane order (lanes that take none keep x: their word is zero).
// Renormalises the 32 lanes of one segment: the lanes below L take the next words of its stream
// in lane order (lanes that take none keep x: their word is zero). One masked expand places them.
__attribute__((always_inline)) inline void renormalise(__m512i& x0, __m512i& x1, const uint8_t*& wp) {
  const __m512i low = _mm512_set1_epi32(static_cast<int>(kStateLow));
  const __mmask16 need0 = _mm512_cmplt_epu32_mask(x0, low);
  const __mmask16 need1 = _mm512_cmplt_epu32_mask(x1, low);
  const __mmask32 need = _mm512_kunpackw(need1, need0);
  const __m512i words = _mm512_maskz_expand_epi16(need, _mm512_loadu_si512(wp));
  x0 = _mm512_or_si512(_mm512_mask_slli_epi32(x0, need0, x0, 16),
                       _mm512_cvtepu16_epi32(_mm512_castsi512_si256(words)));
  x1 = _mm512_or_si512(_mm512_mask_slli_epi32(x1, need1, x1, 16),
                       _mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(words, 1)));
  wp += 2 * __builtin_popcount(static_cast<unsigned>(need));
}

// The same by a prefix count and a word permute, which AMD's cores run faster than the expand:
// lane j takes word popcount(need & (2^j - 1)); the permute's upper half of each lane indexes a
// zero vector, so that each lane gets one zero-extended word.
__attribute__((always_inline)) inline void renormalise_by_count(__m512i& x0, __m512i& x1, const uint8_t*& wp) {
  const __m512i low = _mm512_set1_epi32(static_cast<int>(kStateLow));
  const __mmask16 need0 = _mm512_cmplt_epu32_mask(x0, low);
  const __mmask16 need1 = _mm512_cmplt_epu32_mask(x1, low);
  const uint32_t need = static_cast<uint32_t>(_mm512_kunpackw(need1, need0));
  const __m512i all = _mm512_set1_epi32(static_cast<int>(need));
  const __m512i below0 = _mm512_set_epi32(0x7fff, 0x3fff, 0x1fff, 0xfff, 0x7ff, 0x3ff, 0x1ff, 0xff, 0x7f, 0x3f, 0x1f,
                                          0xf, 0x7, 0x3, 0x1, 0x0);
  const __m512i below1 = _mm512_or_si512(_mm512_slli_epi32(below0, 16), _mm512_set1_epi32(0xffff));
  const __m512i zero_half = _mm512_set1_epi32(32 << 16);
  const __m512i words = _mm512_loadu_si512(wp);
  const __m512i idx0 = _mm512_or_si512(_mm512_popcnt_epi32(_mm512_and_si512(all, below0)), zero_half);
  const __m512i idx1 = _mm512_or_si512(_mm512_popcnt_epi32(_mm512_and_si512(all, below1)), zero_half);
  x0 = _mm512_mask_or_epi32(x0, need0, _mm512_slli_epi32(x0, 16),
                            _mm512_permutex2var_epi16(words, idx0, _mm512_setzero_si512()));
  x1 = _mm512_mask_or_epi32(x1, need1, _mm512_slli_epi32(x1, 16),
                            _mm512_permutex2var_epi16(words, idx1, _mm512_setzero_si512()));
  wp += 2 * __builtin_popcount(need);
}

// Decodes symbols out[0..31]. The states are passed as values (not through the Stream) so that
// they stay in registers across the interleaved steps.
__attribute__((always_inline)) inline __m256i step(const uint32_t* table, __m512i& x0, __m512i& x1,
                                                   const uint8_t*& wp) {
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1);
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
  renormalise(x0, x1, wp);
  return symbols;
}

// One step of two segments A and B that share a table, without gathers: the 64 lanes' slots
// become bytes (bucket, offset), the rank tables (rans.h) give each lane's rank, symbol and
// freq | cum << 12 by byte permutes, and the states advance as in step(). Returns A's 32 symbols
// in bytes 0-31, B's in 32-63.
__attribute__((always_inline)) inline __m512i rank_step(const RankTables& t, __m512i& a0, __m512i& a1, __m512i& b0,
                                                        __m512i& b1, const uint8_t*& wpa, const uint8_t*& wpb) {
  // byte 0 of each 32-bit lane of two vectors, in lane order (bytes 32-63: don't care)
  alignas(64) static constexpr uint8_t kLowBytes[64] = {
      0,  4,  8,  12, 16, 20, 24, 28, 32, 36, 40,  44,  48,  52,  56,  60,  64, 68, 72, 76, 80, 84,
      88, 92, 96, 100, 104, 108, 112, 116, 120, 124, 0, 4, 8, 12, 16, 20, 24, 28, 32, 36, 40, 44,
      48, 52, 56, 60, 64, 68, 72, 76, 80, 84, 88, 92, 96, 100, 104, 108, 112, 116, 120, 124};
  const __m512i pack = _mm512_load_si512(kLowBytes);
  const __m512i nibble = _mm512_set1_epi8(15);
  // slot bits 4-11 (the bucket) and 0-3 (the offset) of the 64 lanes as bytes
  const __m512i bucket = _mm512_inserti64x4(
      _mm512_permutex2var_epi8(_mm512_srli_epi32(a0, 4), pack, _mm512_srli_epi32(a1, 4)),
      _mm512_castsi512_si256(_mm512_permutex2var_epi8(_mm512_srli_epi32(b0, 4), pack, _mm512_srli_epi32(b1, 4))), 1);
  const __m512i offset = _mm512_and_si512(
      _mm512_inserti64x4(_mm512_permutex2var_epi8(a0, pack, a1),
                         _mm512_castsi512_si256(_mm512_permutex2var_epi8(b0, pack, b1)), 1),
      nibble);
  const __mmask64 high = _mm512_movepi8_mask(bucket);
  __m512i rank = lookup256(t.first, bucket, high);
  const __m512i d01 = lookup256(t.bounds01, bucket, high);
  const __m512i d2 = lookup256(t.bounds2, bucket, high);
  // offset + d >= 16 (a later range has begun) as the top bit of offset + 112 + d
  const __m512i o112 = _mm512_add_epi8(offset, _mm512_set1_epi8(112));
  const __m512i one = _mm512_set1_epi8(1);
  const __m512i d[3] = {_mm512_and_si512(d01, nibble), _mm512_and_si512(_mm512_srli_epi16(d01, 4), nibble),
                        _mm512_and_si512(d2, nibble)};
  for (int k = 0; k < 3; ++k) {
    rank = _mm512_mask_add_epi8(rank, _mm512_movepi8_mask(_mm512_add_epi8(o112, d[k])), rank, one);
  }
  // complex buckets: complex[16 k + offset], with (k + 1) << 4 in bounds2
  const __m512i at = _mm512_sub_epi8(_mm512_or_si512(_mm512_andnot_si512(nibble, d2), offset), _mm512_set1_epi8(16));
  rank = _mm512_mask_blend_epi8(_mm512_cmpge_epu8_mask(d2, _mm512_set1_epi8(16)), rank,
                                lookup256(t.complex, at, _mm512_movepi8_mask(at)));
  const __mmask64 rank_high = _mm512_movepi8_mask(rank);
  const __m512i symbols = lookup256(t.symbol, rank, rank_high);
  const __m512i f0 = lookup256(t.fc[0], rank, rank_high);
  const __m512i f1 = lookup256(t.fc[1], rank, rank_high);
  const __m512i f2 = lookup256(t.fc[2], rank, rank_high);
  const __m512i slot_mask = _mm512_set1_epi32(kProbScale - 1);
  __m512i* x[4] = {&a0, &a1, &b0, &b1};
  for (int q = 0; q < 4; ++q) {
    const __m512i fc = bytes_to_dwords(f0, f1, f2, q);
    const __m512i f = _mm512_and_si512(fc, slot_mask);
    const __m512i cum = _mm512_srli_epi32(fc, 12);
    // x' = f (x >> 12) + slot - cum
    *x[q] = _mm512_sub_epi32(
        _mm512_add_epi32(_mm512_mullo_epi32(f, _mm512_srli_epi32(*x[q], kProbBits)), _mm512_and_si512(*x[q], slot_mask)),
        cum);
  }
  renormalise_by_count(a0, a1, wpa);
  renormalise_by_count(b0, b1, wpb);
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
// keep interleaving until the longest ends; then each segment's scalar tail. The states and
// positions come from open_stream or from the steps rank_step took.
template <int N>
void finish_group(SegmentJob* jobs, const Stream* s, __m512i* x0, __m512i* x1, const uint8_t** wp, size_t* i) {
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

// N segments (N = 2 or 4), each pair (0, 1) and (2, 3) sharing a table whose rank tables are
// usable: the pairs take rank steps side by side while all four can, then finish_group.
template <int N>
void decode_group(SegmentJob* jobs, bool by_ranks) {
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
  if constexpr (N % 2 == 0) {
    while (by_ranks) {
      for (int k = 0; k < N; ++k) by_ranks &= can_step(i[k], s[k].n, wp[k], s[k].wend);
      if (!by_ranks) break;
#pragma GCC unroll 2
      for (int k = 0; k < N; k += 2) {
        const __m512i symbols =
            rank_step(jobs[k].table->ranks, x0[k], x1[k], x0[k + 1], x1[k + 1], wp[k], wp[k + 1]);
        for (int h = 0; h < 2; ++h) {
          const __m256i half = h ? _mm512_extracti64x4_epi64(symbols, 1) : _mm512_castsi512_si256(symbols);
          if (jobs[k + h].merge) {
            store_merged(*jobs[k + h].merge, i[k + h], half);
          } else {
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(s[k + h].out + i[k + h]), half);
          }
          i[k + h] += kLanes;
        }
      }
    }
  }
  finish_group<N>(jobs, s, x0, x1, wp, i);
}

bool pair_by_ranks(const SegmentJob* pair) {
  return cpu_prefers_permute_lookups() && pair[0].table == pair[1].table && pair[0].table->ranks.usable;
}

}  // namespace

void decode_segment_avx512(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                           size_t n) {
  SegmentJob job{&table, payload, len, out, n};
  decode_group<1>(&job, false);
}

void decode_segment_group_avx512(SegmentJob* jobs, int count) {
  static_assert(kMaxGroup == 4, "one case per group size");
  // Pairs of segments that share a table step by ranks, without gathers (AMD's gathers cost
  // several times the permutes that replace them); the rest step by gathers.
  switch (count) {
    case 1: decode_group<1>(jobs, false); break;
    case 2: decode_group<2>(jobs, pair_by_ranks(jobs)); break;
    case 3:
      if (pair_by_ranks(jobs)) {
        decode_group<2>(jobs, true);
        decode_group<1>(jobs + 2, false);
      } else {
        decode_group<3>(jobs, false);
      }
      break;
    default:
      if (pair_by_ranks(jobs) && pair_by_ranks(jobs + 2)) {
        decode_group<4>(jobs, true);
      } else {
        decode_group<4>(jobs, false);
      }
      break;
  }
}

}  // namespace wcodec
#endif
