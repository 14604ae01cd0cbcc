// CUDA kernels of the batch decoder. One warp decodes one segment index of one chunk across all
// its byte planes in lockstep: at step k lane l holds element 32k + l of every plane (the
// bitstream's lane layout), so the planes are merged, un-rotated and written as whole elements
// in the same step (fused re-interleaving), with the delta predictor undone by a segmented warp
// scan. A second pass per segment computes its CRC32C register; a per-chunk kernel combines them.
#pragma once

#include <cstdint>

#include "wcodec/cuda_decode.h"

namespace wcodec::cuda::detail {

constexpr int kWarpsPerBlock = 8;
constexpr uint32_t kStateLow = 1u << 16;

// Segment part of one plane. Payload pointers are device pointers.
struct DevPlane {
  const uint8_t* payload;  // rANS: the segment payload; raw: the plane bytes of this segment
  uint32_t len;            // rANS payload length in bytes
  uint32_t table;          // rANS: the table's index among its chunk's tables
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

// A thread block decodes up to kWarpsPerBlock consecutive segments of one chunk (one warp
// each); they share the chunk's frequency tables, built once per block in shared memory.
struct DevBlock {
  uint32_t first_segment;
  uint32_t count;
  uint32_t table_first;  // the chunk's tables: [table_first, table_first + table_count)
  uint32_t table_count;
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

// Multiplication modulo the CRC polynomial (reflected), as in zlib's crc32_combine.
__host__ __device__ __forceinline__ uint32_t multmodp(uint32_t a, uint32_t b) {
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

// Dynamic shared memory of the decode kernels. Everything in it is addressed by offsets from
// this symbol, so the compiler emits shared-memory loads (not generic ones).
extern __shared__ __align__(16) unsigned char g_smem[];
__device__ __forceinline__ uint32_t* smem_u32() { return reinterpret_cast<uint32_t*>(g_smem); }
__device__ __forceinline__ uint16_t* smem_u16() { return reinterpret_cast<uint16_t*>(g_smem); }

// The hot loop addresses shared memory by 32-bit shared-window addresses held in registers: the
// compiler would otherwise rebuild g_smem's address from the CTA id at every access. The loads
// are volatile asm, kept in order with the barriers and asynchronous-copy waits around them.
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ uint32_t lds_u32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr));
  return v;
}
__device__ __forceinline__ uint32_t lds_u16(uint32_t addr) {
  uint16_t v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr));
  return v;
}

// A decode table in shared memory: 4096 packed entries, one per slot: symbol (bits 0-7), the
// slot's offset from its symbol's cumulative frequency (bits 8-19) and the frequency (bits
// 20-31), so a decode step is one lookup and x -> (e >> 20) * (x >> 12) + ((e >> 8) & 4095).
constexpr uint32_t kTableEntries = 4096;

// Word streams are read into shared-memory rings by asynchronous copies (cp.async, one 4-byte
// copy per lane makes a 64-word window) kAhead windows ahead of the one being read: six
// windows are about 25 steps of int8, more than a global load's latency.
constexpr uint32_t kWindowWords = 64;
constexpr uint32_t kRingWindows = 8;
constexpr uint32_t kRingWords = kWindowWords * kRingWindows;  // per rANS plane per warp
constexpr uint32_t kAhead = 6;
static_assert(kAhead + 2 <= kRingWindows, "the two windows in use and those in flight fit the ring");

// Builds the table of `t` at g_smem word offset `off` (one warp).
__device__ void build_table(const DevTable& t, uint32_t off, int lane) {
  uint32_t f[8];
  uint32_t local = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    f[k] = t.freq[lane * 8 + k];
    local += f[k];
  }
  uint32_t incl = local;
#pragma unroll
  for (int d = 1; d < 32; d <<= 1) {
    const uint32_t up = __shfl_up_sync(0xffffffffu, incl, d);
    if (lane >= d) incl += up;
  }
  // cumulative starts of this lane's 8 symbols, then every lane fills the slots of every 32nd
  // symbol (frequent symbols are adjacent values: strided, they land on different lanes)
  uint32_t cum = incl - local;
  uint32_t starts[8];
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    starts[k] = cum;
    cum += f[k];
  }
  uint32_t* table = smem_u32() + off;
  for (int s = 0; s < 256; ++s) {
    const uint32_t owner = s >> 3, k = s & 7;
    uint32_t start = 0, freq = 0;
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) {
      if (kk == k) {
        start = __shfl_sync(0xffffffffu, starts[kk], owner);
        freq = __shfl_sync(0xffffffffu, f[kk], owner);
      }
    }
    const uint32_t entry = s | (freq << 20);
    for (uint32_t i = lane; i < freq; i += 32) table[start + i] = entry | (i << 8);
  }
  __syncwarp();
}

__device__ __forceinline__ void copy4_async(uint32_t smem_addr, const void* src, uint32_t src_bytes) {
  // bytes past src_bytes (of 4) are zero-filled and not read
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(smem_addr), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The word stream of one rANS plane in a shared-memory ring of kRingWindows windows. Windows
// win and win + 1 hold every word a step can ask for (a step consumes at most 32 words); the
// copies of windows up to win + kAhead are in flight. Each window's copy is one commit group,
// so when window win + 1 is needed, kAhead - 1 groups of this stream (and maybe groups of the
// segment's other streams) have been committed after it: waiting until at most kAhead - 1 groups
// are pending completes it. Words past the stream end read as zeros (never out of bounds).
struct WordStream {
  const uint16_t* words;
  uint32_t ring;       // shared address of kRingWords uint16 entries, aligned to the ring's size
  uint32_t ring_lane;  // ring + this lane's 4 bytes of a window
  uint32_t nwords;
  uint32_t pos;       // bytes of words consumed
  uint32_t boundary;  // byte offset of the window after the lowest one still needed

  __device__ void issue(uint32_t window, int lane) const {
    const int32_t at = static_cast<int32_t>(kWindowWords * window) + 2 * lane;  // this lane's two words
    const int32_t left = static_cast<int32_t>(nwords) - at;
    const uint32_t have = 2 * static_cast<uint32_t>(min(max(left, 0), 2));  // bytes inside the stream
    const uint16_t* src = have ? words + at : words;
    copy4_async(ring_lane + 2 * kWindowWords * (window % kRingWindows), src, have);
  }
  __device__ void open(const uint16_t* w, uint32_t n, uint32_t r, int lane) {
    words = w;
    ring = r;
    ring_lane = r + 4 * lane;
    nwords = n;
    pos = 0;
    boundary = 2 * kWindowWords;
    for (uint32_t k = 0; k <= kAhead; ++k) issue(k, lane);
    commit_async();
    wait_async<0>();
    __syncwarp();
  }
  __device__ uint32_t consumed() const { return pos / 2; }
  // The k-th word after those consumed: the ring is aligned to its size, so the wrapped
  // offset is OR-ed in (one instruction with the mask).
  __device__ uint32_t fetch(uint32_t k) const {
    return lds_u16(ring | ((pos + 2 * k) & (2 * kRingWords - 1)));
  }
  __device__ void advance(uint32_t words_taken, int lane) {
    pos += 2 * words_taken;
    if (pos >= boundary) {
      boundary += 2 * kWindowWords;
      issue(boundary / (2 * kWindowWords) - 1 + kAhead, lane);  // window win + kAhead
      commit_async();
      wait_async<kAhead - 1>();
      __syncwarp();
    }
  }
};

// Raw plane bytes, read a 128-element block (one 4-byte load per lane) ahead of use.
struct RawStream {
  const uint8_t* bytes;
  uint32_t n;
  uint32_t cur, next;  // this block's and the next block's word of this lane

  __device__ uint32_t load(uint32_t block, int lane) const {
    const uint32_t off = block * 128 + 4 * lane;
    if (off + 4 <= n) return *reinterpret_cast<const uint32_t*>(bytes + off);
    uint32_t v = 0;
    for (uint32_t k = 0; k < 4 && off + k < n; ++k) v |= uint32_t{bytes[off + k]} << (8 * k);
    return v;
  }
  __device__ void open(const uint8_t* b, uint32_t count, int lane) {
    bytes = b;
    n = count;
    cur = load(0, lane);
    next = load(1, lane);
  }
  // byte of element 32 * step + lane
  __device__ uint32_t get(uint32_t step, int lane) {
    const uint32_t e = 32 * (step & 3) + lane;  // position inside the block
    const uint32_t w = __shfl_sync(0xffffffffu, cur, e >> 2);
    const uint32_t b = (w >> (8 * (e & 3))) & 0xffu;
    if ((step & 3) == 3) {
      cur = next;
      next = load((step >> 2) + 2, lane);
    }
    return b;
  }
};

constexpr uint32_t kAnyModes = 0xffffffffu;

// Per-warp decoding state of one segment with NP byte planes.
template <int NP>
struct SegmentDecoder {
  uint8_t mode[NP], constant[NP];
  uint32_t x[NP], carry[NP];
  uint32_t table[NP];  // shared address of the plane's table
  WordStream ws[NP];
  RawStream raw[NP];

  // Element 32 * step + lane of every plane, merged into one word. Full: every lane is active
  // (no bounds test). Delta: some plane uses the delta predictor; reset marks a row start.
  template <bool Full, bool Delta, uint32_t Modes>
  __device__ uint32_t step(const uint8_t* delta, uint32_t step_index, bool active, bool reset,
                           unsigned lanemask_lt, int lane) {
    uint32_t word = 0;
#pragma unroll
    for (int p = 0; p < NP; ++p) {
      uint32_t b;
      // Modes: 2 bits per plane (0 raw, 1 constant, 2 rANS) known at compile time, or
      // kAnyModes to read them at run time
      const uint32_t m = Modes == kAnyModes ? mode[p] : (Modes >> (2 * p)) & 3u;
      if (m == 1) {
        b = constant[p];
      } else if (m == 0) {
        b = raw[p].get(step_index, lane);
      } else {
        bool need = false;
        b = 0;
        if (Full || active) {
          const uint32_t e = lds_u32(table[p] + 4 * (x[p] & 4095u));
          b = e & 0xffu;
          x[p] = (e >> 20) * (x[p] >> 12) + ((e >> 8) & 0xfffu);
          need = x[p] < kStateLow;
        }
        const unsigned mask = __ballot_sync(0xffffffffu, need);
        // Reads past the stream end see zeros from the ring (never out of bounds); the
        // segment is then rejected at the end, where wp > nwords.
        const uint32_t w = ws[p].fetch(__popc(mask & lanemask_lt));
        if (need) x[p] = (x[p] << 16) | w;
        ws[p].advance(__popc(mask), lane);
      }
      if (Delta && delta[p]) {
        // segmented inclusive scan (mod 256) restarting at row starts, then the carry
        uint32_t v = b, f = reset;
#pragma unroll
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
      word |= b << (8 * (NP - 1 - p));
    }
    return word;
  }
};

template <int NP>
__device__ __forceinline__ void store_element(uint8_t* out, uint32_t i, uint32_t word, bool rotate) {
  if (NP == 1) out[i] = static_cast<uint8_t>(word);
  if (NP == 2) {
    if (rotate) word = ((word >> 1) | (word << 15)) & 0xffffu;
    reinterpret_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(word);
  }
  if (NP == 4) {
    if (rotate) word = (word >> 1) | (word << 31);
    reinterpret_cast<uint32_t*>(out)[i] = word;
  }
}

template <int NP, bool Delta, uint32_t Modes>
__device__ void decode_steps(SegmentDecoder<NP>& d, const DevSegment& seg, const uint8_t* delta, int lane) {
  const uint32_t n = seg.n;
  uint8_t* const out = seg.out;
  const bool rotate = seg.rotate;
  const unsigned lanemask_lt = (1u << lane) - 1;
  const uint32_t full_steps = n / 32;
  // column of this lane's element within its row (only tracked for the delta predictor)
  uint64_t col = Delta ? (seg.first_elem + lane) % seg.row : 0;
  const uint64_t row = seg.row;
  uint8_t* o = out + size_t{NP} * lane;  // this lane's element of the current step
#pragma unroll 4
  for (uint32_t s = 0; s < full_steps; ++s, o += 32 * NP) {
    const uint32_t i = 32 * s + lane;
    const uint32_t word = d.template step<true, Delta, Modes>(delta, s, true, Delta && (i == 0 || col == 0), lanemask_lt, lane);
    store_element<NP>(o, 0, word, rotate);
    if (Delta) {
      col += 32;
      while (col >= row) col -= row;
    }
  }
  if (n % 32) {
    const uint32_t i = 32 * full_steps + lane;
    const bool active = i < n;
    const uint32_t word = d.template step<false, Delta, Modes>(delta, full_steps, active, Delta && (i == 0 || col == 0), lanemask_lt, lane);
    if (active) store_element<NP>(out, i, word, rotate);
  }
}

// tables_off: g_smem word offset of the block's tables; rings_off: g_smem uint16 offset of this
// warp's word rings; the CRC table is at g_smem word 0.
template <int NP>
__device__ void decode_segment(const DevSegment& seg, uint32_t seg_index, uint32_t tables_off,
                               uint32_t rings_off, const DevConstants* consts, uint32_t* seg_crc,
                               int32_t* status, bool verify, int lane) {
  const uint32_t* crc_tab = smem_u32();
  const uint32_t n = seg.n;
  uint8_t* const out = seg.out;
  const uint32_t chunk = seg.chunk;
  SegmentDecoder<NP> d;
  const uint32_t base = smem_addr(g_smem);
  uint8_t delta[NP];
  bool any_delta = false;
  int used = 0;
  bool ok = true;
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    const DevPlane pl = seg.planes[p];
    d.mode[p] = pl.mode;
    d.constant[p] = pl.constant;
    d.carry[p] = 0;
    d.x[p] = kStateLow;
    d.table[p] = base + 4 * tables_off;
    delta[p] = pl.delta;
    any_delta |= pl.delta != 0;
    if (pl.mode == 0) d.raw[p].open(pl.payload, n, lane);
    if (pl.mode != 2) continue;
    d.table[p] = base + 4 * (tables_off + kTableEntries * pl.table);
    d.x[p] = reinterpret_cast<const uint32_t*>(pl.payload)[lane];
    d.ws[p].open(reinterpret_cast<const uint16_t*>(pl.payload + 128), (pl.len - 128) / 2,
                 base + 2 * (rings_off + kRingWords * used++), lane);
    if (__any_sync(0xffffffffu, d.x[p] < kStateLow)) {
      if (lane == 0) fail(status, chunk, kBadInitialState);
      ok = false;
    }
  }
  if (ok) {
    // the common plane layouts get a loop without mode tests: int8 and fp8 (rANS), bf16 and
    // fp16 (rANS exponent plane, raw or rANS low plane)
    uint32_t modes = 0;
#pragma unroll
    for (int p = 0; p < NP; ++p) modes |= uint32_t{d.mode[p]} << (2 * p);
    if (NP == 1 && modes == 2u) {
      any_delta ? decode_steps<NP, true, 2u>(d, seg, delta, lane) : decode_steps<NP, false, 2u>(d, seg, delta, lane);
    } else if (NP == 2 && modes == 2u) {
      any_delta ? decode_steps<NP, true, 2u>(d, seg, delta, lane) : decode_steps<NP, false, 2u>(d, seg, delta, lane);
    } else if (NP == 2 && modes == 10u) {
      any_delta ? decode_steps<NP, true, 10u>(d, seg, delta, lane) : decode_steps<NP, false, 10u>(d, seg, delta, lane);
    } else {
      any_delta ? decode_steps<NP, true, kAnyModes>(d, seg, delta, lane)
                : decode_steps<NP, false, kAnyModes>(d, seg, delta, lane);
    }
#pragma unroll
    for (int p = 0; p < NP; ++p) {
      if (d.mode[p] != 2) continue;
      int32_t code = kOk;
      if (d.ws[p].consumed() > d.ws[p].nwords) code = kTruncatedSegment;
      else if (__any_sync(0xffffffffu, d.x[p] != kStateLow)) code = kFinalStateMismatch;
      else if (d.ws[p].consumed() != d.ws[p].nwords) code = kUnreadWords;
      if (code != kOk) {
        if (lane == 0) fail(status, chunk, code);
        ok = false;
      }
    }
  } else {
    // every output byte is written: a segment rejected before decoding is zeros
    for (uint32_t b = lane; b < n * NP; b += 32) out[b] = 0;
  }
  if (!verify) return;
  __syncwarp();
  // CRC32C register (initial 0) of each lane's 16-byte-aligned slice of the segment's output,
  // then joined: R(A || B) = shift(R(A), len(B)) ^ R(B).
  const uint64_t total = uint64_t(n) * NP;
  const uint64_t slice = ((total + 31) / 32 + 15) & ~uint64_t(15);
  const uint64_t begin = min(total, lane * slice);
  const uint64_t end = min(total, begin + slice);
  uint32_t r = 0;
  uint64_t k = begin;
#pragma unroll 4
  for (; k + 16 <= end; k += 16) {
    const uint4 q = *reinterpret_cast<const uint4*>(out + k);
    const uint32_t part[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t w = r ^ part[j];
      r = crc_tab[3 * 256 + (w & 0xff)] ^ crc_tab[2 * 256 + ((w >> 8) & 0xff)] ^
          crc_tab[1 * 256 + ((w >> 16) & 0xff)] ^ crc_tab[w >> 24];
    }
  }
  for (; k < end; ++k) r = (r >> 8) ^ crc_tab[(r ^ out[k]) & 0xff];
  if (end < total && r != 0) r = multmodp(shift_bytes(*consts, total - end), r);
#pragma unroll
  for (int d2 = 16; d2 > 0; d2 >>= 1) r ^= __shfl_xor_sync(0xffffffffu, r, d2);
  if (lane == 0) seg_crc[seg_index] = r;
}

// Blocks of segments of one itemsize (NP planes): the plan groups them, so each launch carries
// only the registers its plane count needs.
template <int NP>
__global__ void __launch_bounds__(kWarpsPerBlock * 32)
decode_blocks_kernel(const DevBlock* __restrict__ blocks, const DevSegment* __restrict__ segments,
                     const DevTable* __restrict__ tables, const DevConstants* __restrict__ consts,
                     uint32_t* __restrict__ seg_crc, int32_t* __restrict__ status, int max_tables,
                     int max_rans, bool verify) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const DevBlock block = blocks[blockIdx.x];
  // g_smem layout (32-bit words): CRC table (1024), max_tables decode tables (4096 each), then
  // the word rings, max_rans per warp (kRingWords uint16 each)
  const uint32_t tables_off = 4 * 256;
  // the rings start at a multiple of their size in the shared window (the launch has that
  // much slack): WordStream::fetch wraps with an OR
  const uint32_t base = smem_addr(g_smem);
  const uint32_t ring_bytes = 2 * kRingWords;
  const uint32_t rings_at = base + 4 * (tables_off + kTableEntries * max_tables);
  const uint32_t rings_off = ((rings_at + ring_bytes - 1) / ring_bytes * ring_bytes - base) / 2;
  if (verify) {
    for (int i = threadIdx.x; i < 4 * 256; i += blockDim.x) smem_u32()[i] = (&consts->crc_table[0][0])[i];
  }
  for (uint32_t t = warp; t < block.table_count; t += kWarpsPerBlock) {
    build_table(tables[block.table_first + t], tables_off + kTableEntries * t, lane);
  }
  __syncthreads();
  if (static_cast<uint32_t>(warp) >= block.count) return;
  const uint32_t seg_index = block.first_segment + warp;
  decode_segment<NP>(segments[seg_index], seg_index, tables_off,
                     rings_off + warp * max_rans * kRingWords, consts, seg_crc, status, verify, lane);
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
