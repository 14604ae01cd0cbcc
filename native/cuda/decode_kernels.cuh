// CUDA kernels of the batch decoder. One warp decodes one segment index of one chunk across all
// its byte planes in lockstep: at step k lane l holds element 32k + l of every plane (the
// bitstream's lane layout), so the planes are merged, un-rotated and written as whole elements
// in the same step (fused re-interleaving), with the delta predictor undone by a segmented warp
// scan. The output passes through a per-warp block in shared memory: every 512 bytes the warp
// writes it with one 16-byte store per lane and folds it into the segment's CRC32C on the tensor
// cores (BlockCrc). Each segment's register, shifted to its chunk's end, is xor-ed into the
// chunk's; the chunk's last segment to finish checks the sum.
#pragma once

#include <cstddef>
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
  // the padding (0..3 bytes) just before `payload`, which must be zero: a plan from chunk
  // heads alone has not seen it
  uint8_t zero_before;
};

struct DevSegment {
  uint8_t* out;          // output of the segment's first element
  uint64_t first_elem;   // element index of the segment in its chunk
  uint64_t row;          // last-axis length (delta predictor restarts at each row)
  uint32_t n;            // elements
  uint32_t chunk;
  uint8_t itemsize;
  uint8_t rotate;
  uint8_t pad[2];
  uint32_t crc_shift;  // x^(8 * bytes after the segment in its chunk) modulo the CRC polynomial
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
  uint32_t num_segments;
  uint32_t has_crc;
  // the xor of the segments' shifted registers that the stored checksum implies:
  // ~checksum ^ shift(0xffffffff, nbytes), as the register starts at ~0
  uint32_t expected_sum;
};

// Per chunk in the workspace, zeroed before each launch: the xor of its segments' shifted
// registers and how many segments have added theirs.
struct ChunkCrc {
  uint32_t sum;
  uint32_t done;
};

struct DevTable {
  uint16_t freq[256];
};

// Output blocks: 512 bytes, 16 per lane.
constexpr uint32_t kBlockBytes = 512;

// The checksum of the staged blocks is computed on the tensor cores. CRC32C is linear over
// GF(2): a zero-initialised register over a message is the xor, over the message's set bits,
// of each bit's register shifted to the message end. A warp's 512-byte block, as lanes hold it
// for the 16-byte stores, is the A operand of a binary MMA (m16n8k256, AND and popcount): the
// 16 bytes at 64g + 16t (lane 4g + t) are four words, of which the first and third are row g's
// and the second and fourth row g + 8's (g < 8), so row g + 8 is row g moved by 4 bytes. The
// B operand maps a row's 256 bits to their 32-bit register (four n-tiles of 8 bits), with the
// position of the block in a group of kCrcGroup blocks folded in; a row's bits have the same
// offsets from the row's first byte in every row, so one matrix serves all 16 rows and each
// row's sum is its register shifted by its offset from the last row (row 15). The low bit of
// each accumulator is a register bit. After a group the rows' registers are shifted by the
// group's length (Horner's rule) by one more MMA whose A operand packs the parities, and at the
// end each row's register is shifted by its row offset and the lanes' xor-ed.
constexpr uint32_t kCrcGroup = 8;
constexpr uint32_t kCrcLastRowByte = 64 * 7 + 4;  // first byte of row 15 in a block

// Workspace header: tables computed on the host once per plan.
struct DevConstants {
  // B fragments of the block matrices, per position in a group and lane: n-tiles 0..3, (b0, b1)
  uint32_t block_matrix[kCrcGroup][32][8];
  // B fragments of the group shift: the packed parities (see pack_parities) shifted by
  // kCrcGroup blocks
  uint32_t group_shift[32][8];
  uint32_t crc_table[4][256];  // slicing-by-4 CRC32C tables
  uint32_t x2n[64];            // x^(2^k) modulo the CRC polynomial
  // register bit i of row r shifted by the row's offset from row 15
  uint32_t row_bits[16][32];
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
__device__ __forceinline__ uint4 lds_u128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(addr));
  return v;
}
__device__ __forceinline__ void sts_u8(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u8 [%0], %1;\n" ::"r"(addr), "r"(v));
}
__device__ __forceinline__ void sts_u16(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u16 [%0], %1;\n" ::"r"(addr), "h"(static_cast<uint16_t>(v)));
}
__device__ __forceinline__ void sts_u32(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(v));
}
__device__ __forceinline__ uint32_t lds_u16(uint32_t addr) {
  uint16_t v;
  asm volatile("ld.shared.u16 %0, [%1];\n" : "=h"(v) : "r"(addr));
  return v;
}

// A decode table in shared memory: 4096 packed entries, one per slot: the symbol (bits 0-7),
// the slot's offset from its symbol's cumulative frequency (bits 8-19) and the frequency (bits
// 20-31), so a decode step is one lookup and x -> (e >> 20) * ((x >> 12) - 4096) + (e >> 8)
// (mod 2^32: e >> 8 is the offset plus freq << 12), and the symbol needs no extracting where
// its byte is stored alone.
constexpr uint32_t kTableEntries = 4096;

// Word streams are read into shared-memory rings by asynchronous copies (cp.async), each lane
// copying kLaneBytes of a window, kAhead windows ahead of the one being read. The fewer planes a
// segment has, the more shared memory a block can give each stream's ring: int8 copies 16 bytes a
// lane (a 256-word window, about 18 steps), so the window bookkeeping runs every 8th step and a
// window's copy is issued about 36 steps before it is read, more than a global load's latency.
template <int NP>
struct RingGeometry {
  static constexpr uint32_t kLaneBytes = NP == 1 ? 16 : NP == 2 ? 8 : 4;
  static constexpr uint32_t kWindowWords = 32 * kLaneBytes / 2;
  // steps between refills: a step takes at most 32 words, so these take at most a window's
  static constexpr uint32_t kRefillSteps = kWindowWords / 32;
  static constexpr uint32_t kWindows = NP == 4 ? 8 : 4;
  static constexpr uint32_t kAhead = kWindows - 2;
  // per rANS plane per warp: the windows and a copy of the first (see WordStream)
  static constexpr uint32_t kRingWords = kWindowWords * (kWindows + 1);
  static_assert(kAhead + 2 <= kWindows, "the two windows in use and those in flight fit the ring");
};

// Builds the table of `t` at g_smem word offset `off` with every warp of the block: each warp
// scans the frequencies, then fills the slots of every kWarpsPerBlock-th symbol (frequent
// symbols are adjacent values: strided, they land on different warps).
__device__ void build_table(const DevTable& t, uint32_t off, int warp, int lane) {
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
  static_assert(kWarpsPerBlock == 8, "lane l holds symbols 8l .. 8l + 7: warp w fills symbols 8l + w");
  // this warp's symbol of this lane, 8 * lane + warp: its cumulative start and frequency
  uint32_t start = incl - local, freq = 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    if (k < warp) start += f[k];
    if (k == warp) freq = f[k];
  }
  uint32_t* table = smem_u32() + off;
  for (int o = 0; o < 32; ++o) {
    const uint32_t s0 = __shfl_sync(0xffffffffu, start, o);
    const uint32_t f0 = __shfl_sync(0xffffffffu, freq, o);
    const uint32_t entry = (8 * o + warp) | (f0 << 20);
    for (uint32_t i = lane; i < f0; i += 32) table[s0 + i] = entry | (i << 8);
  }
}

__device__ __forceinline__ void commit_async() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wait_async() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// The word stream of one rANS plane in a shared-memory ring of G::kWindows windows. Windows
// win and win + 1 hold every word G::kRefillSteps steps can ask for; the copies of windows up
// to win + kAhead are in flight. Each window's copy is one commit group, so when window win + 1
// is needed, kAhead - 1 groups of this stream (and maybe groups of the segment's other streams)
// have been committed after it: waiting until at most kAhead - 1 groups are pending completes
// it. The copies start at the words' address rounded down to kLaneBytes (cp.async needs aligned
// addresses; the bytes before the words are the segment's lane states), so the stream's first
// word sits `skip` bytes into the ring. Words past the stream end read as zeros and are never
// read from global memory. The ring's first window is copied after its last too, so that reads
// run on past the last window without wrapping; the read address wraps at refills.
template <int NP>
struct WordStream {
  using G = RingGeometry<NP>;
  static constexpr uint32_t kWindowBytes = 2 * G::kWindowWords;
  static constexpr uint32_t kRingBytes = kWindowBytes * G::kWindows;
  const unsigned char* base;  // the words' address rounded down to kLaneBytes
  uint32_t next;              // byte offset from base of this lane's piece of the next window to copy
  uint32_t last;              // the offset of the last piece holding stream bytes: copies past the end read none there
  uint32_t end;               // byte offset of the stream end from base
  uint32_t dst;               // shared address of this lane's piece of that window in the ring
  uint32_t ring;              // shared address of the ring
  uint32_t skip;              // bytes from base to the first word
  uint32_t nwords;
  uint32_t at;          // shared address of the first word not consumed
  uint32_t window_end;  // shared address of the end of the window holding it (at the last refill)
  uint32_t wrapped;     // bytes of the stream the read address has wrapped over

  // Copies this lane's piece of the next window and moves on to the window after it.
  __device__ void issue() {
    constexpr uint32_t L = G::kLaneBytes;
    // bytes past src_bytes are zero-filled and not read
    const uint32_t have = next < end ? min(end - next, L) : 0u;
    const unsigned char* src = base + min(next, last);
    copy(dst, src, have);
    if (dst - ring < kWindowBytes) copy(dst + kRingBytes, src, have);
    next += kWindowBytes;
    dst += kWindowBytes;
    if (dst - ring >= kRingBytes) dst -= kRingBytes;
  }
  __device__ static void copy(uint32_t to, const unsigned char* src, uint32_t have) {
    if (G::kLaneBytes == 16) {
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(to), "l"(src), "r"(have) : "memory");
    } else {
      asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(to), "l"(src), "n"(G::kLaneBytes),
                   "r"(have)
                   : "memory");
    }
  }
  __device__ void open(const uint16_t* w, uint32_t n, uint32_t r, int lane) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(w);
    skip = static_cast<uint32_t>(a & (G::kLaneBytes - 1));
    base = reinterpret_cast<const unsigned char*>(a - skip);
    end = skip + 2 * n;
    last = end ? (end - 1) & ~(G::kLaneBytes - 1) : 0;
    next = G::kLaneBytes * lane;
    dst = r + G::kLaneBytes * lane;
    ring = r;
    nwords = n;
    at = r + skip;
    window_end = r + kWindowBytes;
    wrapped = 0;
    for (uint32_t k = 0; k <= G::kAhead; ++k) issue();
    commit_async();
    wait_async<0>();
    __syncwarp();
  }
  __device__ uint32_t consumed() const { return (wrapped + at - ring - skip) / 2; }
  // The k-th word after those consumed.
  __device__ uint32_t fetch(uint32_t k) const { return lds_u16(at + 2 * k); }
  __device__ void take(uint32_t words_taken) { at += 2 * words_taken; }
  // Called after at most kRefillSteps steps: they take at most a window's words, so the reads
  // crossed at most one window boundary, and the words of the next kRefillSteps steps lie in
  // the windows then complete.
  __device__ void refill() {
    if (at >= window_end) {
      if (window_end - ring == kRingBytes) {
        // reading the copy of the first window: back to the first window itself
        at -= kRingBytes;
        wrapped += kRingBytes;
        window_end = ring;
      }
      window_end += kWindowBytes;
      issue();  // window win + kAhead
      commit_async();
      wait_async<G::kAhead - 1>();
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
  WordStream<NP> ws[NP];
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
          // slot address: and + multiply-add (the compiler otherwise shifts, masks and adds)
          uint32_t at;
          asm("{ .reg .b32 t; and.b32 t, %1, 4095; mad.lo.u32 %0, t, 4, %2; }" : "=r"(at) : "r"(x[p]), "r"(table[p]));
          const uint32_t e = lds_u32(at);
          // the symbol is the low byte: a lone int8 plane stores e as it is
          b = (NP == 1 && !Delta) ? e : (e & 0xffu);
          // e >> 8 is offset + (freq << 12): freq * ((x >> 12) - 4096) + (e >> 8), mod 2^32
          x[p] = (e >> 20) * ((x[p] >> 12) - 4096u) + (e >> 8);
          need = x[p] < kStateLow;
        }
        const unsigned mask = __ballot_sync(0xffffffffu, need);
        // Reads past the stream end see zeros from the ring (never out of bounds); the
        // segment is then rejected at the end, where wp > nwords.
        const uint32_t w = ws[p].fetch(__popc(mask & lanemask_lt));
        if (need) x[p] = (x[p] << 16) | w;
        ws[p].take(__popc(mask));
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

// The element word of NP planes as output bytes: rotated back for floats.
template <int NP>
__device__ __forceinline__ uint32_t element_bits(uint32_t word, bool rotate) {
  if (NP == 2 && rotate) return ((word >> 1) | (word << 15)) & 0xffffu;
  if (NP == 4 && rotate) return (word >> 1) | (word << 31);
  return word;
}

template <int NP>
__device__ __forceinline__ void store_element(uint8_t* out, uint32_t i, uint32_t word, bool rotate) {
  word = element_bits<NP>(word, rotate);
  if (NP == 1) out[i] = static_cast<uint8_t>(word);
  if (NP == 2) reinterpret_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(word);
  if (NP == 4) reinterpret_cast<uint32_t*>(out)[i] = word;
}

template <int NP>
__device__ __forceinline__ void stage_element(uint32_t addr, uint32_t word, bool rotate) {
  word = element_bits<NP>(word, rotate);
  if (NP == 1) sts_u8(addr, word);
  if (NP == 2) sts_u16(addr, word);
  if (NP == 4) sts_u32(addr, word);
}

template <int NP>
__device__ __forceinline__ void refill_all(SegmentDecoder<NP>& d) {
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    if (d.mode[p] == 2) d.ws[p].refill();
  }
}

// Slicing-by-4 step of a CRC register over one little-endian 4-byte word, tables in global
// memory (only the bytes after the staged blocks use them).
__device__ __forceinline__ uint32_t crc_word(const DevConstants& c, uint32_t r, uint32_t word) {
  const uint32_t w = r ^ word;
  return __ldg(&c.crc_table[3][w & 0xff]) ^ __ldg(&c.crc_table[2][(w >> 8) & 0xff]) ^
         __ldg(&c.crc_table[1][(w >> 16) & 0xff]) ^ __ldg(&c.crc_table[0][w >> 24]);
}

// d += popcount(a AND b) over the 256-bit rows of A and columns of B.
__device__ __forceinline__ void mma_and_popc(uint32_t (&d)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                             uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k256.row.col.s32.b1.b1.s32.and.popc {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Four accumulators (counts below 2^16) at bits 0, 16, 1 and 17 of a word, their parities only.
__device__ __forceinline__ uint32_t pack_parities(uint32_t c0, uint32_t c16, uint32_t c1, uint32_t c17) {
  return ((c0 + (c16 << 16)) & 0x10001u) + (((c1 + (c17 << 16)) & 0x10001u) << 1);
}

// The registers of a segment's staged blocks, rows of the accumulators of the MMAs (thread
// 4g + t holds, in c[n], rows g and g + 8, register bits 8n + 2t and 8n + 2t + 1).
struct BlockCrc {
  // A lane's B fragments of one matrix: n-tiles 0 and 1, then 2 and 3.
  struct Fragments {
    uint4 lo, hi;
  };
  static constexpr uint32_t kMatrixBytes = 32 * 32;  // 32 lanes' fragments
  uint32_t c[4][4];
  uint32_t matrices;  // shared address of this lane's fragments of the first block matrix
  uint32_t at;        // those of the next block's matrix

  // Blocks of a group have positions 0 .. kCrcGroup - 1; the last block ends a group.
  __device__ void start(uint32_t blocks) {
#pragma unroll
    for (int n = 0; n < 4; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0;
    at = matrices + kMatrixBytes * ((kCrcGroup - blocks % kCrcGroup) % kCrcGroup);
  }
  // The fragments of the next block's matrix; loaded with the block's bytes, so that their
  // latencies overlap.
  __device__ Fragments matrix() const { return {lds_u128(at), lds_u128(at + 16)}; }
  // Adds block b (this lane's 16 bytes q) of `blocks`, with its matrix's fragments f.
  __device__ void add(uint4 q, Fragments f, uint32_t b, uint32_t blocks) {
    mma_and_popc(c[0], q.x, q.y, q.z, q.w, f.lo.x, f.lo.y);
    mma_and_popc(c[1], q.x, q.y, q.z, q.w, f.lo.z, f.lo.w);
    mma_and_popc(c[2], q.x, q.y, q.z, q.w, f.hi.x, f.hi.y);
    mma_and_popc(c[3], q.x, q.y, q.z, q.w, f.hi.z, f.hi.w);
    at += kMatrixBytes;
    if (at - matrices == kMatrixBytes * kCrcGroup && b + 1 < blocks) {
      at = matrices;
      // Horner's rule: the rows' registers shifted over the next group, the accumulators of it
      const uint32_t a0 = pack_parities(c[0][0], c[0][1], c[1][0], c[1][1]);
      const uint32_t a1 = pack_parities(c[0][2], c[0][3], c[1][2], c[1][3]);
      const uint32_t a2 = pack_parities(c[2][0], c[2][1], c[3][0], c[3][1]);
      const uint32_t a3 = pack_parities(c[2][2], c[2][3], c[3][2], c[3][3]);
      const uint32_t m = matrices + kMatrixBytes * kCrcGroup;
      const uint4 lo = lds_u128(m), hi = lds_u128(m + 16);
#pragma unroll
      for (int n = 0; n < 4; ++n) c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0;
      mma_and_popc(c[0], a0, a1, a2, a3, lo.x, lo.y);
      mma_and_popc(c[1], a0, a1, a2, a3, lo.z, lo.w);
      mma_and_popc(c[2], a0, a1, a2, a3, hi.x, hi.y);
      mma_and_popc(c[3], a0, a1, a2, a3, hi.z, hi.w);
    }
  }
  // This lane's share of the staged bytes' register: its rows' bits shifted by their offsets.
  __device__ uint32_t finish(const DevConstants& k, int lane) const {
    const uint32_t g = lane >> 2, t = lane & 3;
    uint32_t r = 0;
#pragma unroll
    for (int n = 0; n < 4; ++n) {
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const uint32_t bit = 8 * n + 2 * t + j;
        r ^= __ldg(&k.row_bits[g][bit]) & (0u - (c[n][j] & 1u));
        r ^= __ldg(&k.row_bits[g + 8][bit]) & (0u - (c[n][2 + j] & 1u));
      }
    }
    return r;
  }
};

// Decodes a segment. Whole blocks of steps go through the warp's staging block (`stage`, a
// shared address) and leave as 16-byte stores; the steps after the last whole block store
// their elements directly. Returns the number of staged output bytes; with `verify`, `crc`
// holds their registers.
template <int NP, bool Delta, uint32_t Modes>
__device__ uint32_t decode_steps(SegmentDecoder<NP>& d, const DevSegment& seg, const uint8_t* delta, uint32_t stage,
                                 bool verify, BlockCrc& crc, int lane) {
  constexpr uint32_t kSteps = kBlockBytes / (32 * NP);
  constexpr uint32_t kRefill = RingGeometry<NP>::kRefillSteps;
  static_assert(kSteps % kRefill == 0, "a block's last step refills");
  const uint32_t n = seg.n;
  uint8_t* const out = seg.out;
  const bool rotate = seg.rotate;
  const unsigned lanemask_lt = (1u << lane) - 1;
  const uint32_t full_steps = n / 32;
  const uint32_t blocks = full_steps / kSteps;
  // column of this lane's element within its row (only tracked for the delta predictor)
  uint64_t col = Delta ? (seg.first_elem + lane) % seg.row : 0;
  const uint64_t row = seg.row;
  // a step with every lane active: element 32 s + lane of every plane, merged
  auto whole_step = [&](uint32_t s) {
    const uint32_t i = 32 * s + lane;
    const uint32_t word = d.template step<true, Delta, Modes>(delta, s, true, Delta && (i == 0 || col == 0), lanemask_lt, lane);
    if (Delta) {
      col += 32;
      while (col >= row) col -= row;
    }
    return word;
  };
  if (verify) crc.start(blocks);
  uint4* block_out = reinterpret_cast<uint4*>(out + 16 * lane);
  uint32_t s = 0;
  for (uint32_t b = 0; b < blocks; ++b) {
#pragma unroll
    for (uint32_t j = 0; j < kSteps; ++j, ++s) {
      stage_element<NP>(stage + NP * (32 * j + lane), whole_step(s), rotate);
      if (j % kRefill == kRefill - 1) refill_all<NP>(d);
    }
    BlockCrc::Fragments f;
    if (verify) f = crc.matrix();
    __syncwarp();
    const uint4 q = lds_u128(stage + 16 * lane);
    __syncwarp();  // the next block's stores come after every lane's load
    *block_out = q;
    block_out += kBlockBytes / 16;
    if (verify) crc.add(q, f, b, blocks);
  }
  for (; s < full_steps; ++s) {
    store_element<NP>(out, 32 * s + lane, whole_step(s), rotate);
    if (s % kRefill == kRefill - 1) refill_all<NP>(d);
  }
  refill_all<NP>(d);
  if (n % 32) {
    const uint32_t i = 32 * full_steps + lane;
    const bool active = i < n;
    const uint32_t word = d.template step<false, Delta, Modes>(delta, full_steps, active, Delta && (i == 0 || col == 0), lanemask_lt, lane);
    if (active) store_element<NP>(out, i, word, rotate);
  }
  return blocks * kBlockBytes;
}

// tables_off: g_smem word offset of the block's tables; rings_off: g_smem uint16 offset of this
// warp's word rings; stage: shared address of its staging block; the CRC tables are at g_smem 0.
template <int NP>
__device__ void decode_segment(const DevSegment& seg, uint32_t tables_off, uint32_t rings_off, uint32_t stage,
                               const DevConstants* consts, const DevChunk* chunks, ChunkCrc* chunk_crc,
                               int32_t* status, bool verify, int lane) {
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
                 base + 2 * (rings_off + RingGeometry<NP>::kRingWords * used++), lane);
    if (__any_sync(0xffffffffu, d.x[p] < kStateLow)) {
      if (lane == 0) fail(status, chunk, kBadInitialState);
      ok = false;
    }
  }
  bool padded = false;
#pragma unroll
  for (int p = 0; p < NP; ++p) {
    const DevPlane& pl = seg.planes[p];
    padded |= static_cast<uint32_t>(lane) < pl.zero_before && pl.payload[-1 - lane] != 0;
  }
  if (__any_sync(0xffffffffu, padded) && lane == 0) fail(status, chunk, kBadPadding);
  BlockCrc crc;
  crc.matrices = base + 32 * lane;  // g_smem 0
  uint32_t staged = 0;
  if (ok) {
    // the common plane layouts get a loop without mode tests: int8 and fp8 (rANS), bf16 and
    // fp16 (rANS exponent plane, raw or rANS low plane)
    uint32_t modes = 0;
#pragma unroll
    for (int p = 0; p < NP; ++p) modes |= uint32_t{d.mode[p]} << (2 * p);
    if (NP == 1 && modes == 2u) {
      staged = any_delta ? decode_steps<NP, true, 2u>(d, seg, delta, stage, verify, crc, lane)
                         : decode_steps<NP, false, 2u>(d, seg, delta, stage, verify, crc, lane);
    } else if (NP == 2 && modes == 2u) {
      staged = any_delta ? decode_steps<NP, true, 2u>(d, seg, delta, stage, verify, crc, lane)
                         : decode_steps<NP, false, 2u>(d, seg, delta, stage, verify, crc, lane);
    } else if (NP == 2 && modes == 10u) {
      staged = any_delta ? decode_steps<NP, true, 10u>(d, seg, delta, stage, verify, crc, lane)
                         : decode_steps<NP, false, 10u>(d, seg, delta, stage, verify, crc, lane);
    } else {
      staged = any_delta ? decode_steps<NP, true, kAnyModes>(d, seg, delta, stage, verify, crc, lane)
                         : decode_steps<NP, false, kAnyModes>(d, seg, delta, stage, verify, crc, lane);
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
  // the staged bytes' register: the xor of the lanes' shares
  uint32_t r_staged = staged ? crc.finish(*consts, lane) : 0;
  // The rest: a CRC32C register (initial 0) of each lane's 16-byte-aligned slice of it, then
  // joined: R(A || B) = shift(R(A), len(B)) ^ R(B).
  const uint8_t* rest = out + staged;
  const uint64_t total = uint64_t(n) * NP - staged;
  const uint64_t slice = ((total + 31) / 32 + 15) & ~uint64_t(15);
  const uint64_t begin = min(total, lane * slice);
  const uint64_t end = min(total, begin + slice);
  uint32_t r = 0;
  uint64_t k = begin;
  for (; k + 16 <= end; k += 16) {
    const uint4 q = *reinterpret_cast<const uint4*>(rest + k);
    r = crc_word(*consts, r, q.x);
    r = crc_word(*consts, r, q.y);
    r = crc_word(*consts, r, q.z);
    r = crc_word(*consts, r, q.w);
  }
  for (; k < end; ++k) r = (r >> 8) ^ __ldg(&consts->crc_table[0][(r ^ rest[k]) & 0xff]);
  if (end < total && r != 0) r = multmodp(shift_bytes(*consts, total - end), r);
#pragma unroll
  for (int d2 = 16; d2 > 0; d2 >>= 1) {
    r ^= __shfl_xor_sync(0xffffffffu, r, d2);
    r_staged ^= __shfl_xor_sync(0xffffffffu, r_staged, d2);
  }
  if (total && r_staged) r_staged = multmodp(shift_bytes(*consts, total), r_staged);
  if (lane != 0) return;
  ChunkCrc& sum = chunk_crc[chunk];
  atomicXor(&sum.sum, multmodp(seg.crc_shift, r_staged ^ r));
  __threadfence();
  // the last segment sees every other's sum (each added it before counting itself)
  if (atomicAdd(&sum.done, 1u) + 1 == chunks[chunk].num_segments) {
    __threadfence();
    const DevChunk& c = chunks[chunk];
    if (c.has_crc && atomicXor(&sum.sum, 0u) != c.expected_sum) fail(status, chunk, kChecksumMismatch);
  }
}

// Zeroes the chunks' statuses and, when checksums are checked, their sums before a decode: one
// launch instead of two memsets.
__global__ void clear_chunks_kernel(int32_t* __restrict__ status, ChunkCrc* __restrict__ chunk_crc, uint32_t count) {
  for (uint32_t i = blockIdx.x * blockDim.x + threadIdx.x; i < count; i += gridDim.x * blockDim.x) {
    status[i] = 0;
    if (chunk_crc) chunk_crc[i] = ChunkCrc{0, 0};
  }
}

// The block matrices and the group shift at the start of shared memory, in 32-bit words.
constexpr uint32_t kCrcMatrixWords = (kCrcGroup + 1) * 32 * 8;

// Shared memory of a block of NP-plane segments, in bytes: the CRC matrices, max_tables decode
// tables, a staging block per warp, and the word rings (max_rans per warp).
template <int NP>
__host__ __device__ constexpr size_t block_smem_bytes(uint32_t max_tables, uint32_t max_rans) {
  return kCrcMatrixWords * sizeof(uint32_t) + size_t{max_tables} * kTableEntries * sizeof(uint32_t) +
         size_t{kWarpsPerBlock} * kBlockBytes +
         size_t{kWarpsPerBlock} * max_rans * RingGeometry<NP>::kRingWords * sizeof(uint16_t);
}

// Blocks of segments of one itemsize (NP planes): the plan groups them, so each launch carries
// only the registers its plane count needs. MinBlocks thread blocks fit an SM (the compiler
// holds the registers to that); int8's four keep a batch of 4 MiB chunks in one wave.
template <int NP, int MinBlocks>
__global__ void __launch_bounds__(kWarpsPerBlock * 32, MinBlocks)
decode_blocks_kernel(const DevBlock* __restrict__ blocks, const DevSegment* __restrict__ segments,
                     const DevTable* __restrict__ tables, const DevConstants* __restrict__ consts,
                     const DevChunk* __restrict__ chunks, ChunkCrc* __restrict__ chunk_crc,
                     int32_t* __restrict__ status, int max_tables, int max_rans, bool verify) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const DevBlock block = blocks[blockIdx.x];
  // g_smem layout (32-bit words): CRC matrices, max_tables decode tables (4096 each), the
  // warps' staging blocks, then the word rings
  const uint32_t tables_off = kCrcMatrixWords;
  const uint32_t base = smem_addr(g_smem);
  const uint32_t stages = base + 4 * (tables_off + kTableEntries * max_tables);
  constexpr uint32_t kRingWords = RingGeometry<NP>::kRingWords;
  const uint32_t rings_off = (stages + kWarpsPerBlock * kBlockBytes - base) / 2;
  if (verify) {
    static_assert(offsetof(DevConstants, group_shift) + sizeof(DevConstants::group_shift) ==
                      kCrcMatrixWords * sizeof(uint32_t),
                  "the matrices are the constants' first words");
    // a fixed stride, so that every thread's loads are issued before its first store waits
    constexpr uint32_t kQuads = kCrcMatrixWords / 4, kThreads = kWarpsPerBlock * 32;
    static_assert(kCrcMatrixWords % 4 == 0, "the matrices copy in 16-byte pieces");
    const uint4* from = reinterpret_cast<const uint4*>(&consts->block_matrix[0][0][0]);
    uint4 quads[(kQuads + kThreads - 1) / kThreads];
#pragma unroll
    for (uint32_t k = 0; k * kThreads < kQuads; ++k) {
      if (k * kThreads + threadIdx.x < kQuads) quads[k] = __ldg(from + k * kThreads + threadIdx.x);
    }
#pragma unroll
    for (uint32_t k = 0; k * kThreads < kQuads; ++k) {
      if (k * kThreads + threadIdx.x < kQuads) reinterpret_cast<uint4*>(g_smem)[k * kThreads + threadIdx.x] = quads[k];
    }
  }
  for (uint32_t t = 0; t < block.table_count; ++t) {
    build_table(tables[block.table_first + t], tables_off + kTableEntries * t, warp, lane);
  }
  __syncthreads();
  if (static_cast<uint32_t>(warp) >= block.count) return;
  decode_segment<NP>(segments[block.first_segment + warp], tables_off, rings_off + warp * max_rans * kRingWords,
                     stages + warp * kBlockBytes, consts, chunks, chunk_crc, status, verify, lane);
}

}  // namespace wcodec::cuda::detail
