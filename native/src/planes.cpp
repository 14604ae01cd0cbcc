#include "wcodec/planes.h"

#include <cstring>

namespace wcodec {

namespace {

inline uint16_t rotl16(uint16_t v) { return static_cast<uint16_t>((v << 1) | (v >> 15)); }
inline uint16_t rotr16(uint16_t v) { return static_cast<uint16_t>((v >> 1) | (v << 15)); }
inline uint32_t rotl32(uint32_t v) { return (v << 1) | (v >> 31); }
inline uint32_t rotr32(uint32_t v) { return (v >> 1) | (v << 31); }

// The loops below are written so that the compiler vectorises them (no aliasing between planes
// and the element buffer is assumed by the callers).
template <bool Rotate>
void split16(const uint8_t* src, size_t n, uint8_t* __restrict hi, uint8_t* __restrict lo) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t v;
    std::memcpy(&v, src + 2 * i, 2);
    if (Rotate) v = rotl16(v);
    hi[i] = static_cast<uint8_t>(v >> 8);
    lo[i] = static_cast<uint8_t>(v);
  }
}

template <bool Rotate>
void merge16(const uint8_t* __restrict hi, const uint8_t* __restrict lo, size_t n, uint8_t* dst) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t v = static_cast<uint16_t>((hi[i] << 8) | lo[i]);
    if (Rotate) v = rotr16(v);
    std::memcpy(dst + 2 * i, &v, 2);
  }
}

template <bool Rotate>
void split32(const uint8_t* src, size_t n, uint8_t* const* p) {
  uint8_t* __restrict p0 = p[0];
  uint8_t* __restrict p1 = p[1];
  uint8_t* __restrict p2 = p[2];
  uint8_t* __restrict p3 = p[3];
  for (size_t i = 0; i < n; ++i) {
    uint32_t v;
    std::memcpy(&v, src + 4 * i, 4);
    if (Rotate) v = rotl32(v);
    p0[i] = static_cast<uint8_t>(v >> 24);
    p1[i] = static_cast<uint8_t>(v >> 16);
    p2[i] = static_cast<uint8_t>(v >> 8);
    p3[i] = static_cast<uint8_t>(v);
  }
}

template <bool Rotate>
void merge32(const uint8_t* const* p, size_t n, uint8_t* dst) {
  const uint8_t* __restrict p0 = p[0];
  const uint8_t* __restrict p1 = p[1];
  const uint8_t* __restrict p2 = p[2];
  const uint8_t* __restrict p3 = p[3];
  for (size_t i = 0; i < n; ++i) {
    uint32_t v = (uint32_t{p0[i]} << 24) | (uint32_t{p1[i]} << 16) | (uint32_t{p2[i]} << 8) | p3[i];
    if (Rotate) v = rotr32(v);
    std::memcpy(dst + 4 * i, &v, 4);
  }
}

}  // namespace

void split_planes(const uint8_t* src, size_t n, const DTypeLayout& layout, uint8_t* const* planes) {
  switch (layout.itemsize) {
    case 1: std::memcpy(planes[0], src, n); break;
    case 2:
      layout.rotate ? split16<true>(src, n, planes[0], planes[1])
                    : split16<false>(src, n, planes[0], planes[1]);
      break;
    case 4: layout.rotate ? split32<true>(src, n, planes) : split32<false>(src, n, planes); break;
  }
}

void merge_planes(const uint8_t* const* planes, size_t n, const DTypeLayout& layout, uint8_t* dst) {
  switch (layout.itemsize) {
    case 1: std::memcpy(dst, planes[0], n); break;
    case 2:
      layout.rotate ? merge16<true>(planes[0], planes[1], n, dst)
                    : merge16<false>(planes[0], planes[1], n, dst);
      break;
    case 4: layout.rotate ? merge32<true>(planes, n, dst) : merge32<false>(planes, n, dst); break;
  }
}

}  // namespace wcodec
