// Fork-join loops over a persistent pool of worker threads (starting threads per call costs
// more than decoding a small chunk). parallel_for(n, threads, fn): tasks 0..n-1 go through an
// atomic counter to up to `threads` workers, the calling thread being one of them, so
// threads == 1 never touches the pool. One job runs on the pool at a time; a caller that finds
// it busy runs its tasks alone. The first exception thrown by a task stops the hand-out and is
// rethrown in the caller. A forked child gets a fresh pool.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace wcodec {

// threads > 0 as given; 0: the CPUs this process may run on (its affinity mask where the OS
// has one, as under taskset or a container's cpuset), else the hardware's thread count.
int resolve_threads(int threads);

// Runs body(worker) on the calling thread (worker 0) and on up to helpers pool threads
// (workers 1..), returning when all have returned. Returns the number of workers that ran.
int run_on_pool(int helpers, const std::function<void(int)>& body);

template <class F>
int parallel_for(size_t n, int threads, F&& fn) {
  const int workers = static_cast<int>(std::min<size_t>(resolve_threads(threads), std::max<size_t>(n, 1)));
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto body = [&](int worker) {
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
  const int ran = workers > 1 ? run_on_pool(workers - 1, body) : (body(0), 1);
  if (error) std::rethrow_exception(error);
  return ran;
}

}  // namespace wcodec
