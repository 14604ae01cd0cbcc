// NEON segment decoder (AArch64, where NEON is always present): the 32 lanes are eight 4-lane
// vectors. NEON has no gather, so each lane's table entry is loaded on its own into its vector
// lane; the step's arithmetic, the symbols' narrowing and the renormalisation are vector work.
// Renormalisation places the shared stream's words in lane order: a lane below L takes word
// number (lanes below L before it), found by a prefix count within each vector plus a running
// count, and a byte table lookup (TBL) over the next 16 bytes of the stream moves each word into
// its lane.
#if defined(__aarch64__)
#include <arm_neon.h>

#include "segment_decode.h"
#include "segment_encode.h"

namespace wcodec {

namespace {

// A step reads at most 16 bytes from the stream position of its last vector, which is at most
// 28 words (56 bytes) past the step's start: steps run only while 72 bytes remain.
inline bool can_step(size_t i, size_t n, const uint8_t* wp, const uint8_t* wend) {
  return i + kLanes <= n && wend - wp >= 72;
}

inline uint32x4_t lookup(const uint32_t* table, uint32x4_t slot) {
  uint32x4_t e = vdupq_n_u32(0);
  e = vld1q_lane_u32(table + vgetq_lane_u32(slot, 0), e, 0);
  e = vld1q_lane_u32(table + vgetq_lane_u32(slot, 1), e, 1);
  e = vld1q_lane_u32(table + vgetq_lane_u32(slot, 2), e, 2);
  e = vld1q_lane_u32(table + vgetq_lane_u32(slot, 3), e, 3);
  return e;
}

// Decodes symbols out[0..31] from the states x.
inline void step(const uint32_t* table, uint32x4_t x[8], const uint8_t*& wp, uint8_t* out) {
  const uint32x4_t slot_mask = vdupq_n_u32(kProbScale - 1);
  const uint32x4_t low = vdupq_n_u32(kStateLow);
  const uint32x4_t zero = vdupq_n_u32(0);
  uint16x4_t sym[8];
  for (int q = 0; q < 8; ++q) {
    const uint32x4_t e = lookup(table, vandq_u32(x[q], slot_mask));
    const uint32x4_t offset = vandq_u32(vshrq_n_u32(e, 8), slot_mask);
    x[q] = vmlaq_u32(offset, vshrq_n_u32(e, 20), vshrq_n_u32(x[q], kProbBits));
    sym[q] = vmovn_u32(e);  // the low byte of each entry is its symbol
  }
  for (int q = 0; q < 8; q += 2) {
    vst1_u8(out + 4 * q, vmovn_u16(vcombine_u16(sym[q], sym[q + 1])));
  }
  uint32_t taken = 0;  // words taken by the lanes before this vector
  for (int q = 0; q < 8; ++q) {
    const uint32x4_t need = vcltq_u32(x[q], low);
    const uint32x4_t one = vshrq_n_u32(need, 31);
    // inclusive prefix count of the lanes that need a word, then exclusive
    uint32x4_t count = vaddq_u32(one, vextq_u32(zero, one, 3));
    count = vaddq_u32(count, vextq_u32(zero, count, 2));
    const uint32x4_t before = vsubq_u32(count, one);
    // bytes 2k and 2k + 1 of the next 16 for a lane taking word k (0xff: out of the table,
    // zero, for the high half)
    const uint32x4_t bytes = vmlaq_n_u32(vdupq_n_u32(0xffff0100u), before, 0x202u);
    const uint32x4_t words =
        vreinterpretq_u32_u8(vqtbl1q_u8(vld1q_u8(wp + 2 * taken), vreinterpretq_u8_u32(bytes)));
    x[q] = vbslq_u32(need, vorrq_u32(vshlq_n_u32(x[q], 16), words), x[q]);
    taken += vgetq_lane_u32(count, 3);
  }
  wp += 2 * taken;
}

void decode(const SegmentJob& job) {
  uint32x4_t x[8];
  uint32x4_t below = vdupq_n_u32(0);
  for (int q = 0; q < 8; ++q) {
    x[q] = vreinterpretq_u32_u8(vld1q_u8(job.payload + 16 * q));
    below = vorrq_u32(below, vcltq_u32(x[q], vdupq_n_u32(kStateLow)));
  }
  if (vmaxvq_u32(below) != 0) throw FormatError("corrupt segment: initial rANS state below 2^16");
  const uint8_t* wp = job.payload + kStateBytes;
  const uint8_t* const wend = job.payload + job.len;
  size_t i = 0;
  for (; can_step(i, job.n, wp, wend); i += kLanes) step(job.table->entry, x, wp, job.out + i);
  uint32_t state[kLanes];
  for (int q = 0; q < 8; ++q) vst1q_u32(state + 4 * q, x[q]);
  decode_segment_tail(*job.table, state, i, job.n, wp, wend, job.out);
}

}  // namespace

void decode_segment_neon(const DecodeTable& table, const uint8_t* payload, size_t len, uint8_t* out,
                         size_t n) {
  decode(SegmentJob{&table, payload, len, out, n});
}

void decode_segment_group_neon(SegmentJob* jobs, int count) {
  for (int k = 0; k < count; ++k) decode(jobs[k]);
}

void symbol_presence_neon(const uint8_t* x, uint64_t n, uint8_t seen[256]) {
  // The map's 32 bytes (segment_encode.h) as a two-register table: a byte v finds its map byte
  // at v >> 3 and its bit there by a lookup of v & 7.
  uint64_t bits[4] = {};
  uint8x16x2_t map = {{vdupq_n_u8(0), vdupq_n_u8(0)}};
  static const uint8_t kBitOf[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const uint8x16_t bit_of = vld1q_u8(kBitOf);
  uint64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const uint8x16_t v = vld1q_u8(x + i);
    const uint8x16_t row = vqtbl2q_u8(map, vshrq_n_u8(v, 3));
    const uint8x16_t bit = vqtbl1q_u8(bit_of, vandq_u8(v, vdupq_n_u8(7)));
    if (vminvq_u8(vtstq_u8(row, bit)) != 0) continue;  // every byte's bit is set
    for (int k = 0; k < 16; ++k) mark_symbol(bits, x[i + k]);
    map.val[0] = vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(bits[0]), vcreate_u64(bits[1])));
    map.val[1] = vreinterpretq_u8_u64(vcombine_u64(vcreate_u64(bits[2]), vcreate_u64(bits[3])));
  }
  for (; i < n; ++i) mark_symbol(bits, x[i]);
  presence_from_bits(bits, seen);
}

}  // namespace wcodec
#endif
