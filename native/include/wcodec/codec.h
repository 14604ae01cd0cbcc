// The codec's C++ API: encode one chunk, parse (validate) a chunk, decode many chunks at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "wcodec/format.h"
#include "wcodec/rans.h"

namespace wcodec {

struct EncodeOptions {
  int threads = 0;  // 0: all cores; 1: the calling thread only
  bool checksum = true;
  bool predict = true;  // allow the delta predictor where it pays
  uint32_t seg_kib = kDefaultSegKib;  // the longest segment: a chunk is split into the fewest, of equal length
  // When set, each byte plane's symbol counts are added to histograms[plane * 256 + symbol]
  // (itemsize * 256 entries): the order-0 entropy bound comes free with the encode.
  uint64_t* histograms = nullptr;
};

// An encoded chunk held as its parts; size() is known before write() copies it out, so callers
// can allocate the destination (e.g. a Python bytes object) exactly once.
class EncodedChunk {
 public:
  EncodedChunk();
  ~EncodedChunk();
  EncodedChunk(EncodedChunk&&) noexcept;
  EncodedChunk& operator=(EncodedChunk&&) noexcept;
  size_t size() const;
  void write(uint8_t* dst) const;  // exactly size() bytes
  // The same bytes as consecutive pieces of the chunk's own memory (padding from a static zero
  // block), in order, without copying: a file takes them by writev.
  void pieces(const std::function<void(const uint8_t*, size_t)>& take) const;

  struct Impl;
  std::unique_ptr<Impl> impl;
};

// `data` holds nelem = prod(shape) elements of `dtype`, C order, little-endian. The result may
// point into `data` (raw planes of one-byte dtypes): keep it alive until write() returns.
EncodedChunk encode_chunk(const uint8_t* data, uint8_t dtype, const uint64_t* shape, uint32_t ndim,
                          const EncodeOptions& options);

struct PlaneInfo {
  PlaneMode mode = PlaneMode::Raw;
  uint8_t constant = 0;
  uint8_t table_mask = 0;  // bit p: a table for predictor p is present
  FreqTable tables[kNumPredictors];
  uint64_t descriptor_bytes = 0;  // mode byte, constant or mask, tables
  uint64_t index_offset = 0;      // absolute offset of this plane's segment index (rANS planes)
  uint64_t payload_offset = 0;    // absolute offset of the plane payload (4-aligned)
  uint64_t payload_bytes = 0;
  uint32_t pad_before = 0;        // zero bytes (0..3) between the previous plane and this one
};

struct ChunkInfo {
  uint8_t dtype = 0;
  DTypeLayout layout{};
  uint32_t ndim = 0;
  uint64_t shape[kMaxNdim] = {};
  uint64_t nelem = 0;
  uint64_t nbytes = 0;
  bool has_checksum = false;
  uint32_t checksum = 0;
  uint32_t seg_elems = 0;
  uint64_t nseg = 0;
  uint64_t row = 1;  // length of the last axis: the delta predictor restarts at each row
  uint32_t nplanes = 0;
  PlaneInfo planes[4];
  uint64_t index_offset = 0;
  uint64_t data_offset = 0;
  uint64_t total_bytes = 0;

  uint64_t seg_begin(uint64_t j) const { return j * seg_elems; }
  uint64_t seg_len(uint64_t j) const {
    const uint64_t b = j * seg_elems;
    return nelem - b < seg_elems ? nelem - b : seg_elems;
  }
};

// Reads only the header (magic, version, dtype, shape): enough to allocate the output.
ChunkInfo parse_header(const uint8_t* src, size_t n);
// Validates the whole container structure: descriptors, tables, index, padding, total length.
// Payload contents are checked while decoding (final states, stream ends, checksum).
ChunkInfo parse_chunk(const uint8_t* src, size_t n);

// A chunk's head is everything before its data section: header, shape, plane descriptors and
// segment index. With at least min(n, kMaxFixedHead) of the n bytes of a chunk at src, returns
// how many of its first bytes hold its whole head if the chunk is well formed (at most n): a
// decoder whose payload lies elsewhere (in device memory) reads that many, then parses them
// with parse_chunk_head. Throws FormatError for a bad header.
inline constexpr size_t kMaxFixedHead = kHeaderBytes + 8 * kMaxNdim;
uint64_t chunk_head_bound(const uint8_t* src, size_t avail, size_t n);
// parse_chunk of an n-byte chunk of which only the first `avail` bytes are at src (its head,
// see chunk_head_bound): every check but the zero padding inside the data section (between
// segments and planes), which a decoder of the payload must make. With avail >= n it is
// parse_chunk.
ChunkInfo parse_chunk_head(const uint8_t* src, size_t avail, size_t n);

struct DecodeJob {
  const uint8_t* src;
  size_t src_len;
  uint8_t* dst;
  size_t dst_len;  // must equal the chunk's nbytes
};

// A chunk of a batch failed to decode: which one, and why.
class ChunkError : public FormatError {
 public:
  ChunkError(size_t index, const std::string& prefix, const std::string& reason)
      : FormatError(prefix + reason), index(index), reason(reason) {}
  size_t index;
  std::string reason;  // the message without the "chunk <i>: " prefix
};

// Decodes every job; segments of all chunks form one pool of parallel tasks. A malformed chunk
// raises ChunkError; with several jobs its message starts with "chunk <i>: ".
void decode_chunks(const DecodeJob* jobs, size_t njobs, int threads);

// Segment counts of a parsed chunk, by coding and predictor, for inspection.
struct SegmentCounts {
  uint64_t raw = 0;
  uint64_t rans = 0;
  uint64_t delta = 0;  // rANS segments using the delta predictor
};
SegmentCounts count_segments(const uint8_t* src, const ChunkInfo& info, uint32_t plane);

// Histograms of each byte plane of decoded data (for entropy bounds).
void plane_histograms(const uint8_t* data, uint64_t nelem, const DTypeLayout& layout,
                      uint64_t hist[4][256]);

}  // namespace wcodec
