// rANS primitives: frequency tables, their serialised form, and the per-symbol encode/decode steps.
//
// READ ME FIRST (invariants the rest of the code relies on)
// - Probabilities are 12-bit: frequencies of the present symbols are >= 1 and sum to exactly 4096.
//   A table needs at least two present symbols, so every frequency is <= 4095: a plane holding a
//   single value is stored as a constant plane instead (4096 does not fit the 12-bit field).
// - A state x lives in [L, 2^32), L = 2^16. Decoding symbol s (frequency f, cumulative c) maps
//   x -> f * (x >> 12) + (x & 4095) - c, which lies in [16, 2^32); if it fell below L one 16-bit
//   word is shifted in, which lifts it to at least 2^20. So a decode step never overflows and
//   reads at most one word per symbol.
// - The encoder runs backwards (last symbol first) and pushes words backwards, so the decoder
//   reads them forwards. Encoding s from x first renormalises: while x >= f << 20 emit x & 0xffff
//   and shift (once is always enough since x < 2^32), then x -> (x / f) << 12 | (x % f) + c.
// - 32 states interleave: lane i codes symbols i, i + 32, ... of a segment and all lanes share
//   one word stream, consumed in symbol order (lane 0..31 of step 0, then of step 1, ...).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "wcodec/format.h"

namespace wcodec {

// log2 of 0..4096 (0 for 0): the frequencies a table holds, and most counts the encoder weighs
// (log2 would otherwise take much of a small chunk's encoding time).
struct Log2Table {
  double v[kProbScale + 1];
  Log2Table();
};
extern const Log2Table kLog2;
inline double log2_count(uint64_t c) {
  return c <= kProbScale ? kLog2.v[c] : std::log2(static_cast<double>(c));
}

struct FreqTable {
  uint16_t freq[256];  // 0 for absent symbols
};

// Builds a normalised table from symbol counts (at least two distinct symbols present).
// Symbols with less than a slot's share get 1; the others get their share of the remaining
// slots, rounded; the units still missing or in excess then move one at a time to whichever
// symbol gains (or loses) the fewest coded bits, which keeps the table within about 0.01
// bit/symbol of the counts' entropy.
void normalize_freqs(const uint64_t counts[256], FreqTable* table);

// Serialised form: 32-byte presence bitmap (bit s & 7 of byte s >> 3), then for each present
// symbol in increasing order f - 1 as one byte if f <= 128, else two bytes
// (0x80 | (f - 1) >> 8, (f - 1) & 0xff).
size_t serialized_table_size(const FreqTable& table);
size_t serialize_table(const FreqTable& table, uint8_t* out);
// Parses and validates (>= 2 symbols, each frequency 1..4095, sum 4096); returns bytes consumed.
size_t parse_table(const uint8_t* p, size_t n, FreqTable* table);

// Decode table: one packed 32-bit entry per slot: symbol (bits 0-7), the slot's offset in its
// symbol's range, slot - cum (bits 8-19), frequency (bits 20-31), so that a step is
// x' = freq * (x >> 12) + offset. 16 KiB, so it stays in L1. The build fills whole runs of
// kFillRun entries per symbol, which may spill into the padding past the last slot.
inline constexpr uint32_t kFillRun = 8;

// The same table as 256-entry byte tables, for decoders that look entries up with byte permutes
// instead of gathers (segment_avx512.cpp). Symbols are numbered by rank among the present ones,
// so that consecutive ranges hold consecutive ranks. A slot s lies in bucket s >> 4 at offset
// o = s & 15; a bucket spanning at most four ranges is "simple": its rank is
// first[b] + #{i : o + d_i >= 16}, the d_i (1..15, 0 for none) being 16 minus the offsets where
// its later ranges start, nibbles of bounds01 (d1 | d2 << 4) and of bounds2 (d3). Any other
// bucket is "complex": bounds2 holds (k + 1) << 4, k < 15, and complex[16k + o] is the slot's
// rank. Then symbol[rank] and the bytes of freq | cum << 12 (fc[0..2]) complete the entry.
// usable is false for a table with more than 15 complex buckets, which those decoders leave to
// the gathering one.
struct RankTables {
  alignas(64) uint8_t first[256];
  alignas(64) uint8_t bounds01[256];
  alignas(64) uint8_t bounds2[256];
  alignas(64) uint8_t complex[256];
  alignas(64) uint8_t symbol[256];
  alignas(64) uint8_t fc[3][256];
  bool usable;
};

struct DecodeTable {
  uint32_t entry[kProbScale + kFillRun];
  RankTables ranks;
};
// Builds entry, and ranks where a decoder may use them (with_ranks; otherwise ranks.usable is
// false and the rest of ranks is left as it was).
void build_decode_table(const FreqTable& table, DecodeTable* out, bool with_ranks = true);

inline uint32_t dec_symbol(uint32_t e) { return e & 0xffu; }
inline uint32_t dec_offset(uint32_t e) { return (e >> 8) & 0xfffu; }
inline uint32_t dec_freq(uint32_t e) { return e >> 20; }

// Per-symbol encoder constants. Division x / f is a 64x64 -> high 64 multiply by
// rcp = ceil(2^64 / f): for x < 2^32 and f < 2^12 the error term x * (rcp * f - 2^64) / 2^64 is
// below 2^-20, so the quotient is exact. For f == 1 (2^64 does not fit) rcp = 2^64 - 1 gives
// q = x - 1, and bias = cum + 4095 absorbs it (x + 4095 + c + (x - 1) * 4095 == x * 4096 + c),
// which keeps the step free of branches (ryg_rans uses the same device).
struct EncSymbol {  // 16 bytes, so a symbol indexes the table with a shift
  uint64_t rcp;
  uint32_t x_max;  // f << 20
  uint16_t cmpl;   // 4096 - f
  uint16_t bias;   // cum, or cum + 4095 when f == 1 (< 8192)
};
struct EncodeTable {
  EncSymbol sym[256];
};
void build_encode_table(const FreqTable& table, EncodeTable* out);

// For the AVX2 encoder: one gathered entry per symbol, f | cum << 12, from which x_max and
// 4096 - f follow. The quotient x / f is a double-precision division truncated: x < 2^32 and
// f < 2^12 are exact in double, and x / f = q + r / f with r / f <= 1 - 2^-12 cannot round up
// to q + 1 (that needs a fraction above 1 - 2^-22).
// The AVX-512 encoder looks the same entries up without gathers: byte k of every freq_cum entry
// (k < 3; the top byte is zero since cum < 2^12) forms a 256-byte table that byte permutes
// index by the symbols themselves.
struct EncodeTableSimd {
  uint32_t freq_cum[256];
  alignas(64) uint8_t bytes[3][256];
};
void build_encode_table_simd(const FreqTable& table, EncodeTableSimd* out);

// Branch-free (renormalisation happens for about half the symbols, unpredictably): the low
// word is always stored below words_back, which then moves down only if it was needed. The
// buffer must therefore have one writable uint16 below the lowest word ever emitted.
inline uint32_t enc_put(uint32_t x, const EncSymbol& s, uint16_t*& words_back) {
  const uint32_t renorm = x >= s.x_max;
  words_back[-1] = static_cast<uint16_t>(x & 0xffffu);
  words_back -= renorm;
  x >>= renorm * 16;
  const uint32_t q = static_cast<uint32_t>((static_cast<unsigned __int128>(x) * s.rcp) >> 64);
  return x + uint32_t{s.bias} + q * uint32_t{s.cmpl};  // == (q << 12) + (x - q * f) + cum
}

// Cost in bits of each symbol under a table (12 - log2 f), -1 for absent symbols.
void symbol_costs(const FreqTable& table, double bits[256]);
// Coded size estimate in bits of a histogram from symbol costs; false if a counted symbol is
// absent from the table.
bool estimate_bits(const uint32_t counts[256], const double cost[256], double* bits);

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;  // little-endian host assumed (checked in codec.cpp)
}
inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}
inline uint64_t load_u64(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

}  // namespace wcodec
