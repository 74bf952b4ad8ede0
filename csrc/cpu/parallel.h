// parallel.h - the library-wide thread count and the serial-work threshold.
// Threading lives in C++: ops ask threads_for(work) how many threads to use,
// so small work runs serially instead of paying for a thread team.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace pyconv {

int get_num_threads();
void set_num_threads(int n);  // n >= 1
bool openmp_enabled();
// True in a child of fork(): kernels then run on one thread (see parallel.cpp).
bool in_forked_child();

// Threads worth using for `flops` of arithmetic (or bytes of memory traffic).
// Below ~20 us of single-thread work a team costs more than it gains.
int threads_for(double work, double serial_below = 2.0e5);

// Calls f(i0, i1) on equal contiguous chunks of [0, n), one per thread, the
// team sized by threads_for(n * cost, serial_below). Element-wise work
// split this way does the same arithmetic per element for any team size.
template <typename F>
void parallel_chunks(std::int64_t n, double cost, F f, double serial_below = 2.0e5) {
  const int nt = threads_for(double(n) * cost, serial_below);
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
#ifdef _OPENMP
    const int t = omp_get_thread_num(), tn = omp_get_num_threads();
#else
    const int t = 0, tn = 1;
#endif
    f(n * t / tn, n * (t + 1) / tn);
  }
}

// An exception must not leave an OpenMP region (that terminates the
// process). Bodies run through capture.run(...) inside the region; the
// first exception is rethrown by capture.rethrow() after it, on the calling
// thread, where pybind11 turns it into a Python exception.
class ExceptionCapture {
 public:
  template <typename F>
  void run(F&& f) noexcept {
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!err_) err_ = std::current_exception();
    }
  }
  void rethrow() {
    if (err_) std::rethrow_exception(err_);
  }

 private:
  std::mutex mu_;
  std::exception_ptr err_;
};

}  // namespace pyconv
