#include "wcodec/parallel.h"

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

#include <chrono>
#include <condition_variable>
#include <vector>

namespace wcodec {

int resolve_threads(int threads) {
  if (threads > 0) return threads;
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : static_cast<int>(hc);
}

namespace {

// A job is opened by publishing a new generation in ticket_; helpers claim slots by
// incrementing its count, and the caller closes it (no more claims) once its own share is done,
// then waits for the helpers that claimed. Waiting threads spin briefly before they block: the
// phases of one decode or encode follow each other within microseconds, and a thread woken from
// a futex takes tens of microseconds (more on virtual machines) to run again.
class Pool {
 public:
  explicit Pool(int size) {
    for (int i = 0; i < size; ++i) threads_.emplace_back([this] { loop(); });
  }
  // never destroyed: workers may outlive static destruction order at exit
  int size() const { return static_cast<int>(threads_.size()); }

  // Returns false if another job holds the pool.
  bool run(int helpers, const std::function<void(int)>& body, int* ran) {
    std::unique_lock<std::mutex> busy(run_mutex_, std::try_to_lock);
    if (!busy.owns_lock()) return false;
    const uint64_t generation = (ticket_.load(std::memory_order_relaxed) >> kGenShift) + 1;
    body_ = &body;
    slots_.store(std::min(helpers, size()), std::memory_order_relaxed);
    finished_.store(0, std::memory_order_relaxed);
    ticket_.store(generation << kGenShift, std::memory_order_release);
    // a worker between its check of the ticket and its wait holds the mutex: it sees the new
    // ticket or gets the notification
    { std::lock_guard<std::mutex> lock(mutex_); }
    work_.notify_all();
    body(0);
    const int claimed = static_cast<int>(ticket_.fetch_or(kClosed, std::memory_order_acq_rel) & kCountMask);
    auto pending = [&] { return finished_.load(std::memory_order_acquire) != claimed; };
    spin_while(pending);
    if (pending()) {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [&] { return !pending(); });
    }
    *ran = 1 + claimed;
    return true;
  }

 private:
  static constexpr int kGenShift = 32;
  static constexpr uint64_t kClosed = uint64_t{1} << 31;
  static constexpr uint64_t kCountMask = 0xffff;

  template <class Busy>
  static void spin_while(Busy busy) {
    constexpr auto kSpin = std::chrono::microseconds(50);
    const auto until = std::chrono::steady_clock::now() + kSpin;
    while (busy()) {
      for (int i = 0; i < 16 && busy(); ++i) pause();
      if (std::chrono::steady_clock::now() > until) return;
    }
  }

  static void pause() {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#endif
  }

  uint64_t generation() const { return ticket_.load(std::memory_order_acquire) >> kGenShift; }

  void loop() {
    uint64_t seen = 0;  // the last generation this worker has looked at
    for (;;) {
      spin_while([&] { return generation() == seen; });
      if (generation() == seen) {
        std::unique_lock<std::mutex> lock(mutex_);
        work_.wait(lock, [&] { return generation() != seen; });
      }
      uint64_t t = ticket_.load(std::memory_order_acquire);
      seen = t >> kGenShift;
      // A slot of job `seen`, unless it is closed or full. The job cannot end, nor body_ change,
      // before a claimed slot's work has finished.
      int worker = 0;
      while (!(t & kClosed) && (t >> kGenShift) == seen &&
             static_cast<int>(t & kCountMask) < slots_.load(std::memory_order_relaxed)) {
        if (ticket_.compare_exchange_weak(t, t + 1, std::memory_order_acq_rel, std::memory_order_acquire)) {
          worker = static_cast<int>(t & kCountMask) + 1;
          break;
        }
      }
      if (worker == 0) continue;
      (*body_)(worker);
      finished_.fetch_add(1, std::memory_order_release);
      { std::lock_guard<std::mutex> lock(mutex_); }
      done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  const std::function<void(int)>* body_ = nullptr;
  std::atomic<int> slots_{0};
  std::atomic<int> finished_{0};
  std::atomic<uint64_t> ticket_{0};  // generation << 32 | closed << 31 | slots claimed
};

std::atomic<Pool*> g_pool{nullptr};
std::mutex g_pool_mutex;

void reset_after_fork() {
  // the child has none of the parent's worker threads: start a new pool on demand (the old
  // one, whose locks may be held, is left alone)
  g_pool.store(nullptr);
  new (&g_pool_mutex) std::mutex();
}

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (p != nullptr) return *p;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  p = g_pool.load(std::memory_order_relaxed);
  if (p == nullptr) {
    static const int registered = pthread_atfork(nullptr, nullptr, reset_after_fork);
    (void)registered;
    p = new Pool(std::max(resolve_threads(0) - 1, 1));
    g_pool.store(p, std::memory_order_release);
  }
  return *p;
}

}  // namespace

int run_on_pool(int helpers, const std::function<void(int)>& body) {
  int ran = 1;
  if (!pool().run(helpers, body, &ran)) body(0);  // pool busy: run alone
  return ran;
}

}  // namespace wcodec
