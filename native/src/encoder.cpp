// Chunk encoder: split into byte planes, choose per segment a predictor and a coding, build one
// frequency table per plane and predictor, rANS-code the segments in parallel, lay out the chunk.
#include <algorithm>
#include <cstring>
#include <limits>
#include <string>

#include "wcodec/codec.h"
#include "wcodec/crc32c.h"
#include "wcodec/parallel.h"
#include "wcodec/planes.h"
#include "wcodec/rans.h"
#include "scratch.h"
#include "segment_encode.h"

namespace wcodec {

namespace {

using Hist = uint32_t[256];

struct SegmentPlan {
  SegCoding coding = SegCoding::Raw;
  Predictor pred = Predictor::None;
  std::vector<uint8_t> payload;  // rANS segments only
};

struct PlanePlan {
  PlaneMode mode = PlaneMode::Raw;
  uint8_t constant = 0;
  uint8_t table_mask = 0;
  FreqTable tables[kNumPredictors];
  std::vector<SegmentPlan> segs;
  const uint8_t* bytes = nullptr;  // the plane's nelem bytes
};

// Bits of n symbols counted in h under their own order-0 model: n log2 n - sum h log2 h.
template <typename Count>
double self_bits(const Count* h, uint64_t n) {
  double sum = 0.0;
  for (int s = 0; s < 256; ++s) {
    if (h[s]) sum += static_cast<double>(h[s]) * log2_count(h[s]);
  }
  return static_cast<double>(n) * log2_count(n) - sum;
}

// Table for a summed histogram; a histogram with one symbol gets a second one (count 1) so the
// table is valid (a single symbol cannot hold all 4096 slots).
void table_from(const uint64_t* counts_in, FreqTable* t) {
  uint64_t counts[256];
  int present = 0;
  for (int s = 0; s < 256; ++s) {
    counts[s] = counts_in[s];
    present += counts[s] != 0;
  }
  if (present < 2) {
    for (int s = 0; s < 256; ++s) {
      if (counts[s] == 0) {
        counts[s] = 1;
        if (++present == 2) break;
      }
    }
  }
  normalize_freqs(counts, t);
}

// r[i] = x[i] - x[i-1] (mod 256), except where element b + i starts a row, and at i == 0: the
// residuals of the delta predictor, written so that the main loop vectorises.
void delta_residuals(const uint8_t* __restrict x, uint64_t b, uint64_t n, uint64_t row,
                     uint8_t* __restrict r) {
  if (n == 0) return;
  r[0] = x[0];
  for (uint64_t i = 1; i < n; ++i) r[i] = static_cast<uint8_t>(x[i] - x[i - 1]);
  for (uint64_t i = (row - b % row) % row; i < n; i += row) r[i] = x[i];
}

constexpr uint64_t kSampleBlock = 4096;
// a first delta sample whose residuals cost this many times the plane bytes' bits settles it
constexpr double kClearlyWorse = 1.05;
constexpr double kMinPlaneSaving = 0.995;  // code a plane only if it shrinks below this share

void histogram(const uint8_t* x, uint64_t n, uint32_t* h) {
  // Four partial histograms break the store-to-load dependency on repeated symbols.
  uint32_t part[4][256] = {};
  uint64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++part[0][x[i]];
    ++part[1][x[i + 1]];
    ++part[2][x[i + 2]];
    ++part[3][x[i + 3]];
  }
  for (; i < n; ++i) ++part[0][x[i]];
  for (int s = 0; s < 256; ++s) h[s] = part[0][s] + part[1][s] + part[2][s] + part[3][s];
}

// Chunks of at most this many elements count every byte for their tables; larger ones count
// a sample, which costs them a negligible share of their coded size (the estimation error of
// 256 frequencies from 64 Ki or more samples) and saves most of the counting time.
constexpr uint64_t kExactCountElems = 256 * 1024;

// The counts of every fourth 4 KiB block of x, scaled to n, where each symbol that occurs only
// outside those blocks counts 1, so that the table built from them gives it a slot.
void sampled_histogram(const uint8_t* x, uint64_t n, uint32_t* h) {
  std::fill(h, h + 256, 0u);
  uint32_t part[256];
  uint64_t sampled = 0;
  for (uint64_t o = 0; o < n; o += 4 * kSampleBlock) {
    const uint64_t len = std::min<uint64_t>(kSampleBlock, n - o);
    histogram(x + o, len, part);
    for (int s = 0; s < 256; ++s) h[s] += part[s];
    sampled += len;
  }
  if (sampled == 0) return;
  const uint32_t weight = static_cast<uint32_t>((n + sampled / 2) / sampled);
  uint8_t seen[256];
  symbol_presence(x, n, seen);
  for (int s = 0; s < 256; ++s) h[s] = h[s] ? h[s] * weight : seen[s];
}

void put_u64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }

}  // namespace

struct EncodedChunk::Impl {
  std::vector<uint8_t> head;  // header, shape, descriptors, padding, index
  std::vector<uint8_t> plane_store;  // split planes of multi-byte dtypes; raw planes point here
  std::vector<PlanePlan> planes;
  uint64_t nelem = 0;
  uint64_t seg_elems = 0;
  uint64_t total = 0;
};

EncodedChunk::EncodedChunk() : impl(std::make_unique<Impl>()) {}
EncodedChunk::~EncodedChunk() = default;
EncodedChunk::EncodedChunk(EncodedChunk&&) noexcept = default;
EncodedChunk& EncodedChunk::operator=(EncodedChunk&&) noexcept = default;
size_t EncodedChunk::size() const { return impl->total; }

void EncodedChunk::pieces(const std::function<void(const uint8_t*, size_t)>& take) const {
  static constexpr uint8_t kZeros[4] = {};
  take(impl->head.data(), impl->head.size());
  uint64_t pos = 0;  // relative to the data section
  // payloads start at multiples of 4 bytes of the data section
  auto align = [&] {
    const uint64_t start = align_up(pos, 4);
    if (start != pos) take(kZeros, start - pos);
    pos = start;
  };
  for (const PlanePlan& pp : impl->planes) {
    if (pp.mode == PlaneMode::Constant) continue;
    align();
    if (pp.mode == PlaneMode::Raw) {
      if (impl->nelem) take(pp.bytes, impl->nelem);
      pos += impl->nelem;
      continue;
    }
    const uint64_t seg_elems = impl->seg_elems;
    for (size_t j = 0; j < pp.segs.size(); ++j) {
      const SegmentPlan& sp = pp.segs[j];
      align();
      if (sp.coding == SegCoding::Rans) {
        take(sp.payload.data(), sp.payload.size());
        pos += sp.payload.size();
      } else {
        const uint64_t b = j * seg_elems;
        const uint64_t n = std::min<uint64_t>(seg_elems, impl->nelem - b);
        take(pp.bytes + b, n);
        pos += n;
      }
    }
  }
}

void EncodedChunk::write(uint8_t* dst) const {
  pieces([&](const uint8_t* p, size_t n) {
    if (n) std::memcpy(dst, p, n);
    dst += n;
  });
}

EncodedChunk encode_chunk(const uint8_t* data, uint8_t dtype, const uint64_t* shape, uint32_t ndim,
                          const EncodeOptions& opt) {
  DTypeLayout layout;
  if (!dtype_layout(dtype, &layout)) throw std::invalid_argument("unsupported dtype code");
  if (ndim > kMaxNdim) throw std::invalid_argument("too many dimensions (limit 32)");
  if (opt.seg_kib < kMinSegKib || opt.seg_kib > kMaxSegKib) {
    throw std::invalid_argument("segment size must be 16..64 KiB");
  }
  uint64_t nelem = 1;
  for (uint32_t d = 0; d < ndim; ++d) {
    if (shape[d] != 0 && nelem > kMaxChunkBytes / shape[d]) {
      throw std::invalid_argument("chunk exceeds the 1 TiB size limit");
    }
    nelem *= shape[d];
  }
  if (nelem > kMaxChunkBytes / layout.itemsize) {
    throw std::invalid_argument("chunk exceeds the 1 TiB size limit");
  }
  const uint32_t nplanes = layout.itemsize;
  // The fewest segments of at most seg_kib KiB elements, all of one length (whole KiB, the
  // last one shorter by the rounding): segments are coded and decoded side by side in pairs,
  // where a short last segment would leave its partner running alone.
  uint32_t seg_kib = opt.seg_kib;
  if (nelem > uint64_t{opt.seg_kib} * 1024) {
    const uint64_t count = (nelem + uint64_t{opt.seg_kib} * 1024 - 1) / (uint64_t{opt.seg_kib} * 1024);
    const uint64_t even_kib = ((nelem + count - 1) / count + 1023) / 1024;
    seg_kib = static_cast<uint32_t>(std::max<uint64_t>(kMinSegKib, even_kib));
  }
  const uint64_t seg_elems = uint64_t{seg_kib} * 1024;
  const uint64_t nseg = (nelem + seg_elems - 1) / seg_elems;
  const uint64_t row = ndim == 0 || shape[ndim - 1] == 0 ? 1 : shape[ndim - 1];

  EncodedChunk result;
  EncodedChunk::Impl& E = *result.impl;
  E.nelem = nelem;
  E.seg_elems = seg_elems;
  E.planes.resize(nplanes);

  // Phase 1, per segment: split planes, histograms, checksum.
  std::vector<uint8_t>& plane_store = E.plane_store;
  if (nplanes > 1) plane_store.resize(nplanes * nelem);
  for (uint32_t p = 0; p < nplanes; ++p) {
    E.planes[p].bytes = nplanes > 1 ? plane_store.data() + p * nelem : data;
  }
  std::vector<uint32_t> hist(nseg * nplanes * kNumPredictors * 256);
  auto H = [&](uint64_t j, uint32_t p, uint32_t pred) {
    return hist.data() + ((j * nplanes + p) * kNumPredictors + pred) * 256;
  };
  std::vector<uint32_t> seg_crc(nseg);
  const int threads = resolve_threads(opt.threads);
  // exact counts where the caller asks for them (the entropy bound) or the chunk is small
  const bool exact = opt.histograms != nullptr || nelem <= kExactCountElems;
  auto count = [exact](const uint8_t* x, uint64_t n, uint32_t* h) {
    exact ? histogram(x, n, h) : sampled_histogram(x, n, h);
  };
  // The delta predictor needs rows of at least two elements.
  const bool predict = opt.predict && row > 1;
  const uint64_t max_seg = std::min<uint64_t>(seg_elems, nelem);
  // per worker: residuals of a group of segments (phase 3); phase 1 uses a sample block's worth
  const size_t residual_bytes = predict ? kMaxEncodeGroup * max_seg : 0;
  parallel_for(nseg, threads, [&](size_t j, int) {
    const uint64_t b = j * seg_elems;
    const uint64_t n = std::min(seg_elems, nelem - b);
    uint8_t* dst[4];
    for (uint32_t p = 0; p < nplanes; ++p) dst[p] = const_cast<uint8_t*>(E.planes[p].bytes) + b;
    if (nplanes > 1) split_planes(data + b * nplanes, n, layout, dst);
    for (uint32_t p = 0; p < nplanes; ++p) {
      count(dst[p], n, H(j, p, 0));
      if (predict) {
        // Delta residuals of every fourth 4 KiB block, their counts scaled to the segment: enough
        // to choose the predictor; segments that choose it are counted in full before tables
        // are built.
        // Every sixteenth block comes first: where its residuals cost clearly more than the
        // plane bytes (noise-like weights), the rest of the sample would not change the choice.
        uint32_t* h1 = H(j, p, 1);
        std::fill(h1, h1 + 256, 0u);
        uint64_t sampled = 0;
        auto sample = [&](uint64_t first) {
          uint32_t part[256];
          for (uint64_t o = first; o < n; o += 16 * kSampleBlock) {
            const uint64_t len = std::min<uint64_t>(kSampleBlock, n - o);
            uint8_t* r = kept_scratch<0>(residual_bytes);
            delta_residuals(dst[p] + o, b + o, len, row, r);
            histogram(r, len, part);
            for (int s = 0; s < 256; ++s) h1[s] += part[s];
            sampled += len;
          }
        };
        sample(0);
        if (self_bits(h1, sampled) * n < kClearlyWorse * self_bits(H(j, p, 0), n) * sampled) {
          for (uint64_t k = 4; k < 16; k += 4) sample(k * kSampleBlock);
        }
        // scaled to the segment, as its plane bytes are counted
        const uint32_t weight = static_cast<uint32_t>((n + sampled / 2) / sampled);
        for (int s = 0; s < 256; ++s) h1[s] *= weight;
      }
    }
    if (opt.checksum) seg_crc[j] = crc32c(data + b * nplanes, n * nplanes);
  });
  uint32_t checksum = 0;
  if (opt.checksum) {
    for (uint64_t j = 0; j < nseg; ++j) {
      const uint64_t n = std::min(seg_elems, nelem - j * seg_elems);
      checksum = j == 0 ? seg_crc[0] : crc32c_combine(checksum, seg_crc[j], n * nplanes);
    }
    if (nseg == 0) checksum = crc32c(nullptr, 0);
  }

  // Phase 2, per plane: mode, predictor per segment, tables.
  for (uint32_t p = 0; p < nplanes; ++p) {
    PlanePlan& pp = E.planes[p];
    if (nelem == 0) {
      pp.mode = PlaneMode::Raw;
      continue;
    }
    uint64_t total[256] = {};
    for (uint64_t j = 0; j < nseg; ++j) {
      for (int s = 0; s < 256; ++s) total[s] += H(j, p, 0)[s];
    }
    if (opt.histograms) {
      for (int s = 0; s < 256; ++s) opt.histograms[p * 256 + s] += total[s];
    }
    int present = 0;
    for (int s = 0; s < 256; ++s) present += total[s] != 0;
    if (present == 1) {
      pp.mode = PlaneMode::Constant;
      for (int s = 0; s < 256; ++s) {
        if (total[s]) pp.constant = static_cast<uint8_t>(s);
      }
      continue;
    }
    // A plane whose order-0 entropy, with or without the delta predictor, would save less than
    // 0.5% after the lane states is stored raw without trying to code it (the low bytes of
    // floats): rANS-decoding it would cost as much as decoding the exponents, for nothing.
    {
      uint64_t delta_total[256] = {};
      uint64_t sampled = 0;
      for (uint64_t j = 0; predict && j < nseg; ++j) {
        for (int s = 0; s < 256; ++s) {
          delta_total[s] += H(j, p, 1)[s];
          sampled += H(j, p, 1)[s];
        }
      }
      double best_bits = self_bits(total, nelem);
      if (sampled) best_bits = std::min(best_bits, self_bits(delta_total, sampled) * nelem / sampled);
      if (best_bits / 8 + kStateBytes * nseg >= kMinPlaneSaving * nelem) {
        pp.mode = PlaneMode::Raw;
        continue;
      }
    }
    pp.mode = PlaneMode::Rans;
    pp.segs.resize(nseg);
    FreqTable all_none;
    table_from(total, &all_none);
    std::vector<uint8_t> choice(nseg, 0);
    if (predict) {
      for (uint64_t j = 0; j < nseg; ++j) {
        const uint64_t n = std::min(seg_elems, nelem - j * seg_elems);
        uint64_t sampled = 0;
        for (int s = 0; s < 256; ++s) sampled += H(j, p, 1)[s];
        // per-element entropy of the sampled residuals against that of the plane bytes
        choice[j] = self_bits(H(j, p, 1), sampled) * n < self_bits(H(j, p, 0), n) * sampled ? 1 : 0;
      }
    }
    // Where no segment chose the delta predictor, every table below would be all_none.
    if (predict && std::find(choice.begin(), choice.end(), uint8_t{1}) != choice.end()) {
      // Alternate between fitting tables to the choices and choices to the tables.
      FreqTable t[kNumPredictors];
      double cost[kNumPredictors][256];
      bool have[kNumPredictors] = {};
      for (int iter = 0; iter < 3; ++iter) {
        for (uint32_t q = 0; q < kNumPredictors; ++q) {
          uint64_t sum[256] = {};
          have[q] = false;
          for (uint64_t j = 0; j < nseg; ++j) {
            if (choice[j] != q) continue;
            have[q] = true;
            for (int s = 0; s < 256; ++s) sum[s] += H(j, p, q)[s];
          }
          if (have[q]) {
            table_from(sum, &t[q]);
            symbol_costs(t[q], cost[q]);
          }
        }
        bool changed = false;
        for (uint64_t j = 0; j < nseg; ++j) {
          double best = std::numeric_limits<double>::infinity();
          uint8_t best_q = choice[j];
          for (uint32_t q = 0; q < kNumPredictors; ++q) {
            double bits;
            if (have[q] && estimate_bits(H(j, p, q), cost[q], &bits) && bits < best) {
              best = bits;
              best_q = static_cast<uint8_t>(q);
            }
          }
          changed |= best_q != choice[j];
          choice[j] = best_q;
        }
        if (!changed) break;
      }
      // Count the delta residuals of the segments that chose them as their plane bytes are
      // counted (the choice was made on fewer samples), so the delta table covers every
      // residual it will code.
      std::vector<uint8_t> full(max_seg);
      for (uint64_t j = 0; j < nseg; ++j) {
        if (choice[j] != 1) continue;
        const uint64_t b = j * seg_elems;
        const uint64_t n = std::min(seg_elems, nelem - b);
        delta_residuals(pp.bytes + b, b, n, row, full.data());
        count(full.data(), n, H(j, p, 1));
      }
      // Keep the mix only if it beats a single no-prediction table, tables included.
      double mixed = 0.0, plain = 0.0;
      bool used[kNumPredictors] = {};
      for (uint64_t j = 0; j < nseg; ++j) used[choice[j]] = true;
      for (uint32_t q = 0; q < kNumPredictors; ++q) {
        if (!used[q]) continue;
        uint64_t sum[256] = {};
        for (uint64_t j = 0; j < nseg; ++j) {
          if (choice[j] != q) continue;
          for (int s = 0; s < 256; ++s) sum[s] += H(j, p, q)[s];
        }
        table_from(sum, &t[q]);
        symbol_costs(t[q], cost[q]);
        mixed += 8.0 * serialized_table_size(t[q]);
        for (uint64_t j = 0; j < nseg; ++j) {
          double bits = 0.0;
          if (choice[j] == q) estimate_bits(H(j, p, q), cost[q], &bits);
          mixed += bits;
        }
      }
      plain += 8.0 * serialized_table_size(all_none);
      double plain_cost[256];
      symbol_costs(all_none, plain_cost);
      for (uint64_t j = 0; j < nseg; ++j) {
        double bits = 0.0;
        estimate_bits(H(j, p, 0), plain_cost, &bits);
        plain += bits;
      }
      if (used[1] && mixed < plain) {
        for (uint32_t q = 0; q < kNumPredictors; ++q) {
          if (used[q]) {
            pp.tables[q] = t[q];
            pp.table_mask = static_cast<uint8_t>(pp.table_mask | (1u << q));
          }
        }
      } else {
        std::fill(choice.begin(), choice.end(), 0);
      }
    }
    if (pp.table_mask == 0) {
      pp.tables[0] = all_none;
      pp.table_mask = 1;
    }
    for (uint64_t j = 0; j < nseg; ++j) {
      pp.segs[j].pred = static_cast<Predictor>(choice[j]);
      pp.segs[j].coding = SegCoding::Rans;
    }
  }

  // Phase 3, per (plane, segment): rANS-code; a segment that does not shrink is stored raw.
  EncodeTable enc[4][kNumPredictors];
  EncodeTableSimd enc_simd[4][kNumPredictors];
  for (uint32_t p = 0; p < nplanes; ++p) {
    for (uint32_t q = 0; q < kNumPredictors; ++q) {
      if (!(E.planes[p].table_mask & (1u << q))) continue;
      build_encode_table(E.planes[p].tables[q], &enc[p][q]);
      build_encode_table_simd(E.planes[p].tables[q], &enc_simd[p][q]);
    }
  }
  // A task codes up to kMaxEncodeGroup consecutive segments of one plane, side by side; each
  // worker has room for that many of the largest possible payloads, and segments keep only what
  // they use.
  const uint64_t ngroups = (nseg + kMaxEncodeGroup - 1) / kMaxEncodeGroup;
  const size_t room = kStateBytes + 2 * max_seg;
  parallel_for(ngroups * nplanes, threads, [&](size_t task, int) {
    const uint32_t p = static_cast<uint32_t>(task % nplanes);
    PlanePlan& pp = E.planes[p];
    if (pp.mode != PlaneMode::Rans) return;
    const uint64_t j0 = task / nplanes * kMaxEncodeGroup;
    const int count = static_cast<int>(std::min<uint64_t>(kMaxEncodeGroup, nseg - j0));
    EncodeJob jobs[kMaxEncodeGroup];
    for (int k = 0; k < count; ++k) {
      const SegmentPlan& sp = pp.segs[j0 + k];
      const uint64_t b = (j0 + k) * seg_elems;
      const uint64_t n = std::min(seg_elems, nelem - b);
      const uint8_t* sym = pp.bytes + b;
      if (sp.pred == Predictor::Delta) {
        uint8_t* r = kept_scratch<0>(residual_bytes) + k * max_seg;
        delta_residuals(sym, b, n, row, r);
        sym = r;
      }
      const int q = static_cast<int>(sp.pred);
      jobs[k] = {sym, n, &enc[p][q], &enc_simd[p][q], kept_scratch<1>(kMaxEncodeGroup * room) + k * room, 0};
    }
    encode_segment_group(jobs, count);
    for (int k = 0; k < count; ++k) {
      SegmentPlan& sp = pp.segs[j0 + k];
      if (jobs[k].len >= jobs[k].n) {
        sp.coding = SegCoding::Raw;
        sp.pred = Predictor::None;
      } else {
        const uint8_t* words = payload_words(jobs[k].out, jobs[k].n, jobs[k].len);
        sp.payload.reserve(jobs[k].len);
        sp.payload.assign(jobs[k].out, jobs[k].out + kStateBytes);
        sp.payload.insert(sp.payload.end(), words, words + (jobs[k].len - kStateBytes));
      }
    }
  });

  // Phase 4: a rANS plane that ends up no smaller than raw is stored raw.
  for (uint32_t p = 0; p < nplanes; ++p) {
    PlanePlan& pp = E.planes[p];
    if (pp.mode != PlaneMode::Rans) continue;
    uint64_t coded = 1 + 8 * nseg;
    for (uint32_t q = 0; q < kNumPredictors; ++q) {
      if (pp.table_mask & (1u << q)) coded += serialized_table_size(pp.tables[q]);
    }
    for (uint64_t j = 0; j < nseg; ++j) {
      const SegmentPlan& sp = pp.segs[j];
      coded += 3 + (sp.coding == SegCoding::Rans ? sp.payload.size()
                                                 : std::min(seg_elems, nelem - j * seg_elems));
    }
    if (coded >= nelem) {
      pp.mode = PlaneMode::Raw;
      pp.table_mask = 0;
      std::vector<SegmentPlan>().swap(pp.segs);
    }
  }

  // Layout: header, shape, descriptors, pad to 8, index; data sizes follow from the plans.
  std::vector<uint8_t>& head = E.head;
  head.resize(kHeaderBytes + 8 * ndim);
  std::memcpy(head.data(), kMagic, 4);
  head[4] = kVersion;
  head[5] = dtype;
  head[6] = static_cast<uint8_t>(ndim);
  head[7] = opt.checksum ? kFlagChecksum : 0;
  head[8] = static_cast<uint8_t>(seg_kib);
  std::memcpy(head.data() + 12, &checksum, 4);
  for (uint32_t d = 0; d < ndim; ++d) put_u64(head.data() + kHeaderBytes + 8 * d, shape[d]);
  for (const PlanePlan& pp : E.planes) {
    head.push_back(static_cast<uint8_t>(pp.mode));
    if (pp.mode == PlaneMode::Constant) head.push_back(pp.constant);
    if (pp.mode != PlaneMode::Rans) continue;
    head.push_back(pp.table_mask);
    for (uint32_t q = 0; q < kNumPredictors; ++q) {
      if (!(pp.table_mask & (1u << q))) continue;
      const size_t at = head.size();
      head.resize(at + serialized_table_size(pp.tables[q]));
      serialize_table(pp.tables[q], head.data() + at);
    }
  }
  head.resize(align_up(head.size(), 8), 0);
  uint64_t data_bytes = 0;
  for (const PlanePlan& pp : E.planes) {
    if (pp.mode == PlaneMode::Constant) continue;
    data_bytes = align_up(data_bytes, 4);
    if (pp.mode == PlaneMode::Raw) {
      data_bytes += nelem;
      continue;
    }
    uint64_t end = 0;
    for (uint64_t j = 0; j < nseg; ++j) {
      const SegmentPlan& sp = pp.segs[j];
      end = align_up(end, 4);
      end += sp.coding == SegCoding::Rans ? sp.payload.size() : std::min(seg_elems, nelem - j * seg_elems);
      const size_t at = head.size();
      head.resize(at + 8);
      put_u64(head.data() + at, make_index_entry(end, sp.coding, sp.pred));
    }
    data_bytes += end;
  }
  E.total = head.size() + data_bytes;
  return result;
}

}  // namespace wcodec
