// One bitstream on every architecture: prints, for each chunk file named on the command line (the
// golden files), its dtype, shape and the CRC32C of its decoded bytes; then, for random data of
// every dtype and several shapes and segment lengths, the CRC32C of the encoded chunk, after
// checking that it decodes back exactly. CI runs it on x86-64 and on aarch64 (under qemu-user)
// and requires the two outputs to be identical: the same encoder bytes and the same decodes.
//
//   wcodec_crosscheck [files...]
#include <cstdio>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "segment_decode.h"
#include "wcodec/codec.h"
#include "wcodec/crc32c.h"

using namespace wcodec;

static std::vector<uint8_t> decode(const std::vector<uint8_t>& chunk, ChunkInfo* info) {
  *info = parse_header(chunk.data(), chunk.size());
  std::vector<uint8_t> out(info->nbytes);
  DecodeJob job{chunk.data(), chunk.size(), out.data(), out.size()};
  decode_chunks(&job, 1, 2);
  return out;
}

int main(int argc, char** argv) {
  // on stderr: the decoders differ between runs whose outputs must not
  std::fprintf(stderr, "wcodec_crosscheck: %s decoder\n", segment_decoder_name());
  int failures = 0;
  for (int a = 1; a < argc; ++a) {
    std::ifstream file(argv[a], std::ios::binary);
    const std::vector<uint8_t> chunk((std::istreambuf_iterator<char>(file)),
                                     std::istreambuf_iterator<char>());
    ChunkInfo info;
    const std::vector<uint8_t> out = decode(chunk, &info);
    std::printf("%s dtype %u shape", argv[a], info.dtype);
    for (uint32_t d = 0; d < info.ndim; ++d) std::printf(" %llu", static_cast<unsigned long long>(info.shape[d]));
    std::printf(" crc32c %08x\n", crc32c(out.data(), out.size()));
  }
  std::mt19937_64 rng(7);
  for (uint8_t dt = 1; dt <= 10; ++dt) {
    DTypeLayout layout;
    dtype_layout(dt, &layout);
    // rounds 6 and 7: chunks large enough that the encoder counts samples, with a few rare
    // values anywhere, which the tables must still hold
    for (int round = 0; round < 8; ++round) {
      const uint64_t shape[2] = {round < 6 ? 1 + rng() % 64 : 300 + rng() % 200, 1 + rng() % 5000 + (round < 6 ? 0 : 1000)};
      std::vector<uint8_t> data(shape[0] * shape[1] * layout.itemsize);
      // weight-like: narrow low planes, a few values in the high ones, smooth rows in some rounds
      const int spread = 2 + static_cast<int>(rng() % 200);
      uint8_t walk = 0;
      for (size_t i = 0; i < data.size(); ++i) {
        walk = static_cast<uint8_t>(walk + rng() % 3 - 1);
        const uint8_t noise = static_cast<uint8_t>(rng() % spread);
        data[i] = round % 3 == 2 ? walk : static_cast<uint8_t>(noise + (i % layout.itemsize) * 40);
        if (round >= 6 && rng() % 100000 == 0) data[i] = static_cast<uint8_t>(rng());
      }
      EncodeOptions opt;
      opt.threads = 1 + round % 2;
      opt.checksum = round % 4 != 3;
      opt.seg_kib = round % 2 ? 16 : kDefaultSegKib;
      const EncodedChunk encoded = encode_chunk(data.data(), dt, shape, 2, opt);
      std::vector<uint8_t> chunk(encoded.size());
      encoded.write(chunk.data());
      ChunkInfo info;
      const bool exact = decode(chunk, &info) == data;
      failures += !exact;
      std::printf("random dtype %u shape %llu %llu: %zu bytes, crc32c %08x%s\n", dt,
                  static_cast<unsigned long long>(shape[0]), static_cast<unsigned long long>(shape[1]),
                  chunk.size(), crc32c(chunk.data(), chunk.size()), exact ? "" : " DECODE DIFFERS");
    }
  }
  return failures ? 1 : 0;
}
