// Faulting a batch's output pages in before it is decoded. Internal header.
//
// Large batches fault their output pages in first, one 2 MiB-aligned region per task. With
// transparent huge pages (as load_checkpoint's outputs are advised), the threads decoding the
// first chunks would otherwise all wait on the one thread whose fault zeroes the huge page they
// share, page after page: a serial zeroing of the whole output. Memory already mapped costs a
// store per 4 KiB.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace wcodec {

// Output memory in pieces that do not cross a 2 MiB boundary.
struct Region {
  uint8_t* begin;
  uint8_t* end;
};

// The regions of the outputs (pointer, bytes), adjacent outputs in one region merged; none for
// fewer than 2 threads or under 4 MiB in all.
std::vector<Region> output_regions(const std::vector<std::pair<uint8_t*, uint64_t>>& outputs, int threads);

// Writes a zero into every 4 KiB page of the region: output bytes, all overwritten by decoding.
void fault_in(const Region& r);

}  // namespace wcodec
