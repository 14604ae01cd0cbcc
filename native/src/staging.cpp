// Object staging (see wcodec/staging.h), in two parallel passes. First, per object: a shard's
// index is read (a suffix read of a file) and checked, and each chunk it uses is given an
// aligned place in the object's slot. Then, per piece of at most kPiece bytes of every chunk:
// the piece is read from the file (or copied from memory) straight to its place. Reading by
// pieces keeps every core busy when one object (an embedding table) holds most of the bytes,
// and no chunk is ever moved after it is read.
#include "wcodec/staging.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "prefault.h"
#include "scratch.h"
#include "wcodec/codec.h"
#include "wcodec/crc32c.h"
#include "wcodec/parallel.h"

namespace wcodec {

namespace {

constexpr uint64_t kEmpty = ~uint64_t{0};

uint64_t load_u64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

uint32_t load_u32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}

constexpr uint64_t kPiece = 1 << 20;

// Reads bytes [offset, offset + n) of a file. Only a regular file is read: O_NONBLOCK keeps the
// open of a FIFO from waiting for a writer (it changes nothing for regular files), and fstat
// refuses anything else before a read could block or never end.
void read_range(size_t index, const char* path, uint64_t offset, uint8_t* dst, uint64_t n) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) throw StageError(index, "object missing from the store");
    throw StageError(index, std::string("cannot open: ") + std::strerror(errno));
  }
  struct stat info {};
  if (::fstat(fd, &info) != 0 || !S_ISREG(info.st_mode)) {
    ::close(fd);
    throw StageError(index, "not a regular file");
  }
  uint64_t done = 0;
  while (done < n) {
    const ssize_t got = ::pread(fd, dst + done, static_cast<size_t>(std::min<uint64_t>(n - done, 1u << 30)),
                                static_cast<off_t>(offset + done));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      const int err = errno;
      ::close(fd);
      if (got == 0) throw StageError(index, "object is shorter than its listed size (changed while read?)");
      throw StageError(index, std::string("read failed: ") + std::strerror(err));
    }
    done += static_cast<uint64_t>(got);
  }
  ::close(fd);
}

void fetch(size_t index, const StageObject& o, uint64_t offset, uint8_t* dst, uint64_t n) {
  if (o.path != nullptr) {
    read_range(index, o.path, offset, dst, n);
  } else if (n) {
    std::memcpy(dst, o.data + offset, n);
  }
}


// Where the object's first nchunks chunks lie in it: the whole object for a plain chunk, else
// the entries of its shard index (read from its end and checked).
struct Extent {
  uint64_t src;
  uint64_t len;
};

std::vector<Extent> read_index(size_t index, const StageObject& o) {
  if (o.per_shard == 0) return {{0, o.size}};
  const uint64_t index_bytes = uint64_t{o.per_shard} * 16 + 4;
  if (o.size < index_bytes) {
    throw StageError(index, "shard of " + std::to_string(o.size) + " bytes is shorter than its index");
  }
  const uint64_t data_end = o.size - index_bytes;
  std::vector<uint8_t> table(index_bytes);
  fetch(index, o, data_end, table.data(), index_bytes);
  if (crc32c(table.data(), index_bytes - 4) != load_u32(table.data() + index_bytes - 4)) {
    throw StageError(index, "shard index checksum mismatch");
  }
  std::vector<Extent> extents(o.nchunks);
  uint64_t previous_end = 0;
  for (uint32_t i = 0; i < o.nchunks; ++i) {
    const uint64_t src = load_u64(table.data() + 16 * i);
    const uint64_t len = load_u64(table.data() + 16 * i + 8);
    if (src == kEmpty && len == kEmpty) {
      throw StageError(index, "inner chunk " + std::to_string(i) + " is missing from the shard");
    }
    if (src > data_end || len > data_end - src) {
      throw StageError(index, "shard index entry " + std::to_string(i) + " is out of range");
    }
    // Staged shards hold runs of whole rows, written in row order (Morton order of an n x 1
    // grid): each chunk lies after the one before. Entries swapped or pointing at the same
    // bytes would otherwise decode, checksums intact, into the wrong rows.
    if (src < previous_end) {
      throw StageError(index, "shard index entry " + std::to_string(i) +
                                  " overlaps or precedes the entry before it (entries out of order)");
    }
    previous_end = src + len;
    extents[i] = {src, len};
  }
  return extents;
}

// Pass one for one object: its chunks' sources (from the shard index) and aligned places.
void plan_object(size_t index, const StageObject& o, uint32_t align, uint64_t* chunk_offset, uint64_t* chunk_len,
                 std::vector<StagePiece>* pieces) {
  uint64_t end = 0;
  const std::vector<Extent> extents = read_index(index, o);
  for (uint32_t i = 0; i < extents.size(); ++i) {
    const auto [src, len] = extents[i];
    const uint64_t dst = align_up(end, align);
    end = dst + len;
    if (end > o.slot_len) throw StageError(index, "staging slot too small for the shard's chunks");
    chunk_offset[o.first + i] = o.slot + dst;
    chunk_len[o.first + i] = len;
    for (uint64_t p = 0; p < len; p += kPiece) {
      pieces->push_back({static_cast<uint32_t>(index), o.first + i, src + p, o.slot + dst + p, std::min(kPiece, len - p)});
    }
  }
}

void check_objects(const StageObject* objects, size_t count) {
  for (size_t k = 0; k < count; ++k) {
    const StageObject& o = objects[k];
    if ((o.per_shard == 0 && o.nchunks != 1) || o.nchunks > std::max<uint32_t>(o.per_shard, 1) ||
        (o.path == nullptr && o.data == nullptr && o.size != 0)) {
      throw std::invalid_argument("object " + std::to_string(k) + " is described inconsistently");
    }
  }
}

}  // namespace

std::vector<StagePiece> plan_staging(const StageObject* objects, size_t count, const uint8_t* staging,
                                     uint64_t staging_len, uint32_t align, uint64_t* chunk_offset,
                                     uint64_t* chunk_len, int threads) {
  if (align == 0 || (align & (align - 1)) != 0) throw std::invalid_argument("align must be a power of two");
  if (reinterpret_cast<uintptr_t>(staging) % align != 0) {
    throw std::invalid_argument("stage_objects: the staging buffer is not aligned");
  }
  check_objects(objects, count);
  for (size_t k = 0; k < count; ++k) {
    const StageObject& o = objects[k];
    if (o.slot % align != 0 || o.slot > staging_len || o.slot_len > staging_len - o.slot || o.size > o.slot_len) {
      throw std::invalid_argument("stage_objects: object " + std::to_string(k) + " is described inconsistently");
    }
  }
  std::vector<std::vector<StagePiece>> planned(count);
  parallel_for(count, resolve_threads(threads), [&](size_t k, int) {
    plan_object(k, objects[k], align, chunk_offset, chunk_len, &planned[k]);
  });
  std::vector<StagePiece> pieces;
  for (const std::vector<StagePiece>& p : planned) pieces.insert(pieces.end(), p.begin(), p.end());
  return pieces;
}

void fetch_pieces(const StageObject* objects, const StagePiece* pieces, size_t count, uint8_t* staging, int threads,
                  const std::function<void(const StagePiece&)>& fetched) {
  parallel_for(count, resolve_threads(threads), [&](size_t k, int) {
    const StagePiece& p = pieces[k];
    fetch(p.object, objects[p.object], p.src, staging + p.dst, p.len);
    if (fetched) fetched(p);
  });
}

void stage_objects(const StageObject* objects, size_t count, uint8_t* staging, uint64_t staging_len,
                   uint32_t align, uint64_t* chunk_offset, uint64_t* chunk_len, int threads) {
  const std::vector<StagePiece> pieces =
      plan_staging(objects, count, staging, staging_len, align, chunk_offset, chunk_len, threads);
  fetch_pieces(objects, pieces.data(), pieces.size(), staging, threads, {});
}

void locate_chunks(const StageObject* objects, size_t count, uint64_t* chunk_src, uint64_t* chunk_len, int threads) {
  check_objects(objects, count);
  parallel_for(count, resolve_threads(threads), [&](size_t k, int) {
    const std::vector<Extent> extents = read_index(k, objects[k]);
    for (size_t i = 0; i < extents.size(); ++i) {
      chunk_src[objects[k].first + i] = extents[i].src;
      chunk_len[objects[k].first + i] = extents[i].len;
    }
  });
}

void decode_stored(const StageObject* objects, size_t count, const StoredChunk* chunks, size_t nchunks, int threads) {
  check_objects(objects, count);
  // Tasks: runs of consecutive chunks of about kRunBytes stored bytes, read into memory the
  // thread keeps (it stays in cache for the decode) and decoded together, so that the group
  // decoder interleaves segments of several small chunks.
  constexpr uint64_t kRunBytes = 256 << 10;
  std::vector<size_t> starts{0};
  std::vector<std::pair<uint8_t*, uint64_t>> outputs(nchunks);
  uint64_t run = 0;
  for (size_t c = 0; c < nchunks; ++c) {
    const StoredChunk& s = chunks[c];
    if (s.object >= count || s.len > objects[s.object].size || s.src > objects[s.object].size - s.len) {
      throw std::invalid_argument("chunk " + std::to_string(c) + " lies outside its object");
    }
    outputs[c] = {s.dst, s.dst_len};
    run += s.len;
    if (run >= kRunBytes && c + 1 < nchunks) {
      starts.push_back(c + 1);
      run = 0;
    }
  }
  starts.push_back(nchunks);
  const int workers = resolve_threads(threads);
  const std::vector<Region> regions = output_regions(outputs, workers);
  parallel_for(regions.size(), workers, [&](size_t r, int) { fault_in(regions[r]); });
  parallel_for(starts.size() - 1, workers, [&](size_t t, int) {
    const size_t a = starts[t];
    const size_t b = starts[t + 1];
    uint64_t total = 0;
    for (size_t c = a; c < b; ++c) total += chunks[c].len;
    uint8_t* const buffer = kept_scratch<2>(total);
    std::vector<DecodeJob> jobs(b - a);
    uint64_t at = 0;
    for (size_t c = a; c < b; ++c) {
      const StoredChunk& s = chunks[c];
      try {
        fetch(s.object, objects[s.object], s.src, buffer + at, s.len);
      } catch (const StageError& e) {
        throw ChunkError(c, "chunk " + std::to_string(c) + ": ", e.what());
      }
      jobs[c - a] = {buffer + at, static_cast<size_t>(s.len), s.dst, static_cast<size_t>(s.dst_len)};
      at += s.len;
    }
    try {
      decode_chunks(jobs.data(), jobs.size(), 1);
    } catch (const ChunkError& e) {
      throw ChunkError(a + e.index, "chunk " + std::to_string(a + e.index) + ": ", e.reason);
    }
  });
}

}  // namespace wcodec
