// Parsing and validating the chunk container (everything but the rANS payloads).
#include <algorithm>
#include <string>

#include "wcodec/codec.h"

namespace wcodec {

namespace {

std::string plane_seg(uint32_t p, uint64_t j) {
  return "plane " + std::to_string(p) + " segment " + std::to_string(j) + ": ";
}

bool all_zero(const uint8_t* p, uint64_t n) {
  for (uint64_t i = 0; i < n; ++i) {
    if (p[i]) return false;
  }
  return true;
}

}  // namespace

ChunkInfo parse_header(const uint8_t* src, size_t n) {
  ChunkInfo info;
  if (n < kHeaderBytes) throw FormatError("truncated header: " + std::to_string(n) + " bytes");
  if (std::memcmp(src, kMagic, 4) != 0) throw FormatError("bad magic: not a wcodec chunk");
  if (src[4] != kVersion) {
    throw FormatError("unsupported format version " + std::to_string(src[4]) +
                      " (this decoder reads version " + std::to_string(kVersion) + ")");
  }
  info.dtype = src[5];
  if (!dtype_layout(info.dtype, &info.layout)) {
    throw FormatError("unknown dtype code " + std::to_string(info.dtype));
  }
  info.ndim = src[6];
  if (info.ndim > kMaxNdim) throw FormatError("bad header: ndim " + std::to_string(info.ndim) + " > 32");
  const uint8_t flags = src[7];
  if (flags & ~kKnownFlags) throw FormatError("bad header: unknown flags " + std::to_string(flags));
  info.has_checksum = flags & kFlagChecksum;
  const uint32_t seg_kib = src[8];
  if (seg_kib < kMinSegKib || seg_kib > kMaxSegKib) {
    throw FormatError("bad header: segment size " + std::to_string(seg_kib) + " KiB not in 16..64");
  }
  info.seg_elems = seg_kib * 1024;
  if (src[9] || src[10] || src[11]) throw FormatError("bad header: reserved bytes are not zero");
  info.checksum = load_u32(src + 12);
  if (!info.has_checksum && info.checksum) throw FormatError("bad header: checksum set but not flagged");
  if (n < kHeaderBytes + 8ull * info.ndim) throw FormatError("truncated header: shape cut off");
  info.nelem = 1;
  for (uint32_t d = 0; d < info.ndim; ++d) {
    const uint64_t s = load_u64(src + kHeaderBytes + 8 * d);
    info.shape[d] = s;
    if (s != 0 && info.nelem > kMaxChunkBytes / s) {
      throw FormatError("size limit: chunk shape exceeds 2^40 bytes");
    }
    info.nelem *= s;
  }
  info.nbytes = info.nelem * info.layout.itemsize;
  if (info.nbytes > kMaxChunkBytes) throw FormatError("size limit: chunk shape exceeds 2^40 bytes");
  info.nplanes = info.layout.itemsize;
  info.nseg = (info.nelem + info.seg_elems - 1) / info.seg_elems;
  info.row = info.ndim == 0 || info.shape[info.ndim - 1] == 0 ? 1 : info.shape[info.ndim - 1];
  return info;
}

uint64_t chunk_head_bound(const uint8_t* src, size_t avail, size_t n) {
  const ChunkInfo info = parse_header(src, std::min(avail, n));
  // a plane descriptor is its mode byte, a constant or table mask, and at most one table per
  // predictor; padding to 8 comes before the index of 8 bytes per segment of each rANS plane
  const uint64_t descriptors = info.nplanes * (2 + kNumPredictors * kMaxTableBytes);
  const uint64_t index = 8 * info.nplanes * info.nseg;
  return std::min<uint64_t>(n, kHeaderBytes + 8ull * info.ndim + descriptors + 7 + index);
}

ChunkInfo parse_chunk(const uint8_t* src, size_t n) { return parse_chunk_head(src, n, n); }

ChunkInfo parse_chunk_head(const uint8_t* src, size_t avail, size_t n) {
  // the structure is checked against the chunk's length n; bytes are read below `have` only
  // (a head that claims more than its bound is malformed: "truncated" within what was read)
  const bool whole = avail >= n;
  const uint64_t have = whole ? n : avail;
  ChunkInfo info = parse_header(src, have);
  uint64_t pos = kHeaderBytes + 8ull * info.ndim;
  for (uint32_t p = 0; p < info.nplanes; ++p) {
    PlaneInfo& pl = info.planes[p];
    const uint64_t start = pos;
    if (pos >= have) throw FormatError("truncated plane descriptors");
    const uint8_t mode = src[pos++];
    if (mode > static_cast<uint8_t>(PlaneMode::Rans)) {
      throw FormatError("plane " + std::to_string(p) + ": unknown mode " + std::to_string(mode));
    }
    pl.mode = static_cast<PlaneMode>(mode);
    if (pl.mode == PlaneMode::Constant) {
      if (pos >= have) throw FormatError("truncated plane descriptors");
      pl.constant = src[pos++];
    } else if (pl.mode == PlaneMode::Rans) {
      if (info.nelem == 0) throw FormatError("plane " + std::to_string(p) + ": rANS plane of an empty chunk");
      if (pos >= have) throw FormatError("truncated plane descriptors");
      pl.table_mask = src[pos++];
      if (pl.table_mask == 0 || pl.table_mask >= (1u << kNumPredictors)) {
        throw FormatError("plane " + std::to_string(p) + ": bad table mask " + std::to_string(pl.table_mask));
      }
      for (uint32_t q = 0; q < kNumPredictors; ++q) {
        if (!(pl.table_mask & (1u << q))) continue;
        try {
          pos += parse_table(src + pos, have - pos, &pl.tables[q]);
        } catch (const FormatError& e) {
          throw FormatError("plane " + std::to_string(p) + ": " + e.what());
        }
      }
    }
    pl.descriptor_bytes = pos - start;
  }
  const uint64_t index_start = align_up(pos, 8);
  if (index_start > have) throw FormatError("truncated before the segment index");
  if (!all_zero(src + pos, index_start - pos)) throw FormatError("bad padding before the segment index");
  pos = index_start;
  info.index_offset = pos;
  for (uint32_t p = 0; p < info.nplanes; ++p) {
    PlaneInfo& pl = info.planes[p];
    if (pl.mode != PlaneMode::Rans) continue;
    pl.index_offset = pos;
    if ((have - pos) / 8 < info.nseg) throw FormatError("truncated segment index");
    pos += 8 * info.nseg;
  }
  info.data_offset = pos;
  uint64_t data = 0;  // running offset inside the data section
  const uint64_t data_len = n - pos;
  for (uint32_t p = 0; p < info.nplanes; ++p) {
    PlaneInfo& pl = info.planes[p];
    if (pl.mode == PlaneMode::Constant) continue;
    const uint64_t start = align_up(data, 4);
    if (start > data_len) throw FormatError("plane " + std::to_string(p) + ": truncated payload");
    if (whole && !all_zero(src + info.data_offset + data, start - data)) {
      throw FormatError("bad padding between planes");
    }
    pl.pad_before = static_cast<uint32_t>(start - data);
    pl.payload_offset = info.data_offset + start;
    const uint64_t room = data_len - start;
    if (pl.mode == PlaneMode::Raw) {
      if (room < info.nelem) throw FormatError("plane " + std::to_string(p) + ": truncated raw plane");
      pl.payload_bytes = info.nelem;
    } else {
      const uint8_t* payload = src + pl.payload_offset;  // read only when whole
      uint64_t prev_end = 0;
      for (uint64_t j = 0; j < info.nseg; ++j) {
        const uint64_t e = load_u64(src + pl.index_offset + 8 * j);
        const uint32_t coding = e & 0xf;
        const uint32_t pred = (e >> 4) & 0xf;
        const uint64_t end = e >> 8;
        const uint64_t seg_start = align_up(prev_end, 4);
        if (coding > static_cast<uint32_t>(SegCoding::Rans) || pred >= kNumPredictors) {
          throw FormatError(plane_seg(p, j) + "bad index tag");
        }
        if (coding == static_cast<uint32_t>(SegCoding::Raw) && pred != 0) {
          throw FormatError(plane_seg(p, j) + "raw segment with a predictor");
        }
        if (coding == static_cast<uint32_t>(SegCoding::Rans) && !(pl.table_mask & (1u << pred))) {
          throw FormatError(plane_seg(p, j) + "predictor without a table");
        }
        if (end < seg_start || end > room) throw FormatError(plane_seg(p, j) + "truncated segment");
        if (whole && !all_zero(payload + prev_end, seg_start - prev_end)) {
          throw FormatError(plane_seg(p, j) + "bad padding before segment");
        }
        const uint64_t len = end - seg_start;
        const uint64_t count = info.seg_len(j);
        if (coding == static_cast<uint32_t>(SegCoding::Raw)) {
          if (len != count) throw FormatError(plane_seg(p, j) + "raw segment length mismatch");
        } else if (len < kStateBytes || (len - kStateBytes) % 2 != 0 || (len - kStateBytes) / 2 > count) {
          throw FormatError(plane_seg(p, j) + "bad rANS segment length");
        }
        prev_end = end;
      }
      pl.payload_bytes = prev_end;
    }
    data = start + pl.payload_bytes;
  }
  if (data != data_len) {
    throw FormatError(data < data_len ? "trailing bytes after the last plane" : "truncated chunk");
  }
  info.total_bytes = n;
  return info;
}

SegmentCounts count_segments(const uint8_t* src, const ChunkInfo& info, uint32_t plane) {
  SegmentCounts c;
  const PlaneInfo& pl = info.planes[plane];
  if (pl.mode != PlaneMode::Rans) return c;
  for (uint64_t j = 0; j < info.nseg; ++j) {
    const uint64_t e = load_u64(src + pl.index_offset + 8 * j);
    if ((e & 0xf) == static_cast<uint64_t>(SegCoding::Raw)) {
      ++c.raw;
    } else {
      ++c.rans;
      if (((e >> 4) & 0xf) == static_cast<uint64_t>(Predictor::Delta)) ++c.delta;
    }
  }
  return c;
}

}  // namespace wcodec
