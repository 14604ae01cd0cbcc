// Shard objects (see wcodec/shard.h): inner chunks gathered (padded where the block's data ends)
// and encoded a group at a time in parallel, handed out in the given order, then the index.
#include "wcodec/shard.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "wcodec/crc32c.h"
#include "wcodec/parallel.h"

namespace wcodec {

namespace {

void put_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Writes every byte of `pieces` to `fd`, resuming after partial writes and interruptions.
void write_all(int fd, std::vector<iovec>& pieces) {
  size_t first = 0;
  while (first < pieces.size()) {
    const int count = static_cast<int>(std::min<size_t>(pieces.size() - first, IOV_MAX));
    const ssize_t wrote = ::writev(fd, pieces.data() + first, count);
    if (wrote < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::generic_category(), "write failed");
    }
    // skip the pieces written whole, then trim the one written in part
    size_t left = static_cast<size_t>(wrote);
    while (first < pieces.size() && left >= pieces[first].iov_len) left -= pieces[first++].iov_len;
    if (left) {
      pieces[first].iov_base = static_cast<uint8_t*>(pieces[first].iov_base) + left;
      pieces[first].iov_len -= left;
    }
  }
  pieces.clear();
}

}  // namespace

std::vector<uint8_t> encode_shard(const ShardSpec& s, const EncodeOptions& options,
                                  const std::function<void(const EncodedChunk&)>& emit, uint64_t* padding) {
  DTypeLayout layout;
  if (!dtype_layout(s.dtype, &layout)) throw std::invalid_argument("encode_shard: unknown dtype code");
  if (s.ndim == 0 || s.ndim > kMaxNdim) throw std::invalid_argument("encode_shard: bad number of dimensions");
  const uint32_t nd = s.ndim;
  const uint64_t item = layout.itemsize;
  uint64_t cells = 1, chunk_elems = 1;
  for (uint32_t d = 0; d < nd; ++d) {
    if (s.inner[d] == 0 || s.grid[d] == 0 || s.shape[d] > s.inner[d] * s.grid[d]) {
      throw std::invalid_argument("encode_shard: the data does not fit the block");
    }
    cells *= s.grid[d];
    chunk_elems *= s.inner[d];
  }
  // index position of each chunk in writing order; chunks that start past the data are skipped
  std::vector<uint64_t> cell(s.norder);
  std::vector<uint8_t> seen(cells, 0);
  std::vector<size_t> stored;
  for (size_t k = 0; k < s.norder; ++k) {
    const uint32_t* c = s.order + k * nd;
    uint64_t flat = 0;
    bool inside = true;
    for (uint32_t d = 0; d < nd; ++d) {
      if (c[d] >= s.grid[d]) throw std::invalid_argument("encode_shard: a coordinate outside the grid");
      flat = flat * s.grid[d] + c[d];
      inside = inside && uint64_t{c[d]} * s.inner[d] < s.shape[d];
    }
    if (seen[flat]++) throw std::invalid_argument("encode_shard: a chunk listed twice");
    cell[k] = flat;
    if (inside) stored.push_back(k);
  }
  // the data is C order: a chunk spanning every dimension but the first, whole, is one run of it
  bool rows_only = true;
  for (uint32_t d = 1; d < nd; ++d) rows_only = rows_only && s.inner[d] == s.shape[d];
  uint64_t row_elems = 1;
  for (uint32_t d = 1; d < nd; ++d) row_elems *= s.shape[d];

  // the index: every cell empty, (2^64-1, 2^64-1), until its chunk is placed
  std::vector<uint8_t> index(cells * 16 + 4, 0xff);
  uint64_t offset = 0, pad = 0;
  const size_t group = static_cast<size_t>(std::max(resolve_threads(options.threads), 1));
  std::vector<std::vector<uint8_t>> padded(std::min(group, stored.size()));
  std::vector<EncodedChunk> chunks(padded.size());
  std::vector<std::vector<uint64_t>> hist(options.histograms ? padded.size() : 0, std::vector<uint64_t>(item * 256));
  std::vector<uint64_t> pads(padded.size());
  for (size_t g0 = 0; g0 < stored.size(); g0 += group) {
    const size_t n = std::min(group, stored.size() - g0);
    parallel_for(n, static_cast<int>(n), [&](size_t i, int) {
      const uint32_t* c = s.order + stored[g0 + i] * nd;
      uint64_t lo[kMaxNdim], extent[kMaxNdim];
      uint64_t inside = 1;
      for (uint32_t d = 0; d < nd; ++d) {
        lo[d] = uint64_t{c[d]} * s.inner[d];
        extent[d] = std::min(s.inner[d], s.shape[d] - lo[d]);
        inside *= extent[d];
      }
      pads[i] = chunk_elems - inside;
      const uint8_t* src;
      if (rows_only && extent[0] == s.inner[0]) {
        src = s.data + lo[0] * row_elems * item;
      } else {
        // padded copy: fill everywhere, then the in-bounds runs along the last dimension
        std::vector<uint8_t>& buf = padded[i];
        buf.resize(chunk_elems * item);
        for (uint64_t e = 0; e < chunk_elems; ++e) std::memcpy(buf.data() + e * item, s.fill, item);
        const uint64_t run = extent[nd - 1] * item;
        const uint64_t runs = inside / extent[nd - 1];
        for (uint64_t r = 0; r < runs; ++r) {
          // r as coordinates over the outer dimensions of the in-bounds region
          uint64_t rem = r, src_off = 0, dst_off = 0, src_stride = 1, dst_stride = 1;
          for (uint32_t d = nd; d-- > 0;) {
            const uint64_t idx = d == nd - 1 ? 0 : rem % extent[d];
            if (d != nd - 1) rem /= extent[d];
            src_off += (lo[d] + idx) * src_stride;
            dst_off += idx * dst_stride;
            src_stride *= s.shape[d];
            dst_stride *= s.inner[d];
          }
          std::memcpy(buf.data() + dst_off * item, s.data + src_off * item, run);
        }
        src = buf.data();
      }
      EncodeOptions one = options;
      one.threads = 1;
      if (options.histograms) {
        std::fill(hist[i].begin(), hist[i].end(), 0);
        one.histograms = hist[i].data();
      }
      chunks[i] = encode_chunk(src, s.dtype, s.inner, nd, one);
    });
    for (size_t i = 0; i < n; ++i) {
      const uint64_t size = chunks[i].size();
      emit(chunks[i]);
      chunks[i] = EncodedChunk();  // its memory serves the next group
      put_u64(index.data() + 16 * cell[stored[g0 + i]], offset);
      put_u64(index.data() + 16 * cell[stored[g0 + i]] + 8, size);
      offset += size;
      pad += pads[i];
      if (options.histograms) {
        for (uint64_t b = 0; b < item * 256; ++b) options.histograms[b] += hist[i][b];
      }
    }
  }
  const uint32_t crc = crc32c(index.data(), cells * 16);
  for (int b = 0; b < 4; ++b) index[cells * 16 + b] = static_cast<uint8_t>(crc >> (8 * b));
  *padding = pad;
  return index;
}

uint64_t write_shard(int fd, const ShardSpec& spec, const EncodeOptions& options, uint64_t* padding) {
  std::vector<iovec> pieces;
  uint64_t written = 0;
  const auto take = [&](const uint8_t* p, size_t n) {
    if (n) pieces.push_back({const_cast<uint8_t*>(p), n});
    written += n;
  };
  std::vector<uint8_t> index = encode_shard(
      spec, options,
      [&](const EncodedChunk& chunk) {
        chunk.pieces(take);
        write_all(fd, pieces);  // before the chunk, whose memory the pieces are, goes
      },
      padding);
  take(index.data(), index.size());
  write_all(fd, pieces);
  return written;
}

}  // namespace wcodec
