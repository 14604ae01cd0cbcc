// Zarr shard objects written in one call: the inner chunks of a block, each padded with the fill
// value to the inner chunk shape and encoded, in the order given, then the shard index as
// zarr's sharding codec writes it by default (per inner chunk of the grid, in C order, offset
// and nbytes as little-endian uint64, (2^64-1, 2^64-1) for a chunk not stored, then the
// CRC32C of those bytes, little-endian uint32). The chunks are encoded in parallel, each on one
// thread, so a shard of many small chunks costs one call, not one per chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "wcodec/codec.h"

namespace wcodec {

struct ShardSpec {
  const uint8_t* data = nullptr;  // the block's in-bounds part, C order: prod(shape) elements
  uint8_t dtype = 0;
  uint32_t ndim = 0;
  const uint64_t* shape = nullptr;  // of data; at most the block's shape
  const uint64_t* inner = nullptr;  // the inner chunk shape
  const uint64_t* grid = nullptr;   // inner chunks per dimension of the block
  const uint32_t* order = nullptr;  // norder grid coordinates (ndim each): the writing order
  size_t norder = 0;
  const uint8_t* fill = nullptr;  // one element: the padding
};

// Encodes the stored chunks in groups of as many as there are threads, and hands each to
// `emit` (on the calling thread, in writing order) once its group is done; a chunk is gone when
// emit returns, so a shard's encoded chunks are never all held at once. Returns the index
// (with its CRC32C), which follows the chunks. Chunks whose grid coordinates start past
// `shape` in some dimension are not stored. options apply to every chunk (options.threads:
// the chunks' parallelism); histograms, when set, count the padding too (*padding says how
// many fill elements were encoded). Throws std::invalid_argument for an inconsistent spec (a
// coordinate outside the grid, a repeated one, a shape past the block).
std::vector<uint8_t> encode_shard(const ShardSpec& spec, const EncodeOptions& options,
                                  const std::function<void(const EncodedChunk&)>& emit, uint64_t* padding);

// encode_shard straight into the open file descriptor `fd`: each chunk's pieces go out by writev
// from the encoder's own memory as its group finishes, then the index. Returns the bytes
// written. Throws std::system_error (with errno) when a write fails.
uint64_t write_shard(int fd, const ShardSpec& spec, const EncodeOptions& options, uint64_t* padding);

}  // namespace wcodec
