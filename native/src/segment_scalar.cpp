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
  decode_segment_tail(table, state, 0, n, payload + kStateBytes, payload + len, out);
}

void decode_segment_group_scalar(const SegmentJob* jobs, int count) {
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
    case Simd::Scalar: break;
  }
#endif
  return decode_segment_scalar;
}

SegmentGroupDecoder select_segment_group_decoder() {
#if defined(__x86_64__)
  switch (cpu_simd()) {
    case Simd::Avx512: return decode_segment_group_avx512;
    case Simd::Avx2: return decode_segment_group_avx2;
    case Simd::Scalar: break;
  }
#endif
  return decode_segment_group_scalar;
}

const char* segment_decoder_name() {
  switch (cpu_simd()) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    case Simd::Scalar: break;
  }
  return "scalar";
}

}  // namespace wcodec
