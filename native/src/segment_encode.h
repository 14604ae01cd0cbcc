// Encoding one rANS segment (the encoder's hot loop). Internal header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "wcodec/rans.h"

namespace wcodec {

// rANS-codes n symbols into `out`, room for kStateBytes + 2 * n bytes: the lane states go to its
// start and the renormalisation words, written backwards, stay at its end (payload_words), so
// that no implementation moves them; returns the payload length, kStateBytes + 2 * words.
// Every implementation produces the same bytes.
size_t encode_segment_scalar(const uint8_t* sym, uint64_t n, const EncodeTable& tab, uint8_t* out);
#if defined(__x86_64__)
size_t encode_segment_avx2(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                           const EncodeTableSimd& simd, uint8_t* out);
size_t encode_segment_avx512(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                             const EncodeTableSimd& simd, uint8_t* out);
#endif

// Encodes with the fastest implementation this CPU runs (capped by WCODEC_SIMD, see cpu_simd).
size_t encode_segment(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                      const EncodeTableSimd& simd, uint8_t* out);

// Where the words of a payload of len bytes for n symbols begin in the encoder's `out`.
inline const uint8_t* payload_words(const uint8_t* out, uint64_t n, size_t len) {
  return out + kStateBytes + 2 * n - (len - kStateBytes);
}

// seen[s] = 1 for every byte value s among x[0..n), 0 for the others: which symbols a table
// built from sampled counts must still give a slot. Every implementation gives the same result.
void symbol_presence(const uint8_t* x, uint64_t n, uint8_t seen[256]);
#if defined(__x86_64__)
void symbol_presence_avx512(const uint8_t* x, uint64_t n, uint8_t seen[256]);
#endif

// One segment to encode, for the group encoders; len is set to the payload length.
struct EncodeJob {
  const uint8_t* sym;
  uint64_t n;
  const EncodeTable* tab;
  const EncodeTableSimd* simd;
  uint8_t* out;
  size_t len;
};
// Encodes up to kMaxEncodeGroup independent segments; where the kernel interleaves them, their
// steps run side by side. The bytes are those of encode_segment.
inline constexpr int kMaxEncodeGroup = 2;
void encode_segment_group(EncodeJob* jobs, int count);
#if defined(__x86_64__)
void encode_segment_group_avx512(EncodeJob* jobs, int count);
#endif

}  // namespace wcodec
