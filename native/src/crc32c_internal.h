// Pieces of the CRC32C implementation shared between its portable and AVX-512 files. Internal
// header.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wcodec {

// x^e modulo the CRC32C polynomial, reflected as crc32c states are (bit 31 is x^0).
uint32_t crc32c_xpow(uint64_t e);

// Folds n bytes into the raw (pre-inverted) CRC state c with 512-bit carry-less multiplies and
// returns the new raw state. n is a multiple of kFoldBlock and at least 2 * kFoldBlock; the CPU
// must have AVX-512 F and VPCLMULQDQ.
inline constexpr size_t kFoldBlock = 256;
uint32_t crc32c_fold_avx512(uint32_t c, const uint8_t* p, size_t n);

}  // namespace wcodec
