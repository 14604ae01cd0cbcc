// Native unit tests, run under AddressSanitizer and UBSan in CI (.ci/run). Each check prints what
// failed and the program exits nonzero.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <utility>
#include <vector>

#include "segment_decode.h"
#include "segment_encode.h"
#include "wcodec/codec.h"
#include "wcodec/crc32c.h"
#include "wcodec/parallel.h"
#include "wcodec/shard.h"

using namespace wcodec;

static int failures = 0;
#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                     \
    }                                                                 \
  } while (0)

template <class F>
static bool throws_format_error(F&& f) {
  try {
    f();
  } catch (const FormatError&) {
    return true;
  }
  return false;
}

static std::vector<uint8_t> encode(const std::vector<uint8_t>& data, DType dt, std::vector<uint64_t> shape,
                                   bool checksum = true) {
  EncodeOptions opt;
  opt.threads = 2;
  opt.checksum = checksum;
  EncodedChunk c = encode_chunk(data.data(), static_cast<uint8_t>(dt), shape.data(),
                                static_cast<uint32_t>(shape.size()), opt);
  std::vector<uint8_t> out(c.size());
  c.write(out.data());
  return out;
}

static std::vector<uint8_t> decode(const std::vector<uint8_t>& chunk, int threads = 2) {
  const ChunkInfo info = parse_header(chunk.data(), chunk.size());
  std::vector<uint8_t> out(info.nbytes);
  DecodeJob job{chunk.data(), chunk.size(), out.data(), out.size()};
  decode_chunks(&job, 1, threads);
  return out;
}

// Bit at a time, straight from the definition.
static uint32_t crc32c_reference(const uint8_t* p, size_t n, uint32_t crc) {
  uint32_t c = ~crc;
  for (size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
  }
  return ~c;
}

static void test_crc() {
  const char* s = "123456789";
  CHECK(crc32c(reinterpret_cast<const uint8_t*>(s), 9) == 0xE3069283u);
  std::vector<uint8_t> buf(100000);
  std::mt19937 rng(1);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  const uint32_t whole = crc32c(buf.data(), buf.size());
  for (size_t cut : {size_t{0}, size_t{1}, size_t{4095}, size_t{12288}, size_t{77777}}) {
    const uint32_t a = crc32c(buf.data(), cut);
    const uint32_t b = crc32c(buf.data() + cut, buf.size() - cut);
    CHECK(crc32c_combine(a, b, buf.size() - cut) == whole);
    CHECK(crc32c(buf.data() + cut, buf.size() - cut, a) == whole);
  }
  // Every length around the block sizes of the folding and three-stream paths, at odd offsets
  // and with a running state.
  for (size_t n : {size_t{0}, size_t{7}, size_t{255}, size_t{2047}, size_t{2048}, size_t{2049}, size_t{2303},
                   size_t{4096}, size_t{12287}, size_t{12288}, size_t{12289}, size_t{65536}, size_t{99000}}) {
    for (size_t off : {size_t{0}, size_t{1}, size_t{13}}) {
      for (uint32_t init : {0u, 0xdeadbeefu}) {
        CHECK(crc32c(buf.data() + off, n, init) == crc32c_reference(buf.data() + off, n, init));
      }
    }
  }
}

// Coded bits of the counts under a table.
static double table_bits(const uint64_t* counts, const FreqTable& t) {
  double bits = 0.0;
  for (int s = 0; s < 256; ++s) {
    if (counts[s]) bits += static_cast<double>(counts[s]) * (kProbBits - std::log2(static_cast<double>(t.freq[s])));
  }
  return bits;
}

// normalize_freqs against the exact optimum (one slot per present symbol, then each further
// slot to the largest gain: optimal, the gains being concave), on skewed histograms with many
// rare symbols, from a few counts to millions.
static void test_tables_near_optimal() {
  std::mt19937_64 rng(11);
  for (int it = 0; it < 300; ++it) {
    uint64_t counts[256] = {};
    const int k = 2 + static_cast<int>(rng() % 255);
    const uint64_t scale = uint64_t{1} << (rng() % 24);
    const double skew = 0.5 + static_cast<double>(rng() % 60) / 10.0;
    uint64_t total = 0;
    for (int s = 0; s < k; ++s) {
      counts[s] = static_cast<uint64_t>(static_cast<double>(scale) / std::pow(1.0 + s, skew)) + (rng() % 4 == 0);
      total += counts[s];
    }
    int present = 0;
    for (int s = 0; s < 256; ++s) present += counts[s] != 0;
    if (present < 2) continue;
    FreqTable t;
    normalize_freqs(counts, &t);
    uint32_t sum = 0;
    for (int s = 0; s < 256; ++s) {
      CHECK((counts[s] == 0) == (t.freq[s] == 0));
      sum += t.freq[s];
    }
    CHECK(sum == kProbScale);
    FreqTable best{};
    std::vector<std::pair<double, int>> heap;
    for (int s = 0; s < 256; ++s) {
      if (!counts[s]) continue;
      best.freq[s] = 1;
      heap.push_back({static_cast<double>(counts[s]), s});  // gain of a second slot: c log2(2/1)
    }
    std::make_heap(heap.begin(), heap.end());
    for (uint32_t used = static_cast<uint32_t>(present); used < kProbScale; ++used) {
      std::pop_heap(heap.begin(), heap.end());
      const int s = heap.back().second;
      const double f = ++best.freq[s];
      heap.back().first = static_cast<double>(counts[s]) * std::log2((f + 1) / f);
      std::push_heap(heap.begin(), heap.end());
    }
    CHECK(table_bits(counts, t) <= table_bits(counts, best) + 1e-3 * static_cast<double>(total));
  }
}

static void test_tables() {
  uint64_t counts[256] = {};
  counts[0] = 1000000;
  counts[1] = 1;
  counts[200] = 3;
  FreqTable t;
  normalize_freqs(counts, &t);
  uint32_t sum = 0;
  for (int s = 0; s < 256; ++s) sum += t.freq[s];
  CHECK(sum == kProbScale);
  CHECK(t.freq[1] >= 1 && t.freq[200] >= 1 && t.freq[0] == kProbScale - t.freq[1] - t.freq[200]);
  uint8_t buf[600];
  const size_t n = serialize_table(t, buf);
  FreqTable back;
  CHECK(parse_table(buf, n, &back) == n);
  CHECK(std::memcmp(&back, &t, sizeof t) == 0);
  for (size_t cut = 0; cut < n; ++cut) CHECK(throws_format_error([&] { parse_table(buf, cut, &back); }));
  // frequencies that do not sum to 4096
  uint8_t bad[34] = {};
  bad[0] = 0x03;  // symbols 0 and 1
  bad[32] = 10;
  bad[33] = 10;
  CHECK(throws_format_error([&] { parse_table(bad, sizeof bad, &back); }));
  // a single symbol holding the whole range (4096 needs 13 bits)
  uint8_t single[34] = {};
  single[0] = 0x01;
  single[32] = 0x80 | 0x0f;
  single[33] = 0xff;
  CHECK(throws_format_error([&] { parse_table(single, sizeof single, &back); }));
}

static void test_round_trips() {
  std::mt19937 rng(7);
  const DType types[] = {DType::Int8, DType::UInt16, DType::Float16, DType::BFloat16, DType::Float32, DType::Int32};
  for (DType dt : types) {
    DTypeLayout layout;
    dtype_layout(static_cast<uint8_t>(dt), &layout);
    for (uint64_t n : {uint64_t{0}, uint64_t{1}, uint64_t{31}, uint64_t{33}, uint64_t{65536}, uint64_t{200003}}) {
      std::vector<uint8_t> data(n * layout.itemsize);
      std::normal_distribution<double> normal(0.0, 12.0);
      for (size_t i = 0; i < data.size(); ++i) {
        // peaked low bytes, noisy high bytes: exercises raw, rANS and constant planes
        data[i] = static_cast<uint8_t>(i % layout.itemsize == 0 ? static_cast<int>(normal(rng)) : rng() & 3);
      }
      const std::vector<uint8_t> chunk = encode(data, dt, {n});
      CHECK(decode(chunk, 1) == data);
      CHECK(decode(chunk, 3) == data);
    }
  }
}

// Batches whose decode tables are built up front (chunks of many segments, few tables) and by
// the tasks that use them (one-segment chunks; more tables than the decoder keeps): both
// bit-exact at one and three threads, and a corrupt chunk in either still named.
static void test_batches() {
  std::mt19937 rng(11);
  std::normal_distribution<double> normal(0.0, 9.0);
  for (size_t count : {size_t{3}, size_t{40}, size_t{700}}) {
    std::vector<std::vector<uint8_t>> data(count), chunks(count), outs(count);
    for (size_t k = 0; k < count; ++k) {
      const DType dt = k % 3 == 0 ? DType::BFloat16 : DType::Int8;
      const uint64_t n = count == 3 ? 300000 + k : 1000 + 37 * k;
      data[k].resize(n * (dt == DType::BFloat16 ? 2 : 1));
      for (size_t i = 0; i < data[k].size(); ++i) {
        data[k][i] = static_cast<uint8_t>(dt == DType::BFloat16 && i % 2 ? 0x3c + (rng() & 1)
                                                                            : static_cast<int>(normal(rng)));
      }
      chunks[k] = encode(data[k], dt, {n});
    }
    for (int threads : {1, 3}) {
      std::vector<DecodeJob> jobs(count);
      for (size_t k = 0; k < count; ++k) {
        outs[k].assign(data[k].size(), 0);
        jobs[k] = {chunks[k].data(), chunks[k].size(), outs[k].data(), outs[k].size()};
      }
      decode_chunks(jobs.data(), count, threads);
      CHECK(outs == data);
      std::vector<uint8_t> bad = chunks[count - 1];
      bad[bad.size() - 1] ^= 1;
      jobs[count - 1].src = bad.data();
      bool named = false;
      try {
        decode_chunks(jobs.data(), count, threads);
      } catch (const ChunkError& e) {
        named = e.index == count - 1;
      }
      CHECK(named);
    }
  }
}

// Two-byte elements with one coded plane and one raw: the decoder may merge the coded plane into
// the output as it decodes it (the rest of the segment, its last symbols, by the merge pass).
// Every length, either plane coded, floats rotated or not; a corrupt coded plane still fails.
static void test_merged_planes() {
  std::mt19937 rng(11);
  for (DType dt : {DType::UInt16, DType::Float16, DType::BFloat16}) {
    for (bool high_coded : {true, false}) {
      for (uint64_t n : {uint64_t{31}, uint64_t{100}, uint64_t{65536}, uint64_t{65536 + 17}, uint64_t{200003}}) {
        std::vector<uint8_t> data(2 * n);
        std::normal_distribution<double> normal(0.0, 6.0);
        for (uint64_t i = 0; i < n; ++i) {
          const uint8_t peaked = static_cast<uint8_t>(static_cast<int>(normal(rng)));
          const uint8_t noise = static_cast<uint8_t>(rng());
          uint16_t v = static_cast<uint16_t>(high_coded ? peaked << 8 | noise : noise << 8 | peaked);
          if (dt != DType::UInt16) v = static_cast<uint16_t>((v >> 1) | (v << 15));  // planes are of the rotated word
          std::memcpy(data.data() + 2 * i, &v, 2);
        }
        std::vector<uint8_t> chunk = encode(data, dt, {n});
        const ChunkInfo info = parse_chunk(chunk.data(), chunk.size());
        if (n >= 65536) {  // shorter planes do not pay for their lane states and stay raw
          CHECK(info.planes[high_coded ? 0 : 1].mode == PlaneMode::Rans);
          CHECK(info.planes[high_coded ? 1 : 0].mode == PlaneMode::Raw);
        }
        CHECK(decode(chunk, 1) == data);
        CHECK(decode(chunk, 3) == data);
        const PlaneInfo& coded = info.planes[high_coded ? 0 : 1];
        chunk[coded.payload_offset + coded.payload_bytes / 2] ^= 0x10;
        CHECK(throws_format_error([&] { decode(chunk, 1); }));
      }
    }
  }
}

// A 3-D block of uint16 whose data ends inside its last inner chunks: every stored chunk decodes
// to its part of the data padded with the fill, chunks past the data are not stored, and the
// index (with its CRC32C) says where each one is.
static void test_shards() {
  const uint64_t shape[3] = {6, 9, 5}, inner[3] = {2, 4, 5}, grid[3] = {4, 3, 1};
  std::vector<uint8_t> data(6 * 9 * 5 * 2);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + (i >> 3));
  std::vector<uint32_t> order;
  for (uint32_t a = 0; a < 4; ++a) {
    for (uint32_t b = 0; b < 3; ++b) order.insert(order.end(), {3 - a, b, 0});
  }
  const uint8_t fill[2] = {0x12, 0x34};
  ShardSpec spec{data.data(), static_cast<uint8_t>(DType::UInt16), 3, shape, inner, grid, order.data(), 12, fill};
  EncodeOptions opt;
  opt.threads = 3;
  std::vector<uint8_t> out;
  uint64_t encoded_padding = 0;
  const auto append = [&](const EncodedChunk& c) {
    const size_t at = out.size();
    out.resize(at + c.size());
    c.write(out.data() + at);
  };
  const std::vector<uint8_t> index = encode_shard(spec, opt, append, &encoded_padding);
  out.insert(out.end(), index.begin(), index.end());
  const size_t cells = 12, index_at = out.size() - cells * 16 - 4;
  CHECK(crc32c(out.data() + index_at, cells * 16) ==
        (out[out.size() - 4] | out[out.size() - 3] << 8 | out[out.size() - 2] << 16 | uint32_t{out.back()} << 24));
  auto u64 = [&](size_t at) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = v << 8 | out[at + i];
    return v;
  };
  uint64_t padding = 0, expect_offset = 0;
  for (size_t k = 0; k < 12; ++k) {  // writing order: offsets grow along it
    const uint32_t a = order[3 * k], b = order[3 * k + 1];
    const size_t cell = a * 3 + b;
    const uint64_t off = u64(index_at + 16 * cell), len = u64(index_at + 16 * cell + 8);
    if (a * 2 >= 6) {
      CHECK(off == ~uint64_t{0} && len == ~uint64_t{0});
      continue;
    }
    CHECK(off == expect_offset);
    expect_offset += len;
    const std::vector<uint8_t> chunk(out.begin() + off, out.begin() + off + len);
    const std::vector<uint8_t> got = decode(chunk);
    CHECK(got.size() == 2 * 4 * 5 * 2);
    for (uint64_t i = 0; i < 2; ++i) {
      for (uint64_t j = 0; j < 4; ++j) {
        for (uint64_t m = 0; m < 5; ++m) {
          const uint64_t gi = a * 2 + i, gj = b * 4 + j;
          const size_t at = ((i * 4 + j) * 5 + m) * 2;
          if (gj < 9) {
            const size_t src = ((gi * 9 + gj) * 5 + m) * 2;
            CHECK(got[at] == data[src] && got[at + 1] == data[src + 1]);
          } else {
            CHECK(got[at] == fill[0] && got[at + 1] == fill[1]);
            ++padding;
          }
        }
      }
    }
  }
  CHECK(expect_offset == index_at);
  CHECK(encoded_padding == padding);
  // written to a file descriptor: the same bytes
  std::FILE* file = std::tmpfile();
  CHECK(file != nullptr);
  if (file) {
    uint64_t file_padding = 0;
    CHECK(write_shard(fileno(file), spec, opt, &file_padding) == out.size());
    CHECK(file_padding == padding);
    std::vector<uint8_t> back(out.size() + 1);
    std::rewind(file);
    CHECK(std::fread(back.data(), 1, back.size(), file) == out.size());
    back.pop_back();
    CHECK(back == out);
    std::fclose(file);
  }
  order[4] = order[1];  // the second chunk is the first one again
  bool refused = false;
  try {
    encode_shard(spec, opt, append, &encoded_padding);
  } catch (const std::invalid_argument&) {
    refused = true;
  }
  CHECK(refused);
}

#if defined(__x86_64__)
static bool have_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vbmi") &&
         __builtin_cpu_supports("avx512vbmi2") && __builtin_cpu_supports("avx512vpopcntdq");
}
#endif

static void test_scalar_matches_simd() {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2")) return;
  std::mt19937 rng(3);
  std::vector<uint8_t> data(65536);
  std::geometric_distribution<int> geo(0.05);
  for (auto& b : data) b = static_cast<uint8_t>(geo(rng));
  const std::vector<uint8_t> chunk = encode(data, DType::UInt8, {65536}, false);
  const ChunkInfo info = parse_chunk(chunk.data(), chunk.size());
  DecodeTable table;
  build_decode_table(info.planes[0].tables[0], &table);
  const uint8_t* payload = chunk.data() + info.planes[0].payload_offset;
  const size_t len = info.planes[0].payload_bytes;
  std::vector<uint8_t> a(65536), b(65536), c(65536), d(65536);
  decode_segment_scalar(table, payload, len, a.data(), a.size());
  decode_segment_avx2(table, payload, len, b.data(), b.size());
  SegmentJob pair[2] = {{&table, payload, len, c.data(), c.size()}, {&table, payload, len, d.data(), d.size()}};
  decode_segment_group_avx2(pair, 2);
  CHECK(a == data && b == data && c == data && d == data);
  if (!have_avx512()) return;
  std::vector<uint8_t> e(65536);
  decode_segment_avx512(table, payload, len, e.data(), e.size());
  CHECK(e == data);
  // groups of every size
  std::vector<std::vector<uint8_t>> outs(kMaxGroup, std::vector<uint8_t>(65536));
  for (int count = 1; count <= kMaxGroup; ++count) {
    SegmentJob jobs[kMaxGroup];
    for (int k = 0; k < count; ++k) {
      std::fill(outs[k].begin(), outs[k].end(), 0);
      jobs[k] = {&table, payload, len, outs[k].data(), outs[k].size()};
    }
    decode_segment_group_avx512(jobs, count);
    for (int k = 0; k < count; ++k) CHECK(outs[k] == data);
  }
#elif defined(__aarch64__)
  // every skew, segment length and truncation: NEON decodes what the portable decoder decodes,
  // and fails where it fails
  std::mt19937 rng(3);
  for (int round = 0; round < 40; ++round) {
    const size_t n = 1 + rng() % 70000;
    std::vector<uint8_t> data(n);
    std::geometric_distribution<int> geo(0.01 + 0.02 * (round % 20));
    for (auto& b : data) b = static_cast<uint8_t>(geo(rng));
    const std::vector<uint8_t> chunk = encode(data, DType::UInt8, {n}, false);
    const ChunkInfo info = parse_chunk(chunk.data(), chunk.size());
    if (info.planes[0].mode != PlaneMode::Rans || info.nseg != 1) continue;
    DecodeTable table;
    build_decode_table(info.planes[0].tables[0], &table);
    const uint8_t* payload = chunk.data() + info.planes[0].payload_offset;
    const size_t len = info.planes[0].payload_bytes;
    std::vector<uint8_t> a(n), b(n), c(n);
    decode_segment_scalar(table, payload, len, a.data(), n);
    decode_segment_neon(table, payload, len, b.data(), n);
    SegmentJob job{&table, payload, len, c.data(), n};
    decode_segment_group_neon(&job, 1);
    CHECK(a == data && b == data && c == data);
    const size_t cut = kStateBytes + rng() % (len - kStateBytes);
    CHECK(throws_format_error([&] { decode_segment_neon(table, payload, cut, b.data(), n); }));
  }
#endif
}

// Two encoders' payloads of len bytes for n symbols, compared where they lie in the rooms:
// the states at the start, the words at the end (the bytes between are scratch).
static bool same_payload(const std::vector<uint8_t>& a, const std::vector<uint8_t>& b, uint64_t n, size_t len) {
  const uint8_t* wa = payload_words(a.data(), n, len);
  const uint8_t* wb = payload_words(b.data(), n, len);
  return std::memcmp(a.data(), b.data(), kStateBytes) == 0 && std::memcmp(wa, wb, len - kStateBytes) == 0;
}

static void test_encoders_agree() {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2")) return;
  std::mt19937 rng(5);
  for (uint64_t n : {uint64_t{1}, uint64_t{31}, uint64_t{32}, uint64_t{1000}, uint64_t{65536}}) {
    // spread 0: one symbol holds almost all of the 4096 slots, the others one slot each;
    // spread -1: geometric, frequencies of every size from about 2048 down to 1
    for (int spread : {2, 7, 256, 0, -1}) {
      std::vector<uint8_t> sym(n);
      uint64_t counts[256] = {};
      for (auto& b : sym) {
        if (spread < 0) {
          b = static_cast<uint8_t>(__builtin_ctz(static_cast<uint32_t>(rng()) | 0x1000u) * 20 + rng() % 20);
        } else {
          b = static_cast<uint8_t>(spread ? rng() % spread : (rng() % 512 == 0 ? rng() : 0));
        }
        ++counts[b];
      }
      counts[(sym[0] + 1) & 0xff] += 1;  // at least two symbols
      FreqTable t;
      normalize_freqs(counts, &t);
      EncodeTable et;
      EncodeTableSimd st;
      build_encode_table(t, &et);
      build_encode_table_simd(t, &st);
      std::vector<uint8_t> a(kStateBytes + 2 * n), b(kStateBytes + 2 * n);
      const size_t la = encode_segment_scalar(sym.data(), n, et, a.data());
      const size_t lb = encode_segment_avx2(sym.data(), n, et, st, b.data());
      CHECK(la == lb && same_payload(a, b, n, la));
      if (have_avx512()) {
        std::vector<uint8_t> c(kStateBytes + 2 * n);
        const size_t lc = encode_segment_avx512(sym.data(), n, et, st, c.data());
        CHECK(la == lc && same_payload(a, c, n, la));
        // side by side with a shorter segment (the first n / 3 symbols), in either order
        const uint64_t m = n / 3;
        std::vector<uint8_t> d(kStateBytes + 2 * m), e(kStateBytes + 2 * m);
        const size_t ld = encode_segment_scalar(sym.data(), m, et, d.data());
        for (bool short_first : {false, true}) {
          std::fill(c.begin(), c.end(), 0);
          EncodeJob jobs[2] = {{sym.data(), n, &et, &st, c.data(), 0}, {sym.data(), m, &et, &st, e.data(), 0}};
          if (short_first) std::swap(jobs[0], jobs[1]);
          encode_segment_group_avx512(jobs, 2);
          const EncodeJob& full = jobs[short_first ? 1 : 0];
          const EncodeJob& part = jobs[short_first ? 0 : 1];
          CHECK(full.len == la && same_payload(a, c, n, la));
          CHECK(part.len == ld && same_payload(d, e, m, ld));
        }
      }
    }
  }
#endif
}

// The rank tables (rans.h) give every slot the symbol, frequency and offset of its decode
// entry, for tables with few and with many symbols; a table whose tail crowds more than 15
// buckets with more than four ranges each is marked unusable.
static void test_rank_tables() {
  std::mt19937 rng(13);
  bool saw_unusable = false, saw_complex = false;
  for (int round = 0; round < 60; ++round) {
    uint64_t counts[256] = {};
    const int kind = round % 4;
    for (int s = 0; s < 256; ++s) {
      if (kind == 0) counts[s] = 1 + rng() % 1000;                                        // all present
      if (kind == 1) counts[s] = rng() % 3 == 0 ? 0 : uint64_t{1} << (rng() % 20);        // wide spread
      if (kind == 2) counts[s] = s < 2 + round ? 1 + rng() % 50 : 0;                       // few symbols
      if (kind == 3) counts[s] = s == 0 ? 100000000 : (rng() % 256 < 40 + round * 4 ? 1 : 0);  // crowded tail
    }
    counts[0] += 1;
    counts[255] += 1;
    FreqTable t;
    normalize_freqs(counts, &t);
    static DecodeTable d;
    build_decode_table(t, &d);
    const RankTables& r = d.ranks;
    if (!r.usable) {
      saw_unusable = true;
      continue;
    }
    bool exact = true;
    for (uint32_t slot = 0; slot < kProbScale; ++slot) {
      const uint32_t b = slot >> 4, o = slot & 15;
      uint32_t rank = r.first[b];
      if (r.bounds2[b] >= 16) {
        saw_complex = true;
        rank = r.complex[16 * ((r.bounds2[b] >> 4) - 1) + o];
      } else {
        const uint32_t ds[3] = {r.bounds01[b] & 15u, static_cast<uint32_t>(r.bounds01[b] >> 4), r.bounds2[b] & 15u};
        for (uint32_t dk : ds) rank += o + dk >= 16;
      }
      const uint32_t fc = r.fc[0][rank] | r.fc[1][rank] << 8 | r.fc[2][rank] << 16;
      const uint32_t e = d.entry[slot];
      exact &= r.symbol[rank] == dec_symbol(e) && (fc & 0xfff) == dec_freq(e) && slot - (fc >> 12) == dec_offset(e);
    }
    CHECK(exact);
  }
  CHECK(saw_unusable && saw_complex);
}

// Which symbols occur, for tables built from sampled counts: every kernel finds exactly those,
// a symbol that occurs once anywhere (in a block's last byte, in the tail) included.
static void test_presence() {
  std::mt19937 rng(9);
  for (uint64_t n : {uint64_t{0}, uint64_t{1}, uint64_t{63}, uint64_t{64}, uint64_t{65}, uint64_t{4096},
                     uint64_t{100003}}) {
    std::vector<uint8_t> x(n);
    for (auto& b : x) b = static_cast<uint8_t>(100 + rng() % 9);
    for (int k = 0; k < 5 && n; ++k) x[rng() % n] = static_cast<uint8_t>(rng());
    if (n) x[n - 1] = 255;
    if (n > 64) x[63] = 0;
    uint8_t expect[256] = {};
    for (uint8_t b : x) expect[b] = 1;
    uint8_t seen[256];
    symbol_presence(x.data(), n, seen);
    CHECK(std::memcmp(seen, expect, 256) == 0);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
      std::memset(seen, 7, 256);
      symbol_presence_avx2(x.data(), n, seen);
      CHECK(std::memcmp(seen, expect, 256) == 0);
    }
    if (have_avx512()) {
      std::memset(seen, 7, 256);
      symbol_presence_avx512(x.data(), n, seen);
      CHECK(std::memcmp(seen, expect, 256) == 0);
    }
#elif defined(__aarch64__)
    std::memset(seen, 7, 256);
    symbol_presence_neon(x.data(), n, seen);
    CHECK(std::memcmp(seen, expect, 256) == 0);
#endif
  }
}

static void test_corruption() {
  std::mt19937 rng(11);
  std::vector<uint8_t> data(3000 * 2);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i & 1 ? rng() % 7 : rng());
  const std::vector<uint8_t> chunk = encode(data, DType::BFloat16, {3, 1000});
  // Every truncation is rejected.
  for (size_t cut = 0; cut < chunk.size(); ++cut) {
    std::vector<uint8_t> t(chunk.begin(), chunk.begin() + static_cast<long>(cut));
    CHECK(throws_format_error([&] { decode(t); }));
  }
  // Every single-byte change is rejected or (if it hit nothing that matters) decodes exactly.
  for (size_t pos = 0; pos < chunk.size(); ++pos) {
    std::vector<uint8_t> t = chunk;
    t[pos] ^= static_cast<uint8_t>(1 + rng() % 255);
    try {
      CHECK(decode(t) == data);
    } catch (const FormatError&) {
    } catch (const std::invalid_argument&) {
    }
  }
  // A trailing byte is rejected.
  std::vector<uint8_t> longer = chunk;
  longer.push_back(0);
  CHECK(throws_format_error([&] { decode(longer); }));
}

// A chunk's head (chunk_head_bound's first bytes) parses as the whole chunk does, for every
// dtype, skew and segment count (indexes longer than a first read of 4 KiB included); the
// padding inside the data section, which a head does not hold, is left to the payload's decoder.
static void test_heads() {
  std::mt19937 rng(12);
  const DType dtypes[] = {DType::Int8, DType::BFloat16, DType::Float32, DType::Float16};
  for (int round = 0; round < 24; ++round) {
    const DType dt = dtypes[round % 4];
    DTypeLayout layout;
    dtype_layout(static_cast<uint8_t>(dt), &layout);
    const size_t n = round < 20 ? 1 + rng() % 300000 : 40 * 65536;
    std::vector<uint8_t> data(n * layout.itemsize);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(rng() % (1 + round * 10));
    const std::vector<uint8_t> chunk = encode(data, dt, {n});
    const uint64_t bound = chunk_head_bound(chunk.data(), std::min(chunk.size(), kMaxFixedHead), chunk.size());
    CHECK(bound <= chunk.size());
    const ChunkInfo whole = parse_chunk(chunk.data(), chunk.size());
    CHECK(whole.data_offset <= bound);
    // exactly the head's bytes, so that ASan reports a read past them
    std::vector<uint8_t> head(chunk.begin(), chunk.begin() + static_cast<long>(bound));
    const ChunkInfo h = parse_chunk_head(head.data(), head.size(), chunk.size());
    CHECK(h.data_offset == whole.data_offset && h.nseg == whole.nseg && h.total_bytes == whole.total_bytes);
    for (uint32_t p = 0; p < whole.nplanes; ++p) {
      CHECK(h.planes[p].payload_offset == whole.planes[p].payload_offset);
      CHECK(h.planes[p].payload_bytes == whole.planes[p].payload_bytes);
      CHECK(h.planes[p].pad_before == whole.planes[p].pad_before);
    }
    // a head cut short of its index is rejected, never read past
    if (whole.data_offset > kMaxFixedHead) {
      std::vector<uint8_t> cut(chunk.begin(), chunk.begin() + static_cast<long>(whole.data_offset - 1));
      CHECK(throws_format_error([&] { parse_chunk_head(cut.data(), cut.size(), chunk.size()); }));
    }
    // nonzero padding before a segment: the whole chunk is rejected, its head is not
    const PlaneInfo& pl = whole.planes[0];
    if (pl.mode != PlaneMode::Rans || whole.nseg < 2) continue;
    const uint64_t end0 = load_u64(chunk.data() + pl.index_offset) >> 8;
    if (end0 % 4 == 0) continue;
    std::vector<uint8_t> bad = chunk;
    bad[pl.payload_offset + end0] = 1;
    CHECK(throws_format_error([&] { parse_chunk(bad.data(), bad.size()); }));
    CHECK(parse_chunk_head(bad.data(), bound, bad.size()).data_offset == whole.data_offset);
  }
  // the bound of a header that claims more than its bytes is the chunk's length
  const std::vector<uint8_t> small = encode(std::vector<uint8_t>(100, 3), DType::Int8, {100});
  CHECK(chunk_head_bound(small.data(), small.size(), small.size()) <= small.size());
}

// The pool under load: jobs of every size back to back, from several threads at once (a job
// finding the pool busy runs alone); every task runs exactly once, and a task's exception
// reaches its caller.
static void test_pool() {
  std::vector<std::thread> callers;
  std::atomic<int> bad{0};
  for (int c = 0; c < 3; ++c) {
    callers.emplace_back([&bad, c] {
      for (int round = 0; round < 300; ++round) {
        const size_t n = (round * 7 + c) % 41;
        std::vector<std::atomic<int>> runs(n);
        for (auto& r : runs) r.store(0);
        wcodec::parallel_for(n, round % 3 == 0 ? 2 : 0, [&](size_t task, int) { runs[task].fetch_add(1); });
        for (auto& r : runs) bad += r.load() != 1;
      }
    });
  }
  for (std::thread& t : callers) t.join();
  CHECK(bad.load() == 0);
  bool caught = false;
  try {
    wcodec::parallel_for(64, 0, [](size_t task, int) {
      if (task == 40) throw std::runtime_error("task 40");
    });
  } catch (const std::runtime_error& e) {
    caught = std::string(e.what()) == "task 40";
  }
  CHECK(caught);
}

int main() {
  test_crc();
  test_tables();
  test_tables_near_optimal();
  test_round_trips();
  test_batches();
  test_shards();
  test_scalar_matches_simd();
  test_encoders_agree();
  test_rank_tables();
  test_merged_planes();
  test_presence();
  test_corruption();
  test_heads();
  test_pool();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("native tests passed\n");
  return 0;
}
