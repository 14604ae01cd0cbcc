#include "prefault.h"

namespace wcodec {

std::vector<Region> output_regions(const std::vector<std::pair<uint8_t*, uint64_t>>& outputs, int threads) {
  constexpr uintptr_t kRegion = uintptr_t{2} << 20;
  std::vector<Region> regions;
  uint64_t total = 0;
  for (const auto& o : outputs) total += o.second;
  if (threads < 2 || total < 2 * kRegion) return regions;
  for (const auto& [dst, nbytes] : outputs) {
    uint8_t* p = dst;
    uint8_t* const end = dst + nbytes;
    while (p < end) {
      const uintptr_t boundary = (reinterpret_cast<uintptr_t>(p) | (kRegion - 1)) + 1;
      uint8_t* const stop = reinterpret_cast<uintptr_t>(end) < boundary ? end : p + (boundary - reinterpret_cast<uintptr_t>(p));
      if (!regions.empty() && regions.back().end == p &&
          (reinterpret_cast<uintptr_t>(regions.back().begin) & ~(kRegion - 1)) == (reinterpret_cast<uintptr_t>(p) & ~(kRegion - 1))) {
        regions.back().end = stop;  // the same region, continued by the next output
      } else {
        regions.push_back({p, stop});
      }
      p = stop;
    }
  }
  return regions;
}

void fault_in(const Region& r) {
  constexpr uintptr_t kPage = 4096;
  for (uint8_t* p = r.begin; p < r.end; p += kPage - (reinterpret_cast<uintptr_t>(p) & (kPage - 1))) {
    *static_cast<volatile uint8_t*>(p) = 0;
  }
}

}  // namespace wcodec
