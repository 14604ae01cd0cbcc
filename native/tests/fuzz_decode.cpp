// Fuzz target for the decoder. Built two ways:
// - with clang -fsanitize=fuzzer,address -DWCODEC_LIBFUZZER as a libFuzzer target;
// - by default as a self-contained mutation fuzzer (gcc, run under ASan/UBSan in CI):
//   wcodec_fuzz_decode [iterations] [seed] mutates valid chunks of random dtypes and shapes
//   (bit flips, byte overwrites, truncation, insertion, splices of index and table bytes) and
//   requires every input to decode exactly or fail with FormatError / invalid_argument.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "wcodec/codec.h"

using namespace wcodec;

// Decodes one input: it decodes or fails with FormatError / invalid_argument (a clean
// rejection); anything else (a crash, a sanitizer report, another exception) is a finding.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // The input's head alone, as a plan for device-resident chunks reads it: never read past its
  // bound, and accepted wherever the whole input is.
  try {
    const uint64_t bound = chunk_head_bound(data, size, size);
    const std::vector<uint8_t> head(data, data + bound);
    bool whole_ok = true;
    ChunkInfo whole;
    try {
      whole = parse_chunk(data, size);
    } catch (const FormatError&) {
      whole_ok = false;
    }
    try {
      const ChunkInfo h = parse_chunk_head(head.data(), head.size(), size);
      if (whole_ok && h.data_offset != whole.data_offset) __builtin_trap();
    } catch (const FormatError&) {
      if (whole_ok) __builtin_trap();
    }
  } catch (const FormatError&) {
  }
  try {
    const ChunkInfo info = parse_header(data, size);
    // outputs up to 1 MiB: the allocation a header may declare is not under test here, and
    // filling large constant outputs would spend the run's inputs on memset
    if (info.nbytes > (uint64_t{1} << 20)) return 0;
    std::vector<uint8_t> out(info.nbytes);
    DecodeJob job{data, size, out.data(), out.size()};
    decode_chunks(&job, 1, 1);
  } catch (const std::invalid_argument&) {
  }
  return 0;
}

#ifndef WCODEC_LIBFUZZER
int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 20000;
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1);
  const uint8_t dtypes[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};
  long decoded_ok = 0;
  for (long it = 0; it < iterations; ++it) {
    const uint8_t dt = dtypes[rng() % 10];
    DTypeLayout layout;
    dtype_layout(dt, &layout);
    std::vector<uint64_t> shape = {1 + rng() % 40, 1 + rng() % 3000};
    if (rng() % 8 == 0) shape = {rng() % 3};
    const uint64_t nelem = shape.size() == 2 ? shape[0] * shape[1] : shape[0];
    std::vector<uint8_t> data(nelem * layout.itemsize);
    const int spread = 1 + static_cast<int>(rng() % 64);
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(rng() % spread + (i % layout.itemsize) * 3);
    EncodeOptions opt;
    opt.threads = 1;
    opt.checksum = rng() % 4 != 0;  // without a checksum, corruption must still never crash
    opt.seg_kib = 16 + static_cast<uint32_t>(rng() % 49);
    EncodedChunk chunk = encode_chunk(data.data(), dt, shape.data(), static_cast<uint32_t>(shape.size()), opt);
    std::vector<uint8_t> buf(chunk.size());
    chunk.write(buf.data());
    const int mutations = 1 + static_cast<int>(rng() % 4);
    for (int m = 0; m < mutations && !buf.empty(); ++m) {
      const size_t pos = rng() % buf.size();
      switch (rng() % 6) {
        case 0: buf[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
        case 1: buf[pos] = static_cast<uint8_t>(rng()); break;
        case 2: buf.resize(pos); break;
        case 3: buf.insert(buf.begin() + static_cast<long>(pos), static_cast<uint8_t>(rng())); break;
        case 4: buf[pos] = 0xff; break;
        default:  // overwrite an 8-byte word (index entries, shape, states)
          for (size_t k = 0; k < 8 && pos + k < buf.size(); ++k) buf[pos + k] = static_cast<uint8_t>(rng());
      }
    }
    try {
      const ChunkInfo info = parse_header(buf.data(), buf.size());
      if (info.nbytes <= (uint64_t{64} << 20)) {
        std::vector<uint8_t> out(info.nbytes);
        DecodeJob job{buf.data(), buf.size(), out.data(), out.size()};
        decode_chunks(&job, 1, 2);
        ++decoded_ok;
      }
    } catch (const std::invalid_argument&) {
    }
  }
  std::printf("fuzz: %ld inputs, %ld decoded without error\n", iterations, decoded_ok);
  return 0;
}
#endif
