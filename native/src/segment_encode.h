// Encoding one rANS segment (the encoder's hot loop). Internal header.
#pragma once

#include <cstddef>
#include <cstdint>

#include "wcodec/rans.h"

namespace wcodec {

// rANS-codes n symbols into `out` (room for kStateBytes + 2 * n bytes); returns the payload
// length. Every implementation produces the same bytes.
size_t encode_segment_scalar(const uint8_t* sym, uint64_t n, const EncodeTable& tab, uint8_t* out);
#if defined(__x86_64__)
size_t encode_segment_avx2(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                           const EncodeTableSimd& simd, uint8_t* out);
#endif

// Encodes with the fastest implementation this CPU runs (WCODEC_SIMD=scalar forces scalar).
size_t encode_segment(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                      const EncodeTableSimd& simd, uint8_t* out);

}  // namespace wcodec
