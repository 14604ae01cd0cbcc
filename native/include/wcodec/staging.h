// Staging of stored objects for a batched decode: every object (a chunk, or a Zarr shard of
// inner chunks with its index at the end) is read from its file or copied from memory into one
// staging buffer (host memory, pinned for the GPU), its shard index is checked, and each chunk
// it holds ends up at an `align`-aligned offset of the buffer, so that one decode call (CPU) or
// one upload and one launch (GPU) covers the whole batch. Objects are staged in parallel.
//
// Shard objects follow the Zarr sharding format as zarr writes it by default: after the inner
// chunks, `per_shard` (offset, nbytes) pairs of little-endian uint64 in C order of the shard's
// chunk grid, then the CRC32C of those bytes (little-endian uint32). (2^64-1, 2^64-1) marks a
// chunk that is not stored.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "wcodec/format.h"

namespace wcodec {

struct StageObject {
  const char* path = nullptr;     // read from this file (size bytes), or, when null,
  const uint8_t* data = nullptr;  // copy these size bytes
  uint64_t size = 0;
  uint64_t slot = 0;      // offset of the object's region in the staging buffer
  uint64_t slot_len = 0;  // at least size + nchunks * align (room to align every chunk)
  uint32_t per_shard = 0;  // 0: the object is one chunk; else the inner chunks of its index
  uint32_t nchunks = 1;    // chunks used: the first nchunks of the shard (1 when per_shard == 0)
  uint64_t first = 0;      // where this object's chunks go in the chunk_offset/chunk_len arrays
};

// An object could not be staged: which one, and why (missing file, short read, bad index).
class StageError : public FormatError {
 public:
  StageError(size_t index, const std::string& reason) : FormatError(reason), index(index) {}
  size_t index;
};

// Stages every object; chunk_offset[first + i], chunk_len[first + i] receive where chunk i of
// an object lies in `staging`. Throws StageError (the lowest failing index is not guaranteed).
void stage_objects(const StageObject* objects, size_t count, uint8_t* staging, uint64_t staging_len,
                   uint32_t align, uint64_t* chunk_offset, uint64_t* chunk_len, int threads);

// The two passes of stage_objects, for callers that act on pieces as they arrive (the GPU
// path uploads and parses while later pieces are read). plan_staging: per object, its shard
// index is read and checked and its chunks get their places (chunk_offset, chunk_len); returns
// the pieces to read, at most 1 MiB each, in object and chunk order. fetch_pieces reads
// pieces [0, count) into place; `fetched`, when set, runs on the reading thread after each.
struct StagePiece {
  uint32_t object;
  uint64_t chunk;  // the chunk it belongs to (numbered as chunk_offset)
  uint64_t src;    // offset in the object
  uint64_t dst;    // offset in the staging buffer
  uint64_t len;
};
std::vector<StagePiece> plan_staging(const StageObject* objects, size_t count, const uint8_t* staging,
                                     uint64_t staging_len, uint32_t align, uint64_t* chunk_offset,
                                     uint64_t* chunk_len, int threads);
void fetch_pieces(const StageObject* objects, const StagePiece* pieces, size_t count, uint8_t* staging, int threads,
                  const std::function<void(const StagePiece&)>& fetched);

// Without a staging buffer (a batch decoded on the CPU): where chunk i of every object lies in
// it, chunk_src[first + i] and chunk_len[first + i], its shard index read and checked as by
// stage_objects (slot and slot_len are not used). Throws StageError.
void locate_chunks(const StageObject* objects, size_t count, uint64_t* chunk_src, uint64_t* chunk_len,
                   int threads);

// A stored chunk and where it decodes to.
struct StoredChunk {
  uint32_t object;
  uint64_t src;  // its bytes: [src, src + len) of the object
  uint64_t len;
  uint8_t* dst;
  uint64_t dst_len;  // must equal the chunk's nbytes
};

// Decodes chunks straight from their objects: threads read runs of consecutive chunks into
// memory they keep and decode them there, so reading overlaps decoding and no buffer holds the
// whole batch. Throws ChunkError naming the chunk (one that cannot be read or does not decode).
void decode_stored(const StageObject* objects, size_t count, const StoredChunk* chunks, size_t nchunks,
                   int threads);

}  // namespace wcodec
