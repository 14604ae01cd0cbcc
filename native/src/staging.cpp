// Object staging (see wcodec/staging.h). An object is read straight into its slot. A shard's
// chunks are then moved, last first, to aligned offsets at or after where they were read: the
// moves only go right and the targets do not overlap, so no chunk is overwritten before it moves.
#include "wcodec/staging.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <numeric>
#include <vector>

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

void read_file(size_t index, const char* path, uint8_t* dst, uint64_t size) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) throw StageError(index, "object missing from the store");
    throw StageError(index, std::string("cannot open: ") + std::strerror(errno));
  }
  uint64_t done = 0;
  while (done < size) {
    const ssize_t got = ::pread(fd, dst + done, static_cast<size_t>(std::min<uint64_t>(size - done, 1u << 30)),
                                static_cast<off_t>(done));
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

void stage_one(size_t index, const StageObject& o, uint8_t* staging, uint32_t align, uint64_t* chunk_offset,
               uint64_t* chunk_len) {
  uint8_t* slot = staging + o.slot;
  if (o.path != nullptr) {
    read_file(index, o.path, slot, o.size);
  } else if (o.size) {
    std::memcpy(slot, o.data, o.size);
  }
  if (o.per_shard == 0) {
    chunk_offset[o.first] = o.slot;
    chunk_len[o.first] = o.size;
    return;
  }
  const uint64_t index_bytes = uint64_t{o.per_shard} * 16 + 4;
  if (o.size < index_bytes) {
    throw StageError(index, "shard of " + std::to_string(o.size) + " bytes is shorter than its index");
  }
  const uint64_t data_end = o.size - index_bytes;
  const uint8_t* table = slot + data_end;
  if (crc32c(table, index_bytes - 4) != load_u32(table + index_bytes - 4)) {
    throw StageError(index, "shard index checksum mismatch");
  }
  std::vector<uint64_t> src(o.nchunks), len(o.nchunks);
  for (uint32_t i = 0; i < o.nchunks; ++i) {
    src[i] = load_u64(table + 16 * i);
    len[i] = load_u64(table + 16 * i + 8);
    if (src[i] == kEmpty && len[i] == kEmpty) {
      throw StageError(index, "inner chunk " + std::to_string(i) + " is missing from the shard");
    }
    if (src[i] > data_end || len[i] > data_end - src[i]) {
      throw StageError(index, "shard index entry " + std::to_string(i) + " is out of range");
    }
  }
  std::vector<uint32_t> order(o.nchunks);
  std::iota(order.begin(), order.end(), 0u);
  std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) { return src[a] < src[b]; });
  std::vector<uint64_t> dst(o.nchunks);
  uint64_t end = 0;
  for (uint32_t k = 0; k < o.nchunks; ++k) {
    const uint32_t i = order[k];
    if (k > 0 && src[i] < src[order[k - 1]] + len[order[k - 1]]) {
      throw StageError(index, "shard index entries overlap");
    }
    dst[i] = align_up(std::max(src[i], end), align);
    end = dst[i] + len[i];
  }
  if (end > o.slot_len) throw StageError(index, "staging slot too small for the shard's chunks");
  for (uint32_t k = o.nchunks; k-- > 0;) {
    const uint32_t i = order[k];
    if (dst[i] != src[i]) std::memmove(slot + dst[i], slot + src[i], len[i]);
  }
  for (uint32_t i = 0; i < o.nchunks; ++i) {
    chunk_offset[o.first + i] = o.slot + dst[i];
    chunk_len[o.first + i] = len[i];
  }
}

}  // namespace

void stage_objects(const StageObject* objects, size_t count, uint8_t* staging, uint64_t staging_len,
                   uint32_t align, uint64_t* chunk_offset, uint64_t* chunk_len, int threads) {
  if (align == 0 || (align & (align - 1)) != 0) throw std::invalid_argument("align must be a power of two");
  if (reinterpret_cast<uintptr_t>(staging) % align != 0) {
    throw std::invalid_argument("stage_objects: the staging buffer is not aligned");
  }
  for (size_t k = 0; k < count; ++k) {
    const StageObject& o = objects[k];
    if ((o.per_shard == 0 && o.nchunks != 1) || o.nchunks > std::max<uint32_t>(o.per_shard, 1) ||
        o.slot % align != 0 || o.slot > staging_len || o.slot_len > staging_len - o.slot ||
        o.size > o.slot_len || (o.path == nullptr && o.data == nullptr && o.size != 0)) {
      throw std::invalid_argument("stage_objects: object " + std::to_string(k) + " is described inconsistently");
    }
  }
  parallel_for(count, resolve_threads(threads), [&](size_t k, int) {
    stage_one(k, objects[k], staging, align, chunk_offset, chunk_len);
  });
}

}  // namespace wcodec
