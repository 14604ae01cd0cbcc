// A minimal fork-join loop: tasks 0..n-1 are handed out through an atomic counter to `threads`
// workers (the calling thread is one of them, so threads == 1 never starts a thread). The first
// exception thrown by a task stops the hand-out and is rethrown in the caller.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace wcodec {

inline int resolve_threads(int threads) {
  if (threads > 0) return threads;
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

// fn(task, worker) with worker in [0, workers); returns the number of workers used.
template <class F>
int parallel_for(size_t n, int threads, F&& fn) {
  const int workers = static_cast<int>(std::min<size_t>(resolve_threads(threads), std::max<size_t>(n, 1)));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](int worker) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t task = next.fetch_add(1, std::memory_order_relaxed);
      if (task >= n) return;
      try {
        fn(task, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        failed.store(true, std::memory_order_relaxed);
      }
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(workers - 1);
  for (int w = 1; w < workers; ++w) pool.emplace_back(run, w);
  run(0);
  for (auto& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  return workers;
}

}  // namespace wcodec
