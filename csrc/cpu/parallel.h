// parallel.h - the library-wide thread count and the serial-work threshold.
// Threading lives in C++: ops ask threads_for(work) how many threads to use,
// so small work runs serially instead of paying for a thread team.
#pragma once
#include <cstdint>
#include <exception>
#include <mutex>

namespace pyconv {

int get_num_threads();
void set_num_threads(int n);  // n >= 1
bool openmp_enabled();
// True in a child of fork(): kernels then run on one thread (see parallel.cpp).
bool in_forked_child();

// Threads worth using for `flops` of arithmetic (or bytes of memory traffic).
// Below ~20 us of single-thread work a team costs more than it gains.
int threads_for(double work, double serial_below = 2.0e5);

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
