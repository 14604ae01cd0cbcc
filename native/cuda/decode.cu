// Host side of the GPU batch decoder: plan (parse on the host, lay out descriptors) and enqueue.
#include <algorithm>
#include <array>
#include <atomic>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "decode_kernels.cuh"
#include "wcodec/codec.h"
#include "wcodec/parallel.h"
#include "wcodec/cuda_decode.h"
#include "wcodec/staging.h"

namespace wcodec::cuda {

using namespace detail;

namespace {

size_t align256(size_t v) { return (v + 255) & ~size_t{255}; }

// Multiplication modulo the CRC polynomial on the host, without the data-dependent branches of
// multmodp (which mispredict on about every other bit): a plan makes a dozen per chunk.
uint32_t mulmod(uint32_t a, uint32_t b) {
  uint32_t p = 0;
  for (int i = 0; i < 32; ++i, a <<= 1) {
    p ^= b & (0u - (a >> 31));
    b = (b >> 1) ^ (kCrcPoly & (0u - (b & 1u)));
  }
  return p;
}

// x^(2^k) modulo the polynomial, k = 0..63
const std::array<uint32_t, 64> kX2n = [] {
  std::array<uint32_t, 64> t{};
  uint32_t v = 1u << 30;  // x^1
  for (uint32_t& e : t) {
    e = v;
    v = mulmod(v, v);
  }
  return t;
}();

// x^(8 * len) modulo the CRC polynomial, as shift_bytes on the device: multiplying a register by
// it appends len zero bytes.
uint32_t xpow8(uint64_t len) {
  uint32_t r = 1u << 31;
  for (int k = 3; len; len >>= 1, ++k) {
    if (len & 1) r = mulmod(kX2n[k & 63], r);
  }
  return r;
}

// The workspace header is the same for every plan: made once.
const DevConstants& constants() {
  static const DevConstants c = [] {
    DevConstants t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t r = i;
      for (int k = 0; k < 8; ++k) r = (r >> 1) ^ (kCrcPoly & (0u - (r & 1u)));
      t.crc_table[0][i] = r;
    }
    for (uint32_t i = 0; i < 256; ++i) {
      for (int k = 1; k < 4; ++k) t.crc_table[k][i] = (t.crc_table[k - 1][i] >> 8) ^ t.crc_table[0][t.crc_table[k - 1][i] & 0xff];
    }
    std::copy(kX2n.begin(), kX2n.end(), t.x2n);
    // The block matrices (see DevConstants): bit j of a lane's b0 and b1 words for n-tile n is
    // bit 8n + g (g = lane / 4) of the register of bit j % 8 of the row byte that A's bit k =
    // 128 half + 32 t + j holds (t = lane % 4): byte 16 t + 8 half + j / 8 of row 15, in block
    // position pos of a group, shifted to the group's end.
    constexpr uint32_t kRowBytes = 60;  // a row's bytes lie within 60 bytes of its first
    std::vector<uint32_t> bit_register(kCrcGroup * kRowBytes * 8);
    for (uint32_t pos = 0; pos < kCrcGroup; ++pos) {
      for (uint32_t rel = 0; rel < kRowBytes; ++rel) {
        const uint32_t after = (kCrcGroup - 1 - pos) * kBlockBytes + kBlockBytes - 1 - kCrcLastRowByte - rel;
        for (uint32_t bit = 0; bit < 8; ++bit) {
          bit_register[(pos * kRowBytes + rel) * 8 + bit] = mulmod(xpow8(after), t.crc_table[0][1u << bit]);
        }
      }
    }
    // the group shift: the packed parities (bits 0, 16, 1, 17 of a0..a3; pack_parities) are
    // register bits 8 n + 2 t + jj, their registers shifted by a group
    const uint32_t group_gap = xpow8(uint64_t{kCrcGroup} * kBlockBytes);
    const uint32_t packed_bit[4] = {0, 16, 1, 17};
    for (uint32_t lane = 0; lane < 32; ++lane) {
      const uint32_t g = lane / 4, tq = lane % 4;
      for (uint32_t n = 0; n < 4; ++n) {
        for (uint32_t half = 0; half < 2; ++half) {
          for (uint32_t pos = 0; pos < kCrcGroup; ++pos) {
            uint32_t word = 0;
            for (uint32_t j = 0; j < 32; ++j) {
              const uint32_t rel = 16 * tq + 8 * half + j / 8;
              word |= ((bit_register[(pos * kRowBytes + rel) * 8 + j % 8] >> (8 * n + g)) & 1u) << j;
            }
            t.block_matrix[pos][lane][2 * n + half] = word;
          }
          uint32_t word = 0;
          for (uint32_t m = 0; m < 4; ++m) {
            // packed_bit[m] holds register bit 8 (2 half + m / 2) + 2 tq + m % 2
            const uint32_t bit = 8 * (2 * half + m / 2) + 2 * tq + m % 2;
            word |= ((mulmod(group_gap, 1u << bit) >> (8 * n + g)) & 1u) << packed_bit[m];
          }
          t.group_shift[lane][2 * n + half] = word;
        }
      }
    }
    for (uint32_t r = 0; r < 16; ++r) {
      const uint32_t row_gap = xpow8(kCrcLastRowByte - (64 * (r % 8) + 4 * (r / 8)));
      for (uint32_t i = 0; i < 32; ++i) t.row_bits[r][i] = mulmod(row_gap, 1u << i);
    }
    return t;
  }();
  return c;
}

}  // namespace

// Blocks of chunks with the same plane count, rANS planes and tables: one launch, whose shared
// memory is what they need (one word ring per rANS plane per warp, the tables).
struct LaunchGroup {
  uint32_t end;  // the group's blocks end here
  uint32_t nplanes, rans, tables;
};

struct DecodePlan::Impl {
  std::vector<unsigned char> blob;  // the workspace image up to (not including) the chunk sums
  size_t chunks_off = 0, segments_off = 0, tables_off = 0, crc_off = 0, total = 0;
  uint32_t num_chunks = 0, num_segments = 0;
  size_t blocks_off = 0;
  std::vector<LaunchGroup> groups;  // one kernel launch each, in block order
};

DecodePlan::DecodePlan() : impl(std::make_unique<Impl>()) {}
DecodePlan::~DecodePlan() = default;
DecodePlan::DecodePlan(DecodePlan&&) noexcept = default;
DecodePlan& DecodePlan::operator=(DecodePlan&&) noexcept = default;
size_t DecodePlan::workspace_bytes() const { return impl->total; }
size_t DecodePlan::descriptor_bytes() const { return impl->blob.size(); }
const void* DecodePlan::descriptors() const { return impl->blob.data(); }
size_t DecodePlan::num_chunks() const { return impl->num_chunks; }
size_t DecodePlan::num_segments() const { return impl->num_segments; }

const char* status_message(int32_t status) {
  switch (status) {
    case kOk: return "ok";
    case kBadInitialState: return "corrupt segment: initial rANS state below 2^16";
    case kTruncatedSegment: return "truncated segment: renormalisation words run out";
    case kUnreadWords: return "corrupt segment: unread renormalisation words remain";
    case kFinalStateMismatch: return "corrupt segment: final rANS state mismatch";
    case kChecksumMismatch: return "checksum mismatch: decoded bytes are corrupt";
    case kBadPadding: return "corrupt chunk: nonzero padding before a segment or plane";
  }
  return "unknown decoder status";
}

namespace {

std::string chunk_prefix(size_t count, size_t k) {
  return count > 1 ? "chunk " + std::to_string(k) + ": " : std::string();
}

// Parses and validates the containers of a batch's chunks, on every core: validating hundreds
// of containers costs most of a plan.
void parse_chunks(const ChunkRef* refs, size_t count, ChunkInfo* infos) {
  parallel_for(count, resolve_threads(0), [&](size_t k, int) {
    try {
      infos[k] = parse_chunk_head(refs[k].host, refs[k].host_len, refs[k].len);
    } catch (const FormatError& e) {
      throw ChunkError(k, chunk_prefix(count, k), e.what());
    }
  });
}

// The plan of chunks whose containers are parsed (infos).
DecodePlan lay_out(const ChunkRef* refs, const ChunkInfo* infos, size_t count) {
  std::vector<DevChunk> chunks(count);
  std::vector<DevSegment> segments;
  std::vector<DevTable> tables;
  std::vector<DevBlock> blocks;
  std::vector<LaunchGroup> groups;
  auto prefix = [count](size_t k) { return chunk_prefix(count, k); };
  // Chunks are ordered by plane count, rANS planes and tables, each chunk's segments contiguous,
  // so that one launch of the kernel for that plane count decodes each run of equal needs.
  std::vector<LaunchGroup> needs(count);
  for (size_t k = 0; k < count; ++k) {
    const ChunkInfo& info = infos[k];
    needs[k].nplanes = info.nplanes;
    for (uint32_t p = 0; p < info.nplanes; ++p) {
      if (info.planes[p].mode != PlaneMode::Rans) continue;
      ++needs[k].rans;
      needs[k].tables += static_cast<uint32_t>(__builtin_popcount(info.planes[p].table_mask));
    }
  }
  auto key = [&needs](size_t k) { return std::array<uint32_t, 3>{needs[k].nplanes, needs[k].rans, needs[k].tables}; };
  std::vector<size_t> order(count);
  for (size_t k = 0; k < count; ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&key](size_t a, size_t b) { return key(a) < key(b); });
  for (size_t k : order) {
    const ChunkRef& r = refs[k];
    const ChunkInfo& info = infos[k];
    if (reinterpret_cast<uintptr_t>(r.device) % 16 != 0 || reinterpret_cast<uintptr_t>(r.out_dev) % 16 != 0) {
      throw std::invalid_argument(prefix(k) + "device input and output buffers must be 16-byte aligned");
    }
    if (r.out_len != info.nbytes) {
      throw ChunkError(k, prefix(k), "output buffer has " + std::to_string(r.out_len) +
                                         " bytes, the chunk decodes to " + std::to_string(info.nbytes));
    }
    // an empty chunk has no segment to check its checksum: the CRC32C of nothing is 0
    if (info.nseg == 0 && info.has_checksum && info.checksum != 0) {
      throw ChunkError(k, prefix(k), status_message(kChecksumMismatch));
    }
    DevChunk& c = chunks[k];
    c.num_segments = static_cast<uint32_t>(info.nseg);
    c.has_crc = info.has_checksum;
    c.expected_sum = ~info.checksum ^ mulmod(xpow8(info.nbytes), 0xffffffffu);
    // one table per (plane, predictor) present, shared by the chunk's segments; indices are
    // relative to the chunk's first table
    const uint32_t table_first = static_cast<uint32_t>(tables.size());
    uint32_t table_index[4][kNumPredictors] = {};
    for (uint32_t p = 0; p < info.nplanes; ++p) {
      const PlaneInfo& pl = info.planes[p];
      if (pl.mode != PlaneMode::Rans) continue;
      for (uint32_t q = 0; q < kNumPredictors; ++q) {
        if (!(pl.table_mask & (1u << q))) continue;
        table_index[p][q] = static_cast<uint32_t>(tables.size()) - table_first;
        DevTable t;
        std::memcpy(t.freq, pl.tables[q].freq, sizeof t.freq);
        tables.push_back(t);
      }
    }
    const uint32_t table_count = static_cast<uint32_t>(tables.size()) - table_first;
    for (uint64_t j = 0; j < info.nseg; j += kWarpsPerBlock) {
      blocks.push_back({static_cast<uint32_t>(segments.size() + j),
                        static_cast<uint32_t>(std::min<uint64_t>(kWarpsPerBlock, info.nseg - j)), table_first,
                        table_count});
    }
    // each segment's register shifted over the segments after it: one multiplication each,
    // from the last segment (which may be shorter) back
    const size_t first_segment = segments.size();
    segments.resize(first_segment + info.nseg);
    const uint32_t segment_shift = xpow8(uint64_t{info.seg_elems} * info.nplanes);
    uint32_t after = 1u << 31;  // x^0
    for (uint64_t j = info.nseg; j-- > 0;) {
      segments[first_segment + j].crc_shift = after;
      after = j + 1 == info.nseg ? xpow8(info.seg_len(j) * info.nplanes) : mulmod(segment_shift, after);
    }
    for (uint64_t j = 0; j < info.nseg; ++j) {
      DevSegment& s = segments[first_segment + j];
      s.first_elem = info.seg_begin(j);
      s.out = r.out_dev + s.first_elem * info.nplanes;
      s.row = info.row;
      s.n = static_cast<uint32_t>(info.seg_len(j));
      s.chunk = static_cast<uint32_t>(k);
      s.itemsize = static_cast<uint8_t>(info.nplanes);
      s.rotate = info.layout.rotate;
      for (uint32_t p = 0; p < info.nplanes; ++p) {
        const PlaneInfo& pl = info.planes[p];
        DevPlane& d = s.planes[p];
        const uint8_t* payload = r.device + pl.payload_offset;
        if (pl.mode == PlaneMode::Constant) {
          d.mode = 1;
          d.constant = pl.constant;
        } else if (pl.mode == PlaneMode::Raw) {
          d.mode = 0;
          d.payload = payload + s.first_elem;
          d.zero_before = static_cast<uint8_t>(j == 0 ? pl.pad_before : 0);
        } else {
          const uint64_t e = load_u64(r.host + pl.index_offset + 8 * j);
          const uint64_t prev_end = j == 0 ? 0 : load_u64(r.host + pl.index_offset + 8 * (j - 1)) >> 8;
          const uint64_t start = align_up(prev_end, 4);
          const uint64_t end = e >> 8;
          d.zero_before = static_cast<uint8_t>(j == 0 ? pl.pad_before : start - prev_end);
          const uint32_t pred = (e >> 4) & 0xf;
          if ((e & 0xf) == static_cast<uint64_t>(SegCoding::Raw)) {
            d.mode = 0;
            d.payload = payload + start;
          } else {
            d.mode = 2;
            d.payload = payload + start;
            d.len = static_cast<uint32_t>(end - start);
            d.table = table_index[p][pred];
            d.delta = pred == static_cast<uint32_t>(Predictor::Delta);
          }
        }
      }
    }
    // A thread block's warps decode eight consecutive segments and its slots free only when the
    // slowest ends: segments of one kind (plane modes, predictor) are put side by side, so that
    // a few delta or raw segments of a chunk slow their own blocks, not every block of it. Each
    // segment's descriptor holds all it needs (output, checksum shift), so their order is free.
    auto kind = [](const DevSegment& s) {
      uint32_t k = 0;
      for (const DevPlane& d : s.planes) k = (k << 3) | (uint32_t{d.mode} << 1) | d.delta;
      return k;
    };
    std::stable_sort(segments.begin() + static_cast<std::ptrdiff_t>(first_segment), segments.end(),
                     [&kind](const DevSegment& a, const DevSegment& b) { return kind(a) < kind(b); });
    if (groups.empty() || key(k) != std::array<uint32_t, 3>{groups.back().nplanes, groups.back().rans, groups.back().tables}) {
      groups.push_back(needs[k]);
    }
    groups.back().end = static_cast<uint32_t>(blocks.size());
  }
  DecodePlan plan;
  DecodePlan::Impl& P = *plan.impl;
  P.num_chunks = static_cast<uint32_t>(count);
  P.num_segments = static_cast<uint32_t>(segments.size());
  P.groups = std::move(groups);
  P.chunks_off = align256(sizeof(DevConstants));
  P.segments_off = align256(P.chunks_off + chunks.size() * sizeof(DevChunk));
  P.tables_off = align256(P.segments_off + segments.size() * sizeof(DevSegment));
  P.blocks_off = align256(P.tables_off + tables.size() * sizeof(DevTable));
  P.crc_off = align256(P.blocks_off + blocks.size() * sizeof(DevBlock));
  P.total = align256(P.crc_off + chunks.size() * sizeof(ChunkCrc));
  P.blob.assign(P.crc_off, 0);
  std::memcpy(P.blob.data(), &constants(), sizeof(DevConstants));
  if (!chunks.empty()) std::memcpy(P.blob.data() + P.chunks_off, chunks.data(), chunks.size() * sizeof(DevChunk));
  if (!segments.empty()) std::memcpy(P.blob.data() + P.segments_off, segments.data(), segments.size() * sizeof(DevSegment));
  if (!tables.empty()) std::memcpy(P.blob.data() + P.tables_off, tables.data(), tables.size() * sizeof(DevTable));
  if (!blocks.empty()) std::memcpy(P.blob.data() + P.blocks_off, blocks.data(), blocks.size() * sizeof(DevBlock));
  return plan;
}

}  // namespace

DecodePlan plan_decode(const ChunkRef* refs, size_t count) {
  // default-initialised: a ChunkInfo holds 4 KiB of tables that parsing fills as needed
  std::unique_ptr<ChunkInfo[]> infos(new ChunkInfo[count]);
  parse_chunks(refs, count, infos.get());
  return lay_out(refs, infos.get(), count);
}

DecodePlan stage_and_plan(const StageObject* objects, size_t count, uint8_t* staging, uint64_t staging_len,
                          uint32_t align, uint8_t* device_staging, const StagedOutput* outs, size_t nchunks,
                          uint64_t* chunk_offset, uint64_t* chunk_len, cudaStream_t stream, int threads) {
  if (align % 16 != 0 || reinterpret_cast<uintptr_t>(device_staging) % align != 0) {
    throw std::invalid_argument("stage_and_plan: chunks must be 16-byte aligned in both buffers");
  }
  // every chunk belongs to exactly one object, and objects lie in order in the buffer
  std::vector<uint8_t> covered(nchunks, 0);
  for (size_t k = 0; k < count; ++k) {
    const StageObject& o = objects[k];
    if (o.first > nchunks || o.nchunks > nchunks - o.first) {
      throw std::invalid_argument("stage_and_plan: object " + std::to_string(k) + " has chunks past the batch");
    }
    if (k > 0 && o.slot < objects[k - 1].slot + objects[k - 1].slot_len) {
      throw std::invalid_argument("stage_and_plan: object slots overlap or are out of order");
    }
    for (uint64_t i = o.first; i < o.first + o.nchunks; ++i) {
      if (covered[i]++) throw std::invalid_argument("stage_and_plan: chunk " + std::to_string(i) + " has two objects");
    }
  }
  if (std::find(covered.begin(), covered.end(), 0) != covered.end()) {
    throw std::invalid_argument("stage_and_plan: a chunk has no object");
  }
  const std::vector<StagePiece> pieces =
      plan_staging(objects, count, staging, staging_len, align, chunk_offset, chunk_len, threads);
  std::vector<ChunkRef> refs(nchunks);
  std::unique_ptr<ChunkInfo[]> infos(new ChunkInfo[nchunks]);
  // a chunk's container is parsed by the thread that reads its last piece, while it is in cache
  std::unique_ptr<std::atomic<uint32_t>[]> missing(new std::atomic<uint32_t>[nchunks]);
  for (size_t i = 0; i < nchunks; ++i) {
    refs[i] = {staging + chunk_offset[i], chunk_len[i], device_staging + chunk_offset[i], outs[i].dev, outs[i].len};
    missing[i].store(0, std::memory_order_relaxed);
  }
  for (const StagePiece& p : pieces) missing[p.chunk].fetch_add(1, std::memory_order_relaxed);
  auto parse = [&](size_t k) {
    try {
      infos[k] = parse_chunk(refs[k].host, refs[k].len);
    } catch (const FormatError& e) {
      throw ChunkError(k, chunk_prefix(nchunks, k), e.what());
    }
  };
  for (size_t k = 0; k < nchunks; ++k) {
    if (missing[k].load(std::memory_order_relaxed) == 0) parse(k);  // an empty chunk: nothing to read
  }
  const auto fetched = [&](const StagePiece& p) {
    if (missing[p.chunk].fetch_sub(1, std::memory_order_acq_rel) == 1) parse(p.chunk);
  };
  fetch_pieces(objects, pieces.data(), pieces.size(), staging, threads, fetched);
  // One copy once everything is read, the layout made while it runs. Copying parts as they are
  // read was slower (MiniLM on an H100 host, in-process A/B: 2, 4 parts 3-13% slower than one):
  // the copies contend with the reading threads for host memory bandwidth.
  const uint64_t total = pieces.empty() ? 0 : pieces.back().dst + pieces.back().len;
  const cudaError_t err = cudaMemcpyAsync(device_staging, staging, total, cudaMemcpyHostToDevice, stream);
  if (err != cudaSuccess) throw std::runtime_error(std::string("CUDA error: ") + cudaGetErrorString(err));
  try {
    return lay_out(refs.data(), infos.get(), nchunks);
  } catch (...) {
    // the caller may free or reuse the staging buffer once this returns: no copy may still read it
    cudaStreamSynchronize(stream);
    throw;
  }
}

namespace {

// Raises a kernel's dynamic shared memory limit on the current device to at least `bytes`. The
// limits set so far are remembered per device and kernel: setting one is a driver call that
// would otherwise delay every launch.
template <typename Kernel>
cudaError_t allow_shared_memory(Kernel kernel, size_t bytes) {
  constexpr int kDevices = 64;
  static std::atomic<size_t> allowed[kDevices];
  int device = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err != cudaSuccess) return err;
  std::atomic<size_t>* known = device < kDevices ? &allowed[device] : nullptr;
  if (known && known->load(std::memory_order_relaxed) >= bytes) return cudaSuccess;
  err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  if (err == cudaSuccess && known) {
    size_t seen = known->load(std::memory_order_relaxed);
    while (seen < bytes && !known->compare_exchange_weak(seen, bytes, std::memory_order_relaxed)) {
    }
  }
  return err;
}

using Kernel = void (*)(const DevBlock*, const DevSegment*, const DevTable*, const DevConstants*, const DevChunk*,
                       ChunkCrc*, int32_t*, int, int, bool);

// Replaces `kernel` by `other` where `blocks` thread blocks of `smem` bytes of shared memory
// take fewer waves of the current device's SMs with it.
cudaError_t fewer_waves(Kernel& kernel, Kernel other, uint32_t blocks, size_t smem) {
  int device = 0, sms = 0, fit = 0, fit_other = 0;
  cudaError_t err = cudaGetDevice(&device);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (err == cudaSuccess) err = allow_shared_memory(kernel, smem);
  if (err == cudaSuccess) err = allow_shared_memory(other, smem);
  if (err == cudaSuccess) err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit, kernel, kWarpsPerBlock * 32, smem);
  if (err == cudaSuccess) {
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&fit_other, other, kWarpsPerBlock * 32, smem);
  }
  if (err != cudaSuccess) return err;
  auto waves = [&](int per_sm) {
    const uint64_t at_once = uint64_t(std::max(per_sm, 0)) * uint64_t(std::max(sms, 1));
    return at_once ? (blocks + at_once - 1) / at_once : UINT64_MAX;
  };
  if (waves(fit_other) < waves(fit)) kernel = other;
  return cudaSuccess;
}

}  // namespace

cudaError_t enqueue_decode(const DecodePlan& plan, void* workspace_dev, size_t workspace_bytes,
                           int32_t* status_dev, bool verify_checksum, cudaStream_t stream) {
  const DecodePlan::Impl& P = *plan.impl;
  if (workspace_bytes < P.total) return cudaErrorInvalidValue;
  unsigned char* ws = static_cast<unsigned char*>(workspace_dev);
  if (P.num_chunks == 0) return cudaSuccess;
  auto* chunk_crc = reinterpret_cast<ChunkCrc*>(ws + P.crc_off);
  const uint32_t clear_blocks = std::min<uint32_t>((P.num_chunks + 255) / 256, 1024);
  clear_chunks_kernel<<<clear_blocks, 256, 0, stream>>>(status_dev, verify_checksum ? chunk_crc : nullptr,
                                                        P.num_chunks);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  const auto* consts = reinterpret_cast<const DevConstants*>(ws);
  const auto* blocks = reinterpret_cast<const DevBlock*>(ws + P.blocks_off);
  uint32_t first = 0;
  for (const LaunchGroup& g : P.groups) {
    const uint32_t count = g.end - first;
    if (count == 0) continue;
    // a launch gives room for at least one table and one ring
    const uint32_t tables = std::max(g.tables, 1u), rans = std::max(g.rans, 1u);
    auto launch = [&](auto kernel, size_t smem) {
      cudaError_t e = allow_shared_memory(kernel, smem);
      if (e != cudaSuccess) return e;
      kernel<<<count, kWarpsPerBlock * 32, smem, stream>>>(
          blocks + first, reinterpret_cast<const DevSegment*>(ws + P.segments_off),
          reinterpret_cast<const DevTable*>(ws + P.tables_off), consts,
          reinterpret_cast<const DevChunk*>(ws + P.chunks_off), chunk_crc, status_dev, static_cast<int>(tables),
          static_cast<int>(rans), verify_checksum);
      return cudaGetLastError();
    };
    if (g.nplanes == 1) {
      err = launch(decode_blocks_kernel<1, 4>, block_smem_bytes<1>(tables, rans));
    } else if (g.nplanes == 2) {
      // every register the compiler wants (two blocks an SM), or 80 (three, at the cost of
      // spills) where that takes fewer waves
      const size_t smem = block_smem_bytes<2>(tables, rans);
      Kernel kernel = decode_blocks_kernel<2, 1>;
      err = fewer_waves(kernel, decode_blocks_kernel<2, 3>, count, smem);
      if (err == cudaSuccess) err = launch(kernel, smem);
    } else {
      err = launch(decode_blocks_kernel<4, 1>, block_smem_bytes<4>(tables, rans));
    }
    if (err != cudaSuccess) return err;
    first = g.end;
  }
  return err;
}

DecodeGraph::DecodeGraph(const DecodePlan& plan, void* workspace_dev, size_t workspace_bytes, int32_t* status_dev,
                         bool verify_checksum) {
  auto fail = [](const char* what, cudaError_t err) {
    throw std::runtime_error(std::string("CUDA error ") + what + ": " + cudaGetErrorString(err));
  };
  cudaStream_t stream = nullptr;
  cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
  if (err != cudaSuccess) fail("creating a stream", err);
  cudaGraph_t graph = nullptr;
  // relaxed: the first launch on a device may set a kernel attribute while recording
  err = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (err == cudaSuccess) {
    const cudaError_t enq = enqueue_decode(plan, workspace_dev, workspace_bytes, status_dev, verify_checksum, stream);
    err = cudaStreamEndCapture(stream, &graph);
    if (enq != cudaSuccess) err = enq;
  }
  if (err == cudaSuccess) err = cudaGraphInstantiate(&exec_, graph, 0);
  if (graph) cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  if (err != cudaSuccess) fail("recording the decode", err);
}

DecodeGraph::~DecodeGraph() {
  if (exec_) cudaGraphExecDestroy(exec_);
}

cudaError_t DecodeGraph::launch(cudaStream_t stream) const { return cudaGraphLaunch(exec_, stream); }

}  // namespace wcodec::cuda
