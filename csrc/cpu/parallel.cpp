// parallel.cpp - thread-count state. The default honours OMP_NUM_THREADS
// through omp_get_max_threads().
#include "cpu/parallel.h"

#include <pthread.h>

#include <atomic>
#include <stdexcept>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyconv {

static std::atomic<int> g_threads{0};

// libgomp's thread pool does not survive fork(): a child that enters a
// parallel region after its parent used one waits forever for threads that
// were not copied. A child of fork() therefore runs every kernel serially
// (regions with if(false) never touch the pool); set_num_threads cannot raise
// it again there. Processes started with 'spawn' or 'forkserver' are normal.
static std::atomic<bool> g_forked{false};

static void on_fork_child() {
  g_forked.store(true, std::memory_order_relaxed);
  g_threads.store(1, std::memory_order_relaxed);
}

static const int g_atfork_registered = pthread_atfork(nullptr, nullptr, on_fork_child);

bool in_forked_child() { return g_forked.load(std::memory_order_relaxed); }

int get_num_threads() {
  int n = g_threads.load(std::memory_order_relaxed);
  if (n <= 0) {
#ifdef _OPENMP
    n = omp_get_max_threads();
#else
    n = 1;
#endif
    if (n < 1) n = 1;
    g_threads.store(n, std::memory_order_relaxed);
  }
  return n;
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("num_threads must be >= 1");
  (void)g_atfork_registered;
  g_threads.store(in_forked_child() ? 1 : n, std::memory_order_relaxed);
}

bool openmp_enabled() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

int threads_for(double work, double serial_below) {
  int nt = get_num_threads();
  if (nt <= 1 || work < serial_below) return 1;
  double per = work / serial_below;
  if (per < nt) nt = (int)per < 1 ? 1 : (int)per;
  return nt;
}

}  // namespace pyconv
