// CPU decoder: all segments of all chunks in a batch form one pool of tasks. A task decodes a run
// of up to kMaxGroup segments (every plane of each, the rANS ones interleaved by the group
// decoder) into per-worker scratch (64 KiB a plane, so it stays in L2), merges the planes into
// the outputs and checksums those output ranges; the per-segment checksums are combined per
// chunk at the end. A two-byte dtype with one coded plane (bf16 and fp16 weights: the exponent
// plane) is merged by the AVX-512 group decoder as it decodes, which saves the merge pass.
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "cpu_features.h"
#include "prefault.h"
#include "scratch.h"
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
  const DecodeTable* tables[4][kNumPredictors] = {};
  std::vector<uint32_t> seg_crc;
};

std::string seg_context(uint32_t p, uint64_t j) {
  return "plane " + std::to_string(p) + " segment " + std::to_string(j) + ": ";
}

// One segment of one chunk, as part of a task.
struct Piece {
  size_t chunk;
  uint64_t seg;
};

// A segment decode that failed, named by its chunk.
struct PieceError {
  size_t chunk;
  std::string what;
};

// Whether a chunk's tables need their rank tables: the AVX-512 decoder steps two segments of
// one table by them where byte permutes are preferred (segment_avx512.cpp), so a chunk of one
// segment a plane, or a CPU that looks entries up by gathers, never uses them.
bool wants_ranks(const ChunkInfo& info) { return info.nseg >= 2 && cpu_prefers_permute_lookups(); }

// The decode tables a task builds for itself, when the batch did not build them all up front
// (decode_chunks): at most one per plane and predictor of each of its pieces, kept per thread.
class TaskTables {
 public:
  TaskTables() {
    thread_local std::unique_ptr<DecodeTable[]> kept;
    if (!kept) kept.reset(new DecodeTable[kMaxTables]);
    tables_ = kept.get();
  }
  // Chunk k's table for plane p and predictor q, built on first use in this task.
  const DecodeTable* get(const ChunkState& c, size_t k, uint32_t p, uint32_t q) {
    for (int i = 0; i < count_; ++i) {
      if (key_[i].chunk == k && key_[i].plane == p && key_[i].pred == q) return tables_ + i;
    }
    build_decode_table(c.info.planes[p].tables[q], tables_ + count_, wants_ranks(c.info));
    key_[count_] = {k, p, q};
    return tables_ + count_++;
  }

 private:
  static constexpr int kMaxTables = kMaxGroup * 4 * kNumPredictors;
  struct Key {
    size_t chunk;
    uint32_t plane, pred;
  };
  DecodeTable* tables_;
  Key key_[kMaxTables];
  int count_ = 0;
};

// Decodes a task's pieces (up to kMaxGroup segments, possibly of several chunks): the rANS
// segments of all their planes run through the group decoder kMaxGroup at a time, then each
// piece's planes are merged into its chunk's output and checksummed. Tables the batch did not
// build up front are built here, just before their segments decode (still in cache).
void decode_task(const std::vector<ChunkState>& chunks, const Piece* pieces, int count, uint8_t* scratch,
                 uint64_t scratch_stride) {
  TaskTables own;
  const uint8_t* plane_ptr[kMaxGroup][4];
  SegmentJob jobs[kMaxGroup * 4];
  int job_piece[kMaxGroup * 4];
  uint32_t job_plane[kMaxGroup * 4];
  Predictor job_pred[kMaxGroup * 4];
  int njobs = 0;
  for (int g = 0; g < count; ++g) {
    const ChunkState& c = chunks[pieces[g].chunk];
    const ChunkInfo& info = c.info;
    const uint64_t j = pieces[g].seg;
    const uint64_t b = info.seg_begin(j);
    const uint64_t n = info.seg_len(j);
    const uint32_t np = info.nplanes;
    for (uint32_t p = 0; p < np; ++p) {
      const PlaneInfo& pl = info.planes[p];
      const uint8_t* payload = c.src + pl.payload_offset;
      // Single-plane chunks decode straight into the output.
      uint8_t* target = np == 1 ? c.dst + b : scratch + g * scratch_stride + p * size_t{info.seg_elems};
      plane_ptr[g][p] = target;
      if (pl.mode == PlaneMode::Constant) {
        std::memset(target, pl.constant, n);
        continue;
      }
      if (pl.mode == PlaneMode::Raw) {
        plane_ptr[g][p] = payload + b;
        continue;
      }
      const uint64_t e = load_u64(c.src + pl.index_offset + 8 * j);
      const uint64_t start = j == 0 ? 0 : align_up(load_u64(c.src + pl.index_offset + 8 * (j - 1)) >> 8, 4);
      if ((e & 0xf) == static_cast<uint64_t>(SegCoding::Raw)) {
        plane_ptr[g][p] = payload + start;
        continue;
      }
      const uint32_t pred = (e >> 4) & 0xf;
      const DecodeTable* table = c.tables[p][pred] ? c.tables[p][pred] : own.get(c, pieces[g].chunk, p, pred);
      jobs[njobs] = {table, payload + start, (e >> 8) - start, target, n};
      job_piece[njobs] = g;
      job_plane[njobs] = p;
      job_pred[njobs] = static_cast<Predictor>(pred);
      ++njobs;
    }
  }
  // A two-byte element's plane decoded alone (no delta predictor, the other plane raw or
  // constant, so its bytes are there already) may be merged into the output as it decodes.
  MergeTarget merge[kMaxGroup];
  int merge_job[kMaxGroup];
  for (int g = 0; g < count; ++g) {
    merge_job[g] = -1;
    const ChunkState& c = chunks[pieces[g].chunk];
    if (c.info.nplanes != 2) continue;
    int only = -1;
    for (int k = 0; k < njobs; ++k) {
      if (job_piece[k] != g) continue;
      only = only == -1 && job_pred[k] == Predictor::None ? k : -2;
    }
    if (only < 0) continue;
    const uint32_t p = job_plane[only];
    merge[g] = {plane_ptr[g][1 - p], c.dst + c.info.seg_begin(pieces[g].seg) * 2, p == 0, c.info.layout.rotate};
    jobs[only].merge = &merge[g];
    merge_job[g] = only;
  }
  const SegmentGroupDecoder group_decoder = select_segment_group_decoder();
  const SegmentDecoder single_decoder = select_segment_decoder();
  for (int k0 = 0; k0 < njobs; k0 += kMaxGroup) {
    const int n = std::min(kMaxGroup, njobs - k0);
    try {
      group_decoder(jobs + k0, n);
      continue;
    } catch (const FormatError&) {
      // decoded singly below, which names the failing segment; the merge pass then merges all
      for (int k = k0; k < k0 + n; ++k) jobs[k].merged = 0;
    }
    for (int k = k0; k < k0 + n; ++k) {
      try {
        single_decoder(*jobs[k].table, jobs[k].payload, jobs[k].len, jobs[k].out, jobs[k].n);
      } catch (const FormatError& err) {
        const Piece& piece = pieces[job_piece[k]];
        throw PieceError{piece.chunk, seg_context(job_plane[k], piece.seg) + err.what()};
      }
    }
  }
  for (int k = 0; k < njobs; ++k) {
    if (job_pred[k] == Predictor::Delta) {
      const ChunkInfo& info = chunks[pieces[job_piece[k]].chunk].info;
      undo_delta(jobs[k].out, info.seg_begin(pieces[job_piece[k]].seg), jobs[k].n, info.row);
    }
  }
  for (int g = 0; g < count; ++g) {
    const ChunkState& c = chunks[pieces[g].chunk];
    const ChunkInfo& info = c.info;
    const uint64_t j = pieces[g].seg;
    const uint64_t n = info.seg_len(j);
    uint8_t* out = c.dst + info.seg_begin(j) * info.nplanes;
    if (info.nplanes == 1) {
      if (plane_ptr[g][0] != out) std::memcpy(out, plane_ptr[g][0], n);
      continue;
    }
    // what the decoder did not merge: all of it, or the segment's last symbols
    const uint64_t done = merge_job[g] >= 0 ? jobs[merge_job[g]].merged : 0;
    const uint8_t* rest[4];
    for (uint32_t p = 0; p < info.nplanes; ++p) rest[p] = plane_ptr[g][p] + done;
    merge_planes(rest, n - done, info.layout, out + done * info.nplanes);
  }
}

// Storage for a batch's decode tables (16 KiB each) when they are built up front: room for
// kKeptTables, kept by the calling thread between calls (memory it has not touched stays
// unmapped). A batch that needs more (thousands of small chunks) builds each table in the task
// that decodes its segments instead: allocating megabytes of tables afresh for every batch costs
// as much in page faults as building them, and tables built long before their use have left
// the cache (4 KiB chunks of int8 weights decoded twice as fast so).
constexpr size_t kKeptTables = 512;

DecodeTable* kept_tables() {
  thread_local std::unique_ptr<DecodeTable[]> kept;
  if (!kept) kept.reset(new DecodeTable[kKeptTables]);
  return kept.get();
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
    c.seg_crc.assign(c.info.has_checksum ? c.info.nseg : 0, 0);
  });
  std::vector<size_t> first_table(njobs + 1, 0);
  for (size_t k = 0; k < njobs; ++k) {
    size_t n = 0;
    for (uint32_t p = 0; p < chunks[k].info.nplanes; ++p) n += __builtin_popcount(chunks[k].info.planes[p].table_mask);
    first_table[k + 1] = first_table[k] + n;
  }
  // A task is a run of consecutive segments, crossing chunk boundaries: as many as the group
  // decoder interleaves, fewer when that would leave threads without a task. Chunks of a
  // checkpoint are often one segment each, so runs inside one chunk would leave the group
  // decoder a single segment.
  std::vector<Piece> pieces;
  uint64_t most_segments = 0;
  for (size_t k = 0; k < njobs; ++k) {
    for (uint64_t j = 0; j < chunks[k].info.nseg; ++j) pieces.push_back({k, j});
    most_segments = std::max(most_segments, chunks[k].info.nseg);
  }
  const int threads_wanted = resolve_threads(threads);
  const uint64_t per_thread = (pieces.size() + threads_wanted - 1) / static_cast<uint64_t>(threads_wanted);
  const uint64_t group = std::clamp<uint64_t>(per_thread, 1, kMaxGroup);
  // Tables are built up front, once per chunk, only where a chunk's segments span several tasks
  // (each would build them again) and all of them fit the kept arena; otherwise every table is
  // built by the one task, or few tasks, that use it.
  const bool up_front = most_segments > group && first_table[njobs] <= kKeptTables;
  DecodeTable* const arena = up_front ? kept_tables() : nullptr;
  std::vector<std::pair<uint8_t*, uint64_t>> outputs(njobs);
  for (size_t k = 0; k < njobs; ++k) outputs[k] = {chunks[k].dst, chunks[k].info.nbytes};
  const std::vector<Region> regions = output_regions(outputs, resolve_threads(threads));
  parallel_for(njobs + regions.size(), resolve_threads(threads), [&](size_t k, int) {
    if (k >= njobs) {
      fault_in(regions[k - njobs]);
      return;
    }
    if (arena == nullptr) return;  // each task builds its own (decode_task)
    ChunkState& c = chunks[k];
    size_t t = first_table[k];
    for (uint32_t p = 0; p < c.info.nplanes; ++p) {
      for (uint32_t q = 0; q < kNumPredictors; ++q) {
        if (!(c.info.planes[p].table_mask & (1u << q))) continue;
        build_decode_table(c.info.planes[p].tables[q], arena + t, wants_ranks(c.info));
        c.tables[p][q] = arena + t++;
      }
    }
  });
  const uint64_t ntasks = (pieces.size() + group - 1) / group;
  const int workers = static_cast<int>(std::min<uint64_t>(threads_wanted, std::max<uint64_t>(ntasks, 1)));
  uint64_t stride = 0;  // scratch per piece: every plane of the largest multi-plane segment
  for (const ChunkState& c : chunks) {
    if (c.info.nplanes > 1) stride = std::max<uint64_t>(stride, uint64_t{c.info.nplanes} * c.info.seg_elems);
  }
  parallel_for(ntasks, workers, [&](size_t task, int) {
    const uint64_t first = task * group;
    const int count = static_cast<int>(std::min<uint64_t>(group, pieces.size() - first));
    const Piece* mine = pieces.data() + first;
    try {
      decode_task(chunks, mine, count, kept_scratch<0>(group * stride), stride);
    } catch (const PieceError& e) {
      throw ChunkError(e.chunk, prefix(e.chunk), e.what);
    }
    for (int g = 0; g < count; ++g) {
      ChunkState& c = chunks[mine[g].chunk];
      if (!c.info.has_checksum) continue;
      const uint64_t j = mine[g].seg;
      const uint64_t sz = c.info.nplanes;
      c.seg_crc[j] = crc32c(c.dst + c.info.seg_begin(j) * sz, c.info.seg_len(j) * sz);
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
