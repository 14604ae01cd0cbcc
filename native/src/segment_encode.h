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
void symbol_presence_avx2(const uint8_t* x, uint64_t n, uint8_t seen[256]);
void symbol_presence_avx512(const uint8_t* x, uint64_t n, uint8_t seen[256]);
#elif defined(__aarch64__)
void symbol_presence_neon(const uint8_t* x, uint64_t n, uint8_t seen[256]);
#endif
// The vector kernels keep the seen symbols as a 256-bit map, bit s & 63 of word s >> 6, whose
// bytes in memory order are the map of symbols 8k..8k+7 (k = 0..31): a block of bytes is
// tested by table lookups into those bytes, and only a block holding a symbol not seen before
// updates the map, a rare event once the common symbols are in.
inline void mark_symbol(uint64_t bits[4], uint8_t s) { bits[s >> 6] |= uint64_t{1} << (s & 63); }
inline void presence_from_bits(const uint64_t bits[4], uint8_t seen[256]) {
  for (int s = 0; s < 256; ++s) seen[s] = static_cast<uint8_t>((bits[s >> 6] >> (s & 63)) & 1);
}

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
