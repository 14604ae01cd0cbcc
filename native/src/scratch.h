// Scratch memory that each thread keeps between calls. Internal header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

namespace wcodec {

// At least n bytes, uninitialised, owned by the calling thread and reused by its next call with
// the same Slot (distinct slots for buffers in use at the same time). Fresh buffers of a few
// hundred kilobytes per call cost a memset and, past malloc's mmap threshold, page faults and an
// munmap whose TLB shootdown interrupts every thread of the process.
template <int Slot>
uint8_t* kept_scratch(size_t n) {
  thread_local std::unique_ptr<uint8_t[]> buffer;
  thread_local size_t size = 0;
  if (n > size) {
    buffer.reset(new uint8_t[n]);
    size = n;
  }
  return buffer.get();
}

}  // namespace wcodec
