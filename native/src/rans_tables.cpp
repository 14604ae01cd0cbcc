#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "wcodec/rans.h"

namespace wcodec {

Log2Table::Log2Table() {
  v[0] = 0.0;
  for (uint32_t f = 1; f <= kProbScale; ++f) v[f] = std::log2(static_cast<double>(f));
}
const Log2Table kLog2;

void normalize_freqs(const uint64_t counts[256], FreqTable* table) {
  uint64_t total = 0;
  for (int s = 0; s < 256; ++s) total += counts[s];
  // Symbols whose share of 4096 is below one slot get one; the rest of the slots go to the
  // others in proportion, so that rounding leaves only a few units to move (a plain share of
  // 4096 would leave one to move for nearly every rare symbol).
  uint64_t rare = 0, rare_mass = 0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] != 0 && counts[s] * kProbScale < total) {
      ++rare;
      rare_mass += counts[s];
    }
  }
  const double scale = rare_mass < total
                           ? static_cast<double>(kProbScale - rare) / static_cast<double>(total - rare_mass)
                           : static_cast<double>(kProbScale) / static_cast<double>(total);
  int64_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    uint32_t f = 0;
    if (counts[s] != 0) {
      const double share = counts[s] * kProbScale < total ? 1.0 : static_cast<double>(counts[s]) * scale;
      f = static_cast<uint32_t>(share + 0.5);
      if (f < 1) f = 1;
      if (f > kProbScale - 1) f = kProbScale - 1;
    }
    table->freq[s] = static_cast<uint16_t>(f);
    sum += f;
  }
  // Each move changes the coded size by counts[s] * log2(f'/f); take the cheapest move each time.
  // A move changes only its own symbol's next-move cost, so the costs are kept and updated.
  const bool grow = sum < kProbScale;
  auto move_cost = [&](int s) {
    const uint32_t f = table->freq[s];
    const double c = static_cast<double>(counts[s]);
    if (f == 0 || (grow ? f == kProbScale - 1 : f == 1)) return -1.0;  // not movable
    // bits saved by growing (larger is better) or lost by shrinking (smaller is better)
    return grow ? c * (kLog2.v[f + 1] - kLog2.v[f]) : c * (kLog2.v[f] - kLog2.v[f - 1]);
  };
  // The units to move are few (the rounding's error): each move takes the best by a scan,
  // largest gain when growing, smallest loss when shrinking, the lower symbol among equals.
  double key[256];  // the next move's cost, negated when shrinking (larger is better); -inf: none
  for (int s = 0; s < 256; ++s) {
    const double c = move_cost(s);
    key[s] = c < 0 ? -std::numeric_limits<double>::infinity() : grow ? c : -c;
  }
  while (sum != kProbScale) {
    // four running maxima: one would wait on the previous comparison at every symbol
    double m[4] = {key[0], key[1], key[2], key[3]};
    for (int s = 4; s < 256; s += 4) {
      for (int k = 0; k < 4; ++k) m[k] = key[s + k] > m[k] ? key[s + k] : m[k];
    }
    const double top = std::max(std::max(m[0], m[1]), std::max(m[2], m[3]));
    int best = 0;
    while (key[best] != top) ++best;
    table->freq[best] = static_cast<uint16_t>(table->freq[best] + (grow ? 1 : -1));
    sum += grow ? 1 : -1;
    const double c = move_cost(best);
    key[best] = c < 0 ? -std::numeric_limits<double>::infinity() : grow ? c : -c;
  }
}

size_t serialized_table_size(const FreqTable& table) {
  size_t n = 32;
  for (int s = 0; s < 256; ++s) {
    if (table.freq[s] != 0) n += table.freq[s] <= 128 ? 1 : 2;
  }
  return n;
}

size_t serialize_table(const FreqTable& table, uint8_t* out) {
  std::memset(out, 0, 32);
  size_t n = 32;
  for (int s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    if (f == 0) continue;
    out[s >> 3] = static_cast<uint8_t>(out[s >> 3] | (1u << (s & 7)));
    const uint32_t v = f - 1;
    if (f <= 128) {
      out[n++] = static_cast<uint8_t>(v);
    } else {
      out[n++] = static_cast<uint8_t>(0x80u | (v >> 8));
      out[n++] = static_cast<uint8_t>(v & 0xffu);
    }
  }
  return n;
}

size_t parse_table(const uint8_t* p, size_t n, FreqTable* table) {
  if (n < 32) throw FormatError("bad table: truncated presence bitmap");
  size_t pos = 32;
  uint32_t sum = 0;
  int present = 0;
  for (int s = 0; s < 256; ++s) {
    table->freq[s] = 0;
    if (!(p[s >> 3] & (1u << (s & 7)))) continue;
    if (pos >= n) throw FormatError("bad table: truncated frequencies");
    uint32_t v = p[pos++];
    if (v & 0x80u) {
      if (pos >= n) throw FormatError("bad table: truncated frequencies");
      v = ((v & 0x7fu) << 8) | p[pos++];
      if (v < 128) throw FormatError("bad table: non-canonical frequency encoding");
    }
    const uint32_t f = v + 1;
    if (f >= kProbScale) throw FormatError("bad table: a single symbol holds the whole range");
    table->freq[s] = static_cast<uint16_t>(f);
    sum += f;
    ++present;
  }
  if (present < 2) throw FormatError("bad table: fewer than two symbols");
  if (sum != kProbScale) {
    throw FormatError("bad table: frequencies sum to " + std::to_string(sum) + ", not 4096");
  }
  return pos;
}

namespace {

void build_rank_tables(const FreqTable& table, RankTables* out) {
  std::memset(out, 0, sizeof *out);
  uint8_t slot_rank[kProbScale];
  uint32_t start[257];  // first slot of each rank
  uint32_t cum = 0, rank = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    if (f == 0) continue;
    const uint32_t fc = f | (cum << 12);
    for (int k = 0; k < 3; ++k) out->fc[k][rank] = static_cast<uint8_t>(fc >> (8 * k));
    out->symbol[rank] = static_cast<uint8_t>(s);
    start[rank] = cum;
    std::memset(slot_rank + cum, static_cast<int>(rank), f);
    cum += f;
    ++rank;
  }
  start[rank] = kProbScale;
  out->usable = true;
  uint32_t complex = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const uint32_t r0 = slot_rank[16 * b];
    uint32_t d[3] = {};
    uint32_t later = 0;  // ranges starting inside the bucket after its first slot
    for (uint32_t r = r0 + 1; start[r] < 16 * b + 16; ++r, ++later) {
      if (later < 3) d[later] = 16 - (start[r] - 16 * b);
    }
    out->first[b] = static_cast<uint8_t>(r0);
    if (later <= 3) {
      out->bounds01[b] = static_cast<uint8_t>(d[0] | d[1] << 4);
      out->bounds2[b] = static_cast<uint8_t>(d[2]);
      continue;
    }
    if (complex == 15) {
      out->usable = false;
      return;
    }
    out->bounds2[b] = static_cast<uint8_t>((complex + 1) << 4);
    std::memcpy(out->complex + 16 * complex, slot_rank + 16 * b, 16);
    ++complex;
  }
}

}  // namespace

void build_decode_table(const FreqTable& table, DecodeTable* out, bool with_ranks) {
  // four entries a vector store (GCC and Clang vector types: SSE2 on x86-64, NEON on AArch64),
  // which the compiler does not find by itself here; entry = e + (offset << 8), as the offset
  // bits of e are zero
  using U32x4 = uint32_t __attribute__((vector_size(16)));
  static_assert(kFillRun == 8, "two vector stores a run");
  const U32x4 ramp = {0, 1u << 8, 2u << 8, 3u << 8};
  const U32x4 four = {4u << 8, 4u << 8, 4u << 8, 4u << 8};
  uint32_t cum = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    // runs of kFillRun run past the symbol's range; the next symbol's writes, which come
    // later, put its own entries back
    U32x4 run = (s | (f << 20)) + ramp;
    for (uint32_t k = 0; k < f; k += kFillRun) {
      const U32x4 next = run + four;
      std::memcpy(out->entry + cum + k, &run, sizeof run);
      std::memcpy(out->entry + cum + k + 4, &next, sizeof next);
      run = next + four;
    }
    cum += f;
  }
  if (with_ranks) {
    build_rank_tables(table, &out->ranks);
  } else {
    out->ranks.usable = false;
  }
}

void build_encode_table(const FreqTable& table, EncodeTable* out) {
  uint32_t cum = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    EncSymbol& e = out->sym[s];
    e.cmpl = static_cast<uint16_t>(kProbScale - f);
    e.x_max = f << 20;
    if (f >= 2) {
      // ceil(2^64 / f) == floor((2^64 - 1) / f) + 1 for every f >= 2 (a power of two included),
      // a 64-bit division instead of a 128-bit one
      e.rcp = ~uint64_t{0} / f + 1;
      e.bias = static_cast<uint16_t>(cum);
    } else {
      e.rcp = ~uint64_t{0};
      e.bias = static_cast<uint16_t>(cum + kProbScale - 1);
    }
    cum += f;
  }
}

void symbol_costs(const FreqTable& table, double bits[256]) {
  for (int s = 0; s < 256; ++s) {
    bits[s] = table.freq[s] ? kProbBits - kLog2.v[table.freq[s]] : -1.0;
  }
}

void build_encode_table_simd(const FreqTable& table, EncodeTableSimd* out) {
  uint32_t cum = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    out->freq_cum[s] = f | (cum << 12);
    for (int k = 0; k < 3; ++k) out->bytes[k][s] = static_cast<uint8_t>(out->freq_cum[s] >> (8 * k));
    cum += f;
  }
}

bool estimate_bits(const uint32_t counts[256], const double cost[256], double* bits) {
  double b = 0.0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] == 0) continue;
    if (cost[s] < 0) return false;
    b += counts[s] * cost[s];
  }
  *bits = b;
  return true;
}

}  // namespace wcodec
