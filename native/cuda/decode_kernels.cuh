// CUDA kernels of the batch decoder. One warp decodes one segment index of one chunk across all
// its byte planes in lockstep: at step k lane l holds element 32k + l of every plane (the
// bitstream's lane layout), so the planes are merged, un-rotated and written as whole elements
// in the same step (fused re-interleaving), with the delta predictor undone by a segmented warp
// scan. A second pass per segment computes its CRC32C register; a per-chunk kernel combines them.
#pragma once

#include <cstdint>

#include "wcodec/cuda_decode.h"

namespace wcodec::cuda::detail {

constexpr int kWarpsPerBlock = 4;
constexpr uint32_t kStateLow = 1u << 16;

// Segment part of one plane. Payload pointers are device pointers.
struct DevPlane {
  const uint8_t* payload;  // rANS: the segment payload; raw: the plane bytes of this segment
  uint32_t len;            // rANS payload length in bytes
  uint32_t table;          // index of the frequency table (rANS)
  uint8_t mode;            // 0 raw bytes, 1 constant, 2 rANS
  uint8_t delta;           // 1: undo the delta predictor
  uint8_t constant;
  uint8_t pad;
};

struct DevSegment {
  uint8_t* out;          // output of the segment's first element
  uint64_t first_elem;   // element index of the segment in its chunk
  uint64_t row;          // last-axis length (delta predictor restarts at each row)
  uint32_t n;            // elements
  uint32_t chunk;
  uint8_t itemsize;
  uint8_t rotate;
  uint8_t pad[6];
  DevPlane planes[4];
};

struct DevChunk {
  uint32_t first_segment;
  uint32_t num_segments;
  uint64_t segment_bytes;  // output bytes of every segment but the last
  uint64_t nbytes;
  uint32_t expected_crc;
  uint32_t has_crc;
};

struct DevTable {
  uint16_t freq[256];
};

// Workspace header: tables computed on the host once per plan.
struct DevConstants {
  uint32_t crc_table[4][256];  // slicing-by-4 CRC32C tables
  uint32_t x2n[64];            // x^(2^k) modulo the CRC polynomial
};

constexpr uint32_t kCrcPoly = 0x82F63B78u;

__device__ __forceinline__ uint32_t multmodp(uint32_t a, uint32_t b) {
  uint32_t m = 1u << 31, p = 0;
  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0) break;
    }
    m >>= 1;
    b = (b & 1) ? (b >> 1) ^ kCrcPoly : b >> 1;
  }
  return p;
}

// x^(8 * len) modulo the polynomial: multiplying a CRC register by it appends len zero bytes.
__device__ __forceinline__ uint32_t shift_bytes(const DevConstants& c, uint64_t len) {
  uint32_t v = 1u << 31;
  int k = 3;
  while (len) {
    if (len & 1) v = multmodp(c.x2n[k & 63], v);
    len >>= 1;
    ++k;
  }
  return v;
}

__device__ __forceinline__ void fail(int32_t* status, uint32_t chunk, int32_t code) {
  atomicCAS(reinterpret_cast<int*>(status + chunk), 0, code);
}

// Per-warp shared memory for one rANS plane: slot -> symbol, symbol -> (freq | cum << 16).
struct WarpTable {
  uint8_t sym[4096];
  uint32_t fc[256];
};

__device__ void build_table(const DevTable& t, WarpTable& w, int lane) {
  // each lane owns 8 consecutive symbols; a warp scan gives their cumulative start
  uint32_t f[8];
  uint32_t local = 0;
  for (int k = 0; k < 8; ++k) {
    f[k] = t.freq[lane * 8 + k];
    local += f[k];
  }
  uint32_t incl = local;
  for (int d = 1; d < 32; d <<= 1) {
    const uint32_t up = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += up;
  }
  uint32_t cum = incl - local;
  for (int k = 0; k < 8; ++k) {
    const uint32_t s = lane * 8 + k;
    w.fc[s] = f[k] | (cum << 16);
    for (uint32_t i = 0; i < f[k]; ++i) w.sym[cum + i] = static_cast<uint8_t>(s);
    cum += f[k];
  }
  __syncwarp();
}

__global__ void __launch_bounds__(kWarpsPerBlock * 32)
decode_segments_kernel(const DevSegment* __restrict__ segments, uint32_t num_segments,
                       const DevTable* __restrict__ tables, const DevConstants* __restrict__ consts,
                       uint32_t* __restrict__ seg_crc, int32_t* __restrict__ status, int max_rans_planes,
                       bool verify) {
  extern __shared__ unsigned char smem[];
  uint32_t* crc_tab = reinterpret_cast<uint32_t*>(smem);  // 4 x 256 entries, shared by the block
  WarpTable* warp_tables = reinterpret_cast<WarpTable*>(smem + 4 * 256 * sizeof(uint32_t));
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  if (verify) {
    for (int i = threadIdx.x; i < 4 * 256; i += blockDim.x) crc_tab[i] = (&consts->crc_table[0][0])[i];
  }
  __syncthreads();
  const uint32_t seg_index = blockIdx.x * kWarpsPerBlock + warp;
  if (seg_index >= num_segments) return;
  const DevSegment& seg = segments[seg_index];
  WarpTable* my_tables = warp_tables + warp * max_rans_planes;

  const int np = seg.itemsize;
  uint32_t x[4];
  const uint16_t* words[4];
  uint32_t nwords[4], wp[4], carry[4];
  int table_slot[4];
  int used = 0;
  bool ok = true;
  for (int p = 0; p < np; ++p) {
    const DevPlane& pl = seg.planes[p];
    carry[p] = 0;
    if (pl.mode != 2) continue;
    table_slot[p] = used;
    build_table(tables[pl.table], my_tables[used], lane);
    ++used;
    x[p] = reinterpret_cast<const uint32_t*>(pl.payload)[lane];
    words[p] = reinterpret_cast<const uint16_t*>(pl.payload + 128);
    nwords[p] = (pl.len - 128) / 2;
    wp[p] = 0;
    if (__any_sync(0xffffffffu, x[p] < kStateLow)) {
      if (lane == 0) fail(status, seg.chunk, kBadInitialState);
      ok = false;
    }
  }

  // column of this lane's element within its row, advanced by 32 per step
  uint64_t col = (seg.first_elem + lane) % seg.row;
  const uint32_t n = seg.n;
  const uint32_t steps = (n + 31) / 32;
  const unsigned lanemask_lt = (1u << lane) - 1;
  uint32_t step = 0;
  for (; ok && step < steps; ++step) {
    const uint32_t i = step * 32 + lane;
    const bool active = i < n;
    const bool reset = i == 0 || col == 0;
    uint32_t word = 0;
    for (int p = 0; p < np; ++p) {
      const DevPlane& pl = seg.planes[p];
      uint32_t b;
      if (pl.mode == 1) {
        b = pl.constant;
      } else if (pl.mode == 0) {
        b = active ? pl.payload[i] : 0;
      } else {
        const WarpTable& t = my_tables[table_slot[p]];
        bool need = false;
        b = 0;
        if (active) {
          const uint32_t slot = x[p] & 4095u;
          b = t.sym[slot];
          const uint32_t fc = t.fc[b];
          x[p] = (fc & 0xffffu) * (x[p] >> 12) + slot - (fc >> 16);
          need = x[p] < kStateLow;
        }
        const unsigned mask = __ballot_sync(0xffffffffu, need);
        const uint32_t at = wp[p] + __popc(mask & lanemask_lt);
        const bool short_of_words = need && at >= nwords[p];
        if (need && !short_of_words) x[p] = (x[p] << 16) | words[p][at];
        wp[p] += __popc(mask);
        if (__any_sync(0xffffffffu, short_of_words)) {
          if (lane == 0) fail(status, seg.chunk, kTruncatedSegment);
          ok = false;
        }
      }
      if (pl.delta) {
        // segmented inclusive scan (mod 256) restarting at row starts, then the carry
        uint32_t v = b, f = reset;
        for (int d = 1; d < 32; d <<= 1) {
          const uint32_t v_up = __shfl_up_sync(0xffffffffu, v, d);
          const uint32_t f_up = __shfl_up_sync(0xffffffffu, f, d);
          if (lane >= d && !f) {
            v += v_up;
            f |= f_up;
          }
        }
        if (!f) v += carry[p];
        b = v & 0xffu;
        carry[p] = __shfl_sync(0xffffffffu, b, 31);
      }
      word |= b << (8 * (np - 1 - p));
    }
    if (seg.rotate) {
      word = np == 2 ? ((word >> 1) | (word << 15)) & 0xffffu : (word >> 1) | (word << 31);
    }
    if (active) {
      if (np == 1) seg.out[i] = static_cast<uint8_t>(word);
      else if (np == 2) reinterpret_cast<uint16_t*>(seg.out)[i] = static_cast<uint16_t>(word);
      else reinterpret_cast<uint32_t*>(seg.out)[i] = word;
    }
    col += 32;
    while (col >= seg.row) col -= seg.row;
  }
  if (ok) {
    for (int p = 0; p < np; ++p) {
      if (seg.planes[p].mode != 2) continue;
      const bool bad_state = x[p] != kStateLow;
      if (__any_sync(0xffffffffu, bad_state)) {
        if (lane == 0) fail(status, seg.chunk, kFinalStateMismatch);
        ok = false;
      } else if (wp[p] != nwords[p]) {
        if (lane == 0) fail(status, seg.chunk, kUnreadWords);
        ok = false;
      }
    }
  } else {
    // every output byte is written: the rest of a failed segment is zeros
    for (uint64_t b = uint64_t(step) * 32 * np + lane; b < uint64_t(n) * np; b += 32) seg.out[b] = 0;
  }
  if (!verify) return;
  __syncwarp();
  // CRC32C register (initial 0) of each lane's slice of the segment's output, then joined:
  // R(A || B) = shift(R(A), len(B)) ^ R(B).
  const uint64_t total = uint64_t(n) * np;
  const uint64_t slice = ((total + 31) / 32 + 3) & ~uint64_t(3);
  const uint64_t begin = min(total, lane * slice);
  const uint64_t end = min(total, begin + slice);
  uint32_t r = 0;
  uint64_t k = begin;
  const uint8_t* out = seg.out;
  for (; k + 4 <= end; k += 4) {
    const uint32_t w = r ^ *reinterpret_cast<const uint32_t*>(out + k);
    r = crc_tab[3 * 256 + (w & 0xff)] ^ crc_tab[2 * 256 + ((w >> 8) & 0xff)] ^
        crc_tab[1 * 256 + ((w >> 16) & 0xff)] ^ crc_tab[w >> 24];
  }
  for (; k < end; ++k) r = (r >> 8) ^ crc_tab[(r ^ out[k]) & 0xff];
  if (end < total && r != 0) r = multmodp(shift_bytes(*consts, total - end), r);
  for (int d = 16; d > 0; d >>= 1) r ^= __shfl_xor_sync(0xffffffffu, r, d);
  if (lane == 0) seg_crc[seg_index] = r;
}

// One thread per chunk: R = shift(~0, nbytes) ^ joined segment registers; crc = ~R.
__global__ void combine_crc_kernel(const DevChunk* __restrict__ chunks, uint32_t num_chunks,
                                   const uint32_t* __restrict__ seg_crc,
                                   const DevConstants* __restrict__ consts, int32_t* __restrict__ status) {
  const uint32_t c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c >= num_chunks) return;
  const DevChunk& ch = chunks[c];
  if (!ch.has_crc) return;
  uint32_t acc = 0xffffffffu;
  const uint32_t step = shift_bytes(*consts, ch.segment_bytes);
  for (uint32_t s = 0; s < ch.num_segments; ++s) {
    const bool last = s + 1 == ch.num_segments;
    const uint64_t len = last ? ch.nbytes - uint64_t(s) * ch.segment_bytes : ch.segment_bytes;
    acc = multmodp(last ? shift_bytes(*consts, len) : step, acc) ^ seg_crc[ch.first_segment + s];
  }
  if (~acc != ch.expected_crc) fail(status, c, kChecksumMismatch);
}

}  // namespace wcodec::cuda::detail
