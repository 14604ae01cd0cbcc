#include "wcodec/crc32c.h"

#include <cstring>

#include "cpu_features.h"
#include "crc32c_internal.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <nmmintrin.h>
#define WCODEC_X86 1
#endif

namespace wcodec {

namespace {

constexpr uint32_t kPoly = 0x82F63B78u;

struct SliceTables {
  uint32_t t[8][256];
  SliceTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (kPoly & (0u - (c & 1u)));
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int k = 1; k < 8; ++k) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xffu];
    }
  }
};

const SliceTables& tables() {
  static const SliceTables instance;
  return instance;
}

uint32_t crc_portable(uint32_t c, const uint8_t* p, size_t n) {
  const SliceTables& T = tables();
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= c;
    c = T.t[7][w & 0xff] ^ T.t[6][(w >> 8) & 0xff] ^ T.t[5][(w >> 16) & 0xff] ^
        T.t[4][(w >> 24) & 0xff] ^ T.t[3][(w >> 32) & 0xff] ^ T.t[2][(w >> 40) & 0xff] ^
        T.t[1][(w >> 48) & 0xff] ^ T.t[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) c = (c >> 8) ^ T.t[0][(c ^ *p++) & 0xffu];
  return c;
}

uint32_t multmodp(uint32_t a, uint32_t b);
uint32_t x2nmodp(uint64_t n, int k);

#ifdef WCODEC_X86
// The crc32 instruction has a latency of 3 cycles and a throughput of 1, so three independent
// streams over adjacent blocks run about 3x faster; they are joined by multiplying the earlier
// registers by x^(8 * bytes that follow) modulo the polynomial (the CRC is linear).
constexpr size_t kBlock = 4096;

__attribute__((target("sse4.2"))) uint32_t crc_hw(uint32_t c, const uint8_t* p, size_t n) {
  static const uint32_t shift1 = x2nmodp(kBlock, 3);
  static const uint32_t shift2 = x2nmodp(2 * kBlock, 3);
  while (n >= 3 * kBlock) {
    uint64_t r0 = c, r1 = 0, r2 = 0;
    for (size_t i = 0; i < kBlock; i += 8) {
      uint64_t w0, w1, w2;
      std::memcpy(&w0, p + i, 8);
      std::memcpy(&w1, p + kBlock + i, 8);
      std::memcpy(&w2, p + 2 * kBlock + i, 8);
      r0 = _mm_crc32_u64(r0, w0);
      r1 = _mm_crc32_u64(r1, w1);
      r2 = _mm_crc32_u64(r2, w2);
    }
    c = multmodp(shift2, static_cast<uint32_t>(r0)) ^ multmodp(shift1, static_cast<uint32_t>(r1)) ^
        static_cast<uint32_t>(r2);
    p += 3 * kBlock;
    n -= 3 * kBlock;
  }
  uint64_t c64 = c;
  while (n >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    c64 = _mm_crc32_u64(c64, w);
    p += 8;
    n -= 8;
  }
  uint32_t c32 = static_cast<uint32_t>(c64);
  while (n--) c32 = _mm_crc32_u8(c32, *p++);
  return c32;
}
const bool kHaveHw = __builtin_cpu_supports("sse4.2");
// Folding pays from a few blocks on; below that the three crc32 streams are as fast.
constexpr size_t kFoldMin = 8 * kFoldBlock;
const bool kHaveFold = kHaveHw && cpu_simd() == Simd::Avx512 && __builtin_cpu_supports("vpclmulqdq");
#endif

// Multiplication modulo the (reflected) polynomial, as in zlib's crc32_combine.
uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31;
  uint32_t p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ kPoly : b >> 1;
  }
  return p;
}

// x^(2^k) modulo the polynomial, k = 0..63.
struct PowerTable {
  uint32_t p[64];
  PowerTable() {
    uint32_t v = 1u << 30;  // x^1
    for (int k = 0; k < 64; ++k) {
      p[k] = v;
      v = multmodp(v, v);
    }
  }
};

uint32_t x2nmodp(uint64_t n, int k) {
  static const PowerTable T;
  uint32_t v = 1u << 31;  // x^0
  while (n) {
    if (n & 1) v = multmodp(T.p[k & 63], v);
    n >>= 1;
    ++k;
  }
  return v;
}

}  // namespace

uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc) {
  uint32_t c = ~crc;
#ifdef WCODEC_X86
  if (kHaveFold && n >= kFoldMin) {
    const size_t m = n - n % kFoldBlock;
    c = crc32c_fold_avx512(c, data, m);
    data += m;
    n -= m;
  }
  if (kHaveHw) return ~crc_hw(c, data, n);
#endif
  return ~crc_portable(c, data, n);
}

uint32_t crc32c_xpow(uint64_t e) { return x2nmodp(e, 0); }

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b) {
  return multmodp(x2nmodp(len_b, 3), crc_a) ^ crc_b;
}

}  // namespace wcodec
