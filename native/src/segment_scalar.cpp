#include <cstring>

#include "cpu_features.h"
#include "segment_decode.h"

namespace wcodec {

void decode_segment_tail(const DecodeTable& table, uint32_t state[kLanes], size_t i, size_t n,
                         const uint8_t* wp, const uint8_t* wend, uint8_t* out) {
  for (; i < n; ++i) {
    uint32_t x = state[i & (kLanes - 1)];
    const uint32_t slot = x & (kProbScale - 1);
    const uint32_t e = table.entry[slot];
    out[i] = static_cast<uint8_t>(dec_symbol(e));
    x = dec_freq(e) * (x >> kProbBits) + dec_offset(e);
    if (x < kStateLow) {
      if (wend - wp < 2) throw FormatError("truncated segment: renormalisation words run out");
      x = (x << 16) | load_u16(wp);
      wp += 2;
    }
    state[i & (kLanes - 1)] = x;
  }
  if (wp != wend) throw FormatError("corrupt segment: unread renormalisation words remain");
  for (uint32_t k = 0; k < kLanes; ++k) {
    if (state[k] != kStateLow) throw FormatError("corrupt segment: final rANS state mismatch");
  }
}

void decode_segment_scalar(const DecodeTable& table, const uint8_t* payload, size_t len,
                           uint8_t* out, size_t n) {
  uint32_t state[kLanes];
  for (uint32_t k = 0; k < kLanes; ++k) {
    state[k] = load_u32(payload + 4 * k);
    if (state[k] < kStateLow) throw FormatError("corrupt segment: initial rANS state below 2^16");
  }
  const uint8_t* wp = payload + kStateBytes;
  const uint8_t* const wend = payload + len;
  size_t i = 0;
  // Whole steps of 32 symbols while a step's words (at most one per lane) are all there, without
  // branches: whether a lane takes a word is as random as the data, so a branch on it would be
  // mispredicted often. The next word is read whether it is taken or not (it is in bounds), and
  // the word pointer advances by 0 or 2: lanes then depend on one another only through that add.
  for (; i + kLanes <= n && static_cast<size_t>(wend - wp) >= 2 * kLanes; i += kLanes) {
    for (uint32_t k = 0; k < kLanes; ++k) {
      uint32_t x = state[k];
      const uint32_t e = table.entry[x & (kProbScale - 1)];
      out[i + k] = static_cast<uint8_t>(dec_symbol(e));
      x = dec_freq(e) * (x >> kProbBits) + dec_offset(e);
      // all ones when the lane takes a word: a mask, which compilers keep free of branches (a
      // conditional expression here became a branch)
      const uint32_t take = 0u - static_cast<uint32_t>(x < kStateLow);
      const uint32_t shifted = (x << 16) | load_u16(wp);
      x = (x & ~take) | (shifted & take);
      wp += take & 2u;
      state[k] = x;
    }
  }
  decode_segment_tail(table, state, i, n, wp, wend, out);
}

void decode_segment_group_scalar(SegmentJob* jobs, int count) {
  for (int k = 0; k < count; ++k) {
    decode_segment_scalar(*jobs[k].table, jobs[k].payload, jobs[k].len, jobs[k].out, jobs[k].n);
  }
}

void undo_delta(uint8_t* x, uint64_t b, uint64_t n, uint64_t row) {
  uint64_t col = b % row;
  uint8_t prev = n ? x[0] : 0;
  for (uint64_t i = 1; i < n; ++i) {
    col = col + 1 == row ? 0 : col + 1;
    const uint8_t v = col == 0 ? x[i] : static_cast<uint8_t>(x[i] + prev);
    x[i] = v;
    prev = v;
  }
}

SegmentDecoder select_segment_decoder() {
#if defined(__x86_64__)
  switch (cpu_simd()) {
    case Simd::Avx512: return decode_segment_avx512;
    case Simd::Avx2: return decode_segment_avx2;
    case Simd::Scalar:
    case Simd::Neon: break;
  }
#elif defined(__aarch64__)
  if (cpu_simd() == Simd::Neon) return decode_segment_neon;
#endif
  return decode_segment_scalar;
}

SegmentGroupDecoder select_segment_group_decoder() {
#if defined(__x86_64__)
  switch (cpu_simd()) {
    case Simd::Avx512: return decode_segment_group_avx512;
    case Simd::Avx2: return decode_segment_group_avx2;
    case Simd::Scalar:
    case Simd::Neon: break;
  }
#elif defined(__aarch64__)
  if (cpu_simd() == Simd::Neon) return decode_segment_group_neon;
#endif
  return decode_segment_group_scalar;
}

const char* segment_decoder_name() {
  switch (cpu_simd()) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    case Simd::Neon: return "neon";
    case Simd::Scalar: break;
  }
  return "scalar";
}

}  // namespace wcodec
