// Mutation fuzzer for object staging (wcodec/staging.h), run under ASan/UBSan in CI:
// wcodec_fuzz_stage [iterations] [seed] builds shard objects of chunks (random bytes, or
// encoded random int8 data) with valid indexes, then corrupts them (index entries rewritten
// with their CRC32C fixed up so that they get past the checksum, bit flips, truncation) and
// stages them from memory and from files, then decodes them where they lie (locate_chunks and
// decode_stored, the CPU whole-load path). Every input must stage or fail with StageError /
// invalid_argument, and never touch memory outside the object's slot or a chunk's output
// (guard bytes around each, checked after); an intact object decodes to its data.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "wcodec/codec.h"
#include "wcodec/crc32c.h"
#include "wcodec/staging.h"

using namespace wcodec;

namespace {

void store_u64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

void seal(std::vector<uint8_t>& shard, uint32_t per_shard) {
  const size_t table = shard.size() - (per_shard * 16 + 4);
  const uint32_t crc = crc32c(shard.data() + table, per_shard * 16);
  for (int i = 0; i < 4; ++i) shard[shard.size() - 4 + i] = static_cast<uint8_t>(crc >> (8 * i));
}

}  // namespace

int main(int argc, char** argv) {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 2000;
  std::mt19937_64 rng(argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1);
  const std::string path = "wcodec_fuzz_stage." + std::to_string(::getpid());
  long staged = 0, decoded = 0;
  constexpr uint8_t kGuard = 0xA5;
  constexpr size_t kPad = 64;  // guard bytes on each side of a chunk's output
  for (long it = 0; it < iterations; ++it) {
    const uint32_t per_shard = 1 + static_cast<uint32_t>(rng() % 8);
    std::vector<uint8_t> shard;
    std::vector<uint64_t> lens(per_shard);
    std::vector<std::vector<uint8_t>> values(per_shard);  // an encoded chunk's data
    std::vector<bool> encoded(per_shard);
    for (uint32_t i = 0; i < per_shard; ++i) {
      encoded[i] = rng() % 2 == 0;
      if (encoded[i]) {
        values[i].resize(rng() % 3000);
        for (uint8_t& v : values[i]) v = static_cast<uint8_t>(rng() % 7 + rng() % 5);
        const uint64_t shape[1] = {values[i].size()};
        const EncodedChunk chunk = encode_chunk(values[i].data(), static_cast<uint8_t>(DType::Int8), shape, 1, {});
        lens[i] = chunk.size();
        shard.resize(shard.size() + lens[i]);
        chunk.write(shard.data() + shard.size() - lens[i]);
      } else {
        lens[i] = rng() % 3000;
        for (uint64_t k = 0; k < lens[i]; ++k) shard.push_back(static_cast<uint8_t>(rng()));
      }
    }
    uint64_t offset = 0;
    for (uint32_t i = 0; i < per_shard; ++i) {
      shard.resize(shard.size() + 16);
      store_u64(shard.data() + shard.size() - 16, offset);
      store_u64(shard.data() + shard.size() - 8, lens[i]);
      offset += lens[i];
    }
    shard.resize(shard.size() + 4);
    seal(shard, per_shard);
    const size_t table = shard.size() - (per_shard * 16 + 4);
    const int mutation = static_cast<int>(rng() % 5);
    switch (mutation) {
      case 0:  // an entry rewritten (offset or length), the checksum fixed up
        store_u64(shard.data() + table + 16 * (rng() % per_shard) + 8 * (rng() % 2),
                  rng() % 4 == 0 ? ~uint64_t{0} - rng() % 3 : rng() % (2 * shard.size()));
        seal(shard, per_shard);
        break;
      case 1:  // a bit flip anywhere
        shard[rng() % shard.size()] ^= static_cast<uint8_t>(1u << (rng() % 8));
        break;
      case 2:  // truncated
        shard.resize(rng() % shard.size());
        break;
      default:
        break;
    }
    StageObject o;
    o.size = shard.size();
    o.per_shard = per_shard;
    o.nchunks = 1 + static_cast<uint32_t>(rng() % per_shard);
    const uint32_t align = 1u << (rng() % 9);
    o.slot = 256;  // guard bytes before and after the slot
    o.slot_len = (o.size + uint64_t{o.nchunks} * align + align - 1) / align * align;
    const bool from_file = rng() % 4 == 0;
    if (from_file) {
      FILE* f = std::fopen(path.c_str(), "wb");
      if (!shard.empty()) std::fwrite(shard.data(), 1, shard.size(), f);
      std::fclose(f);
      o.path = path.c_str();
    } else {
      o.data = shard.data();
    }
    std::vector<uint8_t> buffer(o.slot + o.slot_len + 256 + 256, kGuard);
    // the staging buffer must be aligned: start at the first aligned byte
    uint8_t* base = buffer.data();
    while (reinterpret_cast<uintptr_t>(base) % align) ++base;
    std::vector<uint64_t> offsets(o.nchunks), lengths(o.nchunks);
    try {
      stage_objects(&o, 1, base, o.slot + o.slot_len, align, offsets.data(), lengths.data(), 2);
      ++staged;
      for (uint32_t i = 0; i < o.nchunks; ++i) {
        if (offsets[i] % align || offsets[i] < o.slot || offsets[i] + lengths[i] > o.slot + o.slot_len) {
          std::fprintf(stderr, "iteration %ld: chunk %u placed outside its slot\n", it, i);
          return 1;
        }
      }
    } catch (const std::invalid_argument&) {
      // StageError derives from FormatError, an invalid_argument: a clean rejection
    }
    for (size_t k = 0; k < o.slot; ++k) {
      if (base[k] != kGuard) {
        std::fprintf(stderr, "iteration %ld: wrote before the slot\n", it);
        return 1;
      }
    }
    for (uint8_t* p = base + o.slot + o.slot_len; p < buffer.data() + buffer.size(); ++p) {
      if (*p != kGuard) {
        std::fprintf(stderr, "iteration %ld: wrote after the slot\n", it);
        return 1;
      }
    }
    // decoded where it lies: each output sized as its chunk's data (or, now and then, not)
    std::vector<uint64_t> src(o.nchunks), len(o.nchunks);
    std::vector<std::vector<uint8_t>> outs(o.nchunks);
    std::vector<StoredChunk> chunks(o.nchunks);
    bool exact = mutation > 2;  // intact: every chunk that decodes must give its data
    for (uint32_t i = 0; i < o.nchunks; ++i) {
      uint64_t want = encoded[i] ? values[i].size() : rng() % 3000;
      if (rng() % 8 == 0) {
        want = rng() % 3000;
        exact = false;
      }
      outs[i].assign(want + 2 * kPad, kGuard);
    }
    bool ok = false;
    try {
      locate_chunks(&o, 1, src.data(), len.data(), 2);
      for (uint32_t i = 0; i < o.nchunks; ++i) {
        chunks[i] = {0, src[i], len[i], outs[i].data() + kPad, outs[i].size() - 2 * kPad};
      }
      decode_stored(&o, 1, chunks.data(), o.nchunks, 2);
      ok = true;
      ++decoded;
    } catch (const std::invalid_argument&) {
      // a clean rejection (StageError and ChunkError are invalid_arguments)
    }
    for (uint32_t i = 0; i < o.nchunks; ++i) {
      const std::vector<uint8_t>& out = outs[i];
      for (size_t k = 0; k < kPad; ++k) {
        if (out[k] != kGuard || out[out.size() - 1 - k] != kGuard) {
          std::fprintf(stderr, "iteration %ld: chunk %u wrote outside its output\n", it, i);
          return 1;
        }
      }
      if (ok && exact && encoded[i] &&
          !std::equal(values[i].begin(), values[i].end(), out.begin() + kPad)) {
        std::fprintf(stderr, "iteration %ld: chunk %u decoded to other data\n", it, i);
        return 1;
      }
    }
  }
  std::remove(path.c_str());
  std::printf("fuzz_stage: %ld inputs, %ld staged, %ld decoded where they lie\n", iterations, staged, decoded);
  return 0;
}
