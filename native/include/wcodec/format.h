// The wcodec chunk bitstream, version 1: constants, limits and the dtype -> byte-plane layout.
// docs/FORMAT.md is the normative description; every number here appears there too.
//
// A chunk is: 16-byte header | shape (ndim x u64) | plane descriptors | zero pad to 8 |
// segment index (u64 per segment of every rANS plane) | data section (planes in order).
// All multi-byte fields are little-endian.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

namespace wcodec {

inline constexpr uint8_t kMagic[4] = {'W', 'C', 'Z', 'R'};
inline constexpr uint8_t kVersion = 1;
inline constexpr size_t kHeaderBytes = 16;
inline constexpr uint32_t kMaxNdim = 32;
// Largest decoded chunk a decoder accepts (1 TiB); guards allocations driven by a header.
inline constexpr uint64_t kMaxChunkBytes = uint64_t{1} << 40;

inline constexpr uint8_t kFlagChecksum = 0x01;
inline constexpr uint8_t kKnownFlags = kFlagChecksum;

// Segment length in elements is seg_kib * 1024, seg_kib in [16, 64].
inline constexpr uint32_t kMinSegKib = 16;
inline constexpr uint32_t kMaxSegKib = 64;
inline constexpr uint32_t kDefaultSegKib = 64;

// rANS parameters: 32 interleaved 32-bit states, 12-bit probabilities, 16-bit renormalisation.
inline constexpr uint32_t kLanes = 32;
inline constexpr uint32_t kProbBits = 12;
inline constexpr uint32_t kProbScale = 1u << kProbBits;  // 4096
inline constexpr uint32_t kStateLow = 1u << 16;          // L: states live in [L, 2^32)
inline constexpr size_t kStateBytes = kLanes * 4;        // 128 bytes of final states per segment

enum class PlaneMode : uint8_t { Raw = 0, Constant = 1, Rans = 2 };
enum class SegCoding : uint8_t { Raw = 0, Rans = 1 };
enum class Predictor : uint8_t { None = 0, Delta = 1 };
inline constexpr uint32_t kNumPredictors = 2;
// A frequency table: a 32-byte presence bitmap, then one or two bytes per present symbol.
inline constexpr size_t kMaxTableBytes = 32 + 2 * 256;

// Segment index entry: bits 0-3 coding, bits 4-7 predictor, bits 8-63 end offset of the segment
// payload relative to the start of its plane's payload. Segment j starts at align4(end_{j-1}).
inline constexpr uint64_t make_index_entry(uint64_t end, SegCoding c, Predictor p) {
  return (end << 8) | (uint64_t(p) << 4) | uint64_t(c);
}

enum class DType : uint8_t {
  Int8 = 1,
  UInt8 = 2,
  Int16 = 3,
  UInt16 = 4,
  Int32 = 5,
  Float16 = 6,
  BFloat16 = 7,
  Float32 = 8,
  Float8E4M3FN = 9,
  Float8E5M2 = 10,
};

struct DTypeLayout {
  uint32_t itemsize;  // bytes per element == number of byte planes
  bool rotate;        // floats: rotate the word left by one bit so the sign joins the mantissa
};

// Returns false for codes outside the table.
inline bool dtype_layout(uint8_t code, DTypeLayout* out) {
  switch (static_cast<DType>(code)) {
    case DType::Int8:
    case DType::UInt8:
    case DType::Float8E4M3FN:
    case DType::Float8E5M2: *out = {1, false}; return true;
    case DType::Int16:
    case DType::UInt16: *out = {2, false}; return true;
    case DType::Int32: *out = {4, false}; return true;
    case DType::Float16:
    case DType::BFloat16: *out = {2, true}; return true;
    case DType::Float32: *out = {4, true}; return true;
  }
  return false;
}

// Every malformed input is reported as FormatError; the bindings turn it into ValueError.
class FormatError : public std::invalid_argument {
 public:
  explicit FormatError(const std::string& what) : std::invalid_argument(what) {}
};

inline constexpr uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace wcodec
