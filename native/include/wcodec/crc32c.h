// CRC32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF),
// the checksum of decoded chunk bytes. crc32c("123456789") == 0xE3069283.
#pragma once

#include <cstddef>
#include <cstdint>

namespace wcodec {

uint32_t crc32c(const uint8_t* data, size_t n, uint32_t crc = 0);
// crc32c(A || B) from crc32c(A), crc32c(B) and len(B): lets segments be checksummed in parallel.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

}  // namespace wcodec
