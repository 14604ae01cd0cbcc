#include <cmath>

#include "wcodec/rans.h"

namespace wcodec {

void normalize_freqs(const uint64_t counts[256], FreqTable* table) {
  uint64_t total = 0;
  for (int s = 0; s < 256; ++s) total += counts[s];
  int64_t sum = 0;
  for (int s = 0; s < 256; ++s) {
    uint32_t f = 0;
    if (counts[s] != 0) {
      const double share = static_cast<double>(counts[s]) * kProbScale / static_cast<double>(total);
      f = static_cast<uint32_t>(share + 0.5);
      if (f < 1) f = 1;
      if (f > kProbScale - 1) f = kProbScale - 1;
    }
    table->freq[s] = static_cast<uint16_t>(f);
    sum += f;
  }
  // Each move changes the coded size by counts[s] * log2(f'/f); take the cheapest move each time.
  while (sum != kProbScale) {
    const bool grow = sum < kProbScale;
    int best = -1;
    double best_delta = 0.0;
    for (int s = 0; s < 256; ++s) {
      const uint32_t f = table->freq[s];
      if (f == 0) continue;
      if (!grow && f == 1) continue;
      if (grow && f == kProbScale - 1) continue;
      const double c = static_cast<double>(counts[s]);
      // bits saved by growing (positive is good) or bits lost by shrinking (smaller is good)
      const double delta = grow ? c * std::log2((f + 1.0) / f) : c * std::log2(f / (f - 1.0));
      if (best < 0 || (grow ? delta > best_delta : delta < best_delta)) {
        best = s;
        best_delta = delta;
      }
    }
    table->freq[best] = static_cast<uint16_t>(table->freq[best] + (grow ? 1 : -1));
    sum += grow ? 1 : -1;
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

void build_decode_table(const FreqTable& table, DecodeTable* out) {
  uint32_t cum = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    const uint32_t e = s | (f << 8) | (cum << 20);
    for (uint32_t k = 0; k < f; ++k) out->entry[cum + k] = e;
    cum += f;
  }
}

void build_encode_table(const FreqTable& table, EncodeTable* out) {
  uint32_t cum = 0;
  for (uint32_t s = 0; s < 256; ++s) {
    const uint32_t f = table.freq[s];
    EncSymbol& e = out->sym[s];
    e.freq = f;
    e.cum = cum;
    e.cmpl = kProbScale - f;
    e.x_max = f << 20;
    // ceil(2^64 / f) for f >= 2; unused for f <= 1.
    e.rcp = f >= 2 ? static_cast<uint64_t>(((static_cast<unsigned __int128>(1) << 64) + f - 1) / f)
                   : 0;
    cum += f;
  }
}

bool estimate_bits(const uint32_t counts[256], const FreqTable& table, double* bits) {
  double b = 0.0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s] == 0) continue;
    if (table.freq[s] == 0) return false;
    b += counts[s] * (kProbBits - std::log2(static_cast<double>(table.freq[s])));
  }
  *bits = b;
  return true;
}

}  // namespace wcodec
