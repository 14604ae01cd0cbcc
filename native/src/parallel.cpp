#include "wcodec/parallel.h"

#include <pthread.h>
#if defined(__linux__)
#include <sched.h>
#endif

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
    {
      std::lock_guard<std::mutex> lock(mutex_);
      body_ = &body;
      slots_ = std::min(helpers, size());
      claimed_ = 0;
      running_ = 0;
      ++generation_;
    }
    work_.notify_all();
    body(0);
    std::unique_lock<std::mutex> lock(mutex_);
    // helpers that have not claimed a slot yet never will: close the job
    slots_ = claimed_;
    done_.wait(lock, [this] { return running_ == 0; });
    *ran = 1 + claimed_;
    body_ = nullptr;
    return true;
  }

 private:
  void loop() {
    uint64_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      work_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (body_ == nullptr || claimed_ >= slots_) continue;
      const int worker = 1 + claimed_++;
      ++running_;
      const std::function<void(int)>* body = body_;
      lock.unlock();
      (*body)(worker);
      lock.lock();
      if (--running_ == 0) done_.notify_all();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex run_mutex_;
  std::mutex mutex_;
  std::condition_variable work_;
  std::condition_variable done_;
  const std::function<void(int)>* body_ = nullptr;
  uint64_t generation_ = 0;
  int slots_ = 0;
  int claimed_ = 0;
  int running_ = 0;
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
