// CPU decoder: all segments of all chunks in a batch form one pool of tasks. A task decodes one
// segment index j of every plane of a chunk into per-worker scratch (64 KiB a plane, so it stays
// in L2), merges the planes into the output and checksums that output range; the per-segment
// checksums are combined per chunk at the end.
#include <algorithm>
#include <string>
#include <vector>

#include "segment_decode.h"
#include "wcodec/codec.h"
#include "wcodec/crc32c.h"
#include "wcodec/parallel.h"
#include "wcodec/planes.h"

namespace wcodec {

namespace {

struct ChunkState {
  ChunkInfo info;
  const uint8_t* src;
  uint8_t* dst;
  std::unique_ptr<DecodeTable> tables[4][kNumPredictors];
  std::vector<uint32_t> seg_crc;
  SegmentDecoder decoder;
  SegmentGroupDecoder group_decoder;
};

std::string seg_context(uint32_t p, uint64_t j) {
  return "plane " + std::to_string(p) + " segment " + std::to_string(j) + ": ";
}

// Decodes segments j0 .. j0 + count - 1 (count <= kMaxGroup) of every plane: the rANS segments of
// one plane are decoded as a group, then each segment's planes are merged into the output.
void decode_group_task(const ChunkState& c, uint64_t j0, uint64_t count, uint8_t* scratch) {
  const ChunkInfo& info = c.info;
  const uint32_t np = info.nplanes;
  const uint8_t* plane_ptr[kMaxGroup][4];
  for (uint32_t p = 0; p < np; ++p) {
    const PlaneInfo& pl = info.planes[p];
    const uint8_t* payload = c.src + pl.payload_offset;
    SegmentJob jobs[kMaxGroup];
    uint64_t job_seg[kMaxGroup];
    Predictor job_pred[kMaxGroup];
    int njobs = 0;
    for (uint64_t g = 0; g < count; ++g) {
      const uint64_t j = j0 + g;
      const uint64_t b = info.seg_begin(j);
      const uint64_t n = info.seg_len(j);
      // Single-plane chunks decode straight into the output.
      uint8_t* target = np == 1 ? c.dst + b : scratch + (g * np + p) * size_t{info.seg_elems};
      if (pl.mode == PlaneMode::Constant) {
        std::memset(target, pl.constant, n);
        plane_ptr[g][p] = target;
        continue;
      }
      if (pl.mode == PlaneMode::Raw) {
        plane_ptr[g][p] = payload + b;
        continue;
      }
      const uint64_t e = load_u64(c.src + pl.index_offset + 8 * j);
      const uint64_t start = j == 0 ? 0 : align_up(load_u64(c.src + pl.index_offset + 8 * (j - 1)) >> 8, 4);
      const uint64_t end = e >> 8;
      if ((e & 0xf) == static_cast<uint64_t>(SegCoding::Raw)) {
        plane_ptr[g][p] = payload + start;
        continue;
      }
      const uint32_t pred = (e >> 4) & 0xf;
      jobs[njobs] = {c.tables[p][pred].get(), payload + start, end - start, target, n};
      job_seg[njobs] = j;
      job_pred[njobs] = static_cast<Predictor>(pred);
      ++njobs;
      plane_ptr[g][p] = target;
    }
    bool decoded = false;
    if (njobs > 1) {
      try {
        c.group_decoder(jobs, njobs);
        decoded = true;
      } catch (const FormatError&) {
        // decoded singly below, which names the failing segment
      }
    }
    for (int k = 0; k < njobs; ++k) {
      if (!decoded) {
        try {
          c.decoder(*jobs[k].table, jobs[k].payload, jobs[k].len, jobs[k].out, jobs[k].n);
        } catch (const FormatError& err) {
          throw FormatError(seg_context(p, job_seg[k]) + err.what());
        }
      }
      if (job_pred[k] == Predictor::Delta) {
        undo_delta(jobs[k].out, info.seg_begin(job_seg[k]), jobs[k].n, info.row);
      }
    }
  }
  for (uint64_t g = 0; g < count; ++g) {
    const uint64_t j = j0 + g;
    uint8_t* out = c.dst + info.seg_begin(j) * np;
    if (np == 1) {
      if (plane_ptr[g][0] != out) std::memcpy(out, plane_ptr[g][0], info.seg_len(j));
    } else {
      merge_planes(plane_ptr[g], info.seg_len(j), info.layout, out);
    }
  }
}

}  // namespace

void decode_chunks(const DecodeJob* jobs, size_t njobs, int threads) {
  auto prefix = [njobs](size_t k) { return njobs > 1 ? "chunk " + std::to_string(k) + ": " : std::string(); };
  std::vector<ChunkState> chunks(njobs);
  // Parsing and table building cost microseconds per chunk: in parallel too, for batches of
  // hundreds of chunks.
  parallel_for(njobs, resolve_threads(threads), [&](size_t k, int) {
    ChunkState& c = chunks[k];
    try {
      c.info = parse_chunk(jobs[k].src, jobs[k].src_len);
    } catch (const FormatError& e) {
      throw ChunkError(k, prefix(k), e.what());
    }
    if (jobs[k].dst_len != c.info.nbytes) {
      throw ChunkError(k, prefix(k), "output buffer has " + std::to_string(jobs[k].dst_len) +
                                         " bytes, the chunk decodes to " + std::to_string(c.info.nbytes));
    }
    c.src = jobs[k].src;
    c.dst = jobs[k].dst;
    for (uint32_t p = 0; p < c.info.nplanes; ++p) {
      for (uint32_t q = 0; q < kNumPredictors; ++q) {
        if (!(c.info.planes[p].table_mask & (1u << q))) continue;
        c.tables[p][q] = std::make_unique<DecodeTable>();
        build_decode_table(c.info.planes[p].tables[q], c.tables[p][q].get());
      }
    }
    c.seg_crc.assign(c.info.has_checksum ? c.info.nseg : 0, 0);
    c.decoder = select_segment_decoder();
    c.group_decoder = select_segment_group_decoder();
  });
  // A task is a group of consecutive segments of one chunk: as many as the group decoder
  // interleaves, fewer when that would leave threads without a task.
  uint64_t total_seg = 0;
  for (const ChunkState& c : chunks) total_seg += c.info.nseg;
  const int threads_wanted = resolve_threads(threads);
  const uint64_t per_thread = (total_seg + threads_wanted - 1) / static_cast<uint64_t>(threads_wanted);
  const uint64_t group = std::clamp<uint64_t>(per_thread, 1, kMaxGroup);
  std::vector<uint64_t> first_task(njobs + 1, 0);
  for (size_t k = 0; k < njobs; ++k) {
    first_task[k + 1] = first_task[k] + (chunks[k].info.nseg + group - 1) / group;
  }
  const uint64_t ntasks = first_task[njobs];
  const int workers = static_cast<int>(std::min<uint64_t>(threads_wanted, std::max<uint64_t>(ntasks, 1)));
  uint64_t max_scratch = 0;
  for (const ChunkState& c : chunks) {
    if (c.info.nplanes > 1) max_scratch = std::max<uint64_t>(max_scratch, group * c.info.nplanes * c.info.seg_elems);
  }
  std::vector<std::vector<uint8_t>> scratch(workers, std::vector<uint8_t>(max_scratch));
  parallel_for(ntasks, workers, [&](size_t task, int worker) {
    const size_t k = static_cast<size_t>(std::upper_bound(first_task.begin(), first_task.end(), task) -
                                         first_task.begin() - 1);
    const ChunkState& c = chunks[k];
    const uint64_t j0 = group * (task - first_task[k]);
    const uint64_t count = std::min<uint64_t>(group, c.info.nseg - j0);
    try {
      decode_group_task(c, j0, count, scratch[worker].data());
    } catch (const FormatError& e) {
      throw ChunkError(k, prefix(k), e.what());
    }
    if (c.info.has_checksum) {
      const uint64_t sz = c.info.nplanes;
      for (uint64_t j = j0; j < j0 + count; ++j) {
        chunks[k].seg_crc[j] = crc32c(c.dst + c.info.seg_begin(j) * sz, c.info.seg_len(j) * sz);
      }
    }
  });
  for (size_t k = 0; k < njobs; ++k) {
    const ChunkState& c = chunks[k];
    if (!c.info.has_checksum) continue;
    uint32_t crc = crc32c(nullptr, 0);
    for (uint64_t j = 0; j < c.info.nseg; ++j) {
      const uint64_t len = c.info.seg_len(j) * c.info.nplanes;
      crc = j == 0 ? c.seg_crc[0] : crc32c_combine(crc, c.seg_crc[j], len);
    }
    if (crc != c.info.checksum) throw ChunkError(k, prefix(k), "checksum mismatch: decoded bytes are corrupt");
  }
}

void plane_histograms(const uint8_t* data, uint64_t nelem, const DTypeLayout& layout,
                      uint64_t hist[4][256]) {
  for (uint32_t p = 0; p < 4; ++p) std::fill(hist[p], hist[p] + 256, 0);
  constexpr uint64_t kBlock = 1 << 16;
  std::vector<uint8_t> buf(layout.itemsize * kBlock);
  uint8_t* planes[4];
  for (uint32_t p = 0; p < layout.itemsize; ++p) planes[p] = buf.data() + p * kBlock;
  for (uint64_t b = 0; b < nelem; b += kBlock) {
    const uint64_t n = std::min(kBlock, nelem - b);
    split_planes(data + b * layout.itemsize, n, layout, planes);
    for (uint32_t p = 0; p < layout.itemsize; ++p) {
      for (uint64_t i = 0; i < n; ++i) ++hist[p][planes[p][i]];
    }
  }
}

}  // namespace wcodec
