// The cost of the decoder's table lookups on this CPU (built and run by bench_lookup.py): eight
// independent chains, each taking its next 16 indexes from the values it loaded (as rANS states
// do), into a 16 KiB table (a decode table's size), with three ways to load 16 entries:
// vpgatherdd, 16 scalar loads through memory, and 16 scalar loads inserted into lanes.
// Prints one line per way: nanoseconds per 16 lookups.
#include <immintrin.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

__m512i gathered(__m512i idx, const uint32_t* t) { return _mm512_i32gather_epi32(idx, t, 4); }

__m512i through_memory(__m512i idx, const uint32_t* t) {
  alignas(64) uint32_t ix[16];
  alignas(64) uint32_t v[16];
  _mm512_store_si512(ix, idx);
  for (int j = 0; j < 16; ++j) v[j] = t[ix[j]];
  return _mm512_load_si512(v);
}

__m512i inserted(__m512i idx, const uint32_t* t) {
  alignas(64) uint32_t ix[16];
  _mm512_store_si512(ix, idx);
  __m128i q[4];
  for (int k = 0; k < 4; ++k) {
    __m128i a = _mm_cvtsi32_si128(static_cast<int>(t[ix[4 * k]]));
    a = _mm_insert_epi32(a, static_cast<int>(t[ix[4 * k + 1]]), 1);
    a = _mm_insert_epi32(a, static_cast<int>(t[ix[4 * k + 2]]), 2);
    a = _mm_insert_epi32(a, static_cast<int>(t[ix[4 * k + 3]]), 3);
    q[k] = a;
  }
  __m512i r = _mm512_castsi128_si512(q[0]);
  r = _mm512_inserti32x4(r, q[1], 1);
  r = _mm512_inserti32x4(r, q[2], 2);
  return _mm512_inserti32x4(r, q[3], 3);
}

template <__m512i (*Load)(__m512i, const uint32_t*)>
double ns_per_16(const uint32_t* table, long rounds) {
  __m512i idx[8];
  __m512i acc[8];
  for (int k = 0; k < 8; ++k) {
    idx[k] = _mm512_set_epi32(k, 17 + k, 33, 49, 65 + k, 81, 97, 113, 129, 145 + k, 161, 177,
                              193, 209, 225, 241);
    acc[k] = _mm512_setzero_si512();
  }
  const __m512i mask = _mm512_set1_epi32(4095);
  const auto start = std::chrono::steady_clock::now();
  for (long i = 0; i < rounds; ++i) {
    for (int k = 0; k < 8; ++k) {
      const __m512i e = Load(idx[k], table);
      acc[k] = _mm512_xor_si512(acc[k], e);
      idx[k] = _mm512_and_si512(_mm512_add_epi32(idx[k], e), mask);
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  __m512i all = acc[0];
  for (int k = 1; k < 8; ++k) all = _mm512_xor_si512(all, acc[k]);
  alignas(64) uint32_t sink[16];
  _mm512_store_si512(sink, all);
  std::fprintf(stderr, "%u\n", sink[0]);  // keeps the loads
  return s / static_cast<double>(rounds * 8) * 1e9;
}

}  // namespace

int main() {
  std::vector<uint32_t> table(4096);
  for (size_t i = 0; i < table.size(); ++i) table[i] = static_cast<uint32_t>(i * 2654435761u) >> 7;
  const long rounds = 5000000;
  std::printf("vpgatherdd %.2f\n", ns_per_16<gathered>(table.data(), rounds));
  std::printf("scalar-through-memory %.2f\n", ns_per_16<through_memory>(table.data(), rounds));
  std::printf("scalar-inserted %.2f\n", ns_per_16<inserted>(table.data(), rounds));
}
