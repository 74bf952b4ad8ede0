// parallel.h - the library-wide thread count and the serial-work threshold.
// Threading lives in C++: ops ask threads_for(work) how many threads to use,
// so small work runs serially instead of paying for a thread team.
#pragma once
#include <cstdint>

namespace pyconv {

int get_num_threads();
void set_num_threads(int n);  // n >= 1
bool openmp_enabled();

// Threads worth using for `flops` of arithmetic (or bytes of memory traffic).
// Below ~20 us of single-thread work a team costs more than it gains.
int threads_for(double work, double serial_below = 2.0e5);

}  // namespace pyconv
