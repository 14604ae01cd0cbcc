#include "segment_encode.h"

#include <cstring>

#include "cpu_features.h"

namespace wcodec {

size_t encode_segment_scalar(const uint8_t* sym, uint64_t n, const EncodeTable& tab, uint8_t* out) {
  uint32_t state[kLanes];
  for (uint32_t k = 0; k < kLanes; ++k) state[k] = kStateLow;
  uint16_t* words_end = reinterpret_cast<uint16_t*>(out + kStateBytes) + n;
  uint16_t* w = words_end;
  // The partial last step first, then whole steps with the lane index a constant per slot.
  uint64_t i = n;
  while (i % kLanes) {
    --i;
    state[i % kLanes] = enc_put(state[i % kLanes], tab.sym[sym[i]], w);
  }
  while (i) {
    i -= kLanes;
    const uint8_t* step = sym + i;
    for (int k = kLanes - 1; k >= 0; --k) state[k] = enc_put(state[k], tab.sym[step[k]], w);
  }
  for (uint32_t k = 0; k < kLanes; ++k) std::memcpy(out + 4 * k, &state[k], 4);
  const size_t nwords = static_cast<size_t>(words_end - w);
  return kStateBytes + 2 * nwords;
}

size_t encode_segment(const uint8_t* sym, uint64_t n, const EncodeTable& tab,
                      const EncodeTableSimd& simd, uint8_t* out) {
#if defined(__x86_64__)
  switch (cpu_simd()) {
    case Simd::Avx512: return encode_segment_avx512(sym, n, tab, simd, out);
    case Simd::Avx2: return encode_segment_avx2(sym, n, tab, simd, out);
    case Simd::Scalar:
    case Simd::Neon: break;
  }
#endif
  (void)simd;
  return encode_segment_scalar(sym, n, tab, out);
}

void symbol_presence(const uint8_t* x, uint64_t n, uint8_t seen[256]) {
#if defined(__x86_64__)
  switch (cpu_simd()) {
    case Simd::Avx512: symbol_presence_avx512(x, n, seen); return;
    case Simd::Avx2: symbol_presence_avx2(x, n, seen); return;
    case Simd::Scalar:
    case Simd::Neon: break;
  }
#elif defined(__aarch64__)
  if (cpu_simd() == Simd::Neon) {
    symbol_presence_neon(x, n, seen);
    return;
  }
#endif
  std::memset(seen, 0, 256);
  for (uint64_t i = 0; i < n; ++i) seen[x[i]] = 1;
}

void encode_segment_group(EncodeJob* jobs, int count) {
#if defined(__x86_64__)
  if (cpu_simd() == Simd::Avx512) {
    encode_segment_group_avx512(jobs, count);
    return;
  }
#endif
  for (int k = 0; k < count; ++k) {
    EncodeJob& j = jobs[k];
    j.len = encode_segment(j.sym, j.n, *j.tab, *j.simd, j.out);
  }
}

}  // namespace wcodec
