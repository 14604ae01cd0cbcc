// Decoding one rANS segment (the hot loop) and undoing the delta predictor. Internal header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "wcodec/rans.h"

namespace wcodec {

// Decodes n symbols from a segment payload (kStateBytes of final states, then 16-bit words) into
// out. Throws FormatError if a state is out of range, the words run out or are left over, or a
// final state differs from L.
using SegmentDecoder = void (*)(const DecodeTable& table, const uint8_t* payload, size_t len,
                                uint8_t* out, size_t n);

void decode_segment_scalar(const DecodeTable& table, const uint8_t* payload, size_t len,
                           uint8_t* out, size_t n);
#if defined(__x86_64__)
void decode_segment_avx2(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                         size_t n);
void decode_segment_avx512(const DecodeTable& table, const uint8_t* payload, size_t len,
                           uint8_t* out, size_t n);
#elif defined(__aarch64__)
void decode_segment_neon(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                         size_t n);
#endif

// Where a group decoder may put a two-byte dtype's elements directly, merged with the other plane
// as it decodes this one (planes.h: element i is hi << 8 | lo, rotated right by one bit for
// floats), instead of leaving the plane's bytes for a separate merge pass.
struct MergeTarget {
  const uint8_t* partner;  // the other plane's bytes of the segment
  uint8_t* dst;            // the segment's elements
  bool high;               // the decoded plane is the high byte
  bool rotate;
};

// One segment to decode, for the group decoders. With `merge` set, a decoder that merges (the
// AVX-512 one) writes elements 0..merged-1 to merge->dst and only symbols merged..n-1 to out;
// the others leave merged at 0.
struct SegmentJob {
  const DecodeTable* table;
  const uint8_t* payload;
  size_t len;
  uint8_t* out;
  size_t n;
  const MergeTarget* merge = nullptr;
  size_t merged = 0;
};
// Decodes up to kMaxGroup independent segments at once: a single segment's steps are bound by
// latency, so interleaving several keeps more work in flight per core. On error it throws without
// saying which segment failed; callers decode them singly to find out.
inline constexpr int kMaxGroup = 4;
using SegmentGroupDecoder = void (*)(SegmentJob* jobs, int count);
void decode_segment_group_scalar(SegmentJob* jobs, int count);
#if defined(__x86_64__)
void decode_segment_group_avx2(SegmentJob* jobs, int count);
void decode_segment_group_avx512(SegmentJob* jobs, int count);
#elif defined(__aarch64__)
void decode_segment_group_neon(SegmentJob* jobs, int count);
#endif
SegmentGroupDecoder select_segment_group_decoder();

// The fastest decoder this CPU runs; WCODEC_SIMD=avx2 or WCODEC_SIMD=scalar in the environment
// caps the choice.
SegmentDecoder select_segment_decoder();
const char* segment_decoder_name();

// Scalar continuation shared by all decoders: decodes symbols i..n-1 from lane states `state`
// (i a multiple of 32 or the first symbol), reading words from *wp up to wend, then checks that
// the words are used up and every state is back at L.
void decode_segment_tail(const DecodeTable& table, uint32_t state[kLanes], size_t i, size_t n,
                         const uint8_t* wp, const uint8_t* wend, uint8_t* out);

// x[i] += x[i-1] wherever element b + i does not start a row (b: index of x[0] in the chunk);
// x[0] is never predicted.
void undo_delta(uint8_t* x, uint64_t b, uint64_t n, uint64_t row);

}  // namespace wcodec
