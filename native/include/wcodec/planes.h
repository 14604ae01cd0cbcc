// dtype -> byte planes. Plane k of an element holds one byte of its little-endian word, most
// significant byte first (plane 0 = MSB). Floats are first rotated left by one bit, so the sign
// moves below the mantissa and the exponent bits lead: bf16 plane 0 is exactly the exponent,
// fp32 plane 0 is exactly the exponent, fp16 plane 0 is the 5 exponent bits and 3 mantissa bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "wcodec/format.h"

namespace wcodec {

// Splits n elements starting at src into planes: planes[k][i] = byte k of element i.
void split_planes(const uint8_t* src, size_t n, const DTypeLayout& layout, uint8_t* const* planes);

// The inverse: dst element i is rebuilt from planes[k][i].
void merge_planes(const uint8_t* const* planes, size_t n, const DTypeLayout& layout, uint8_t* dst);

}  // namespace wcodec
