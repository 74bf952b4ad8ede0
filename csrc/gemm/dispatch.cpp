// dispatch.cpp - the one kernel table feeding the GEMM driver, the tests and
// the benches. Falls back to a lesser ISA if asked for one the CPU lacks.
#include "gemm/gemm.h"

namespace pyconv {

template <>
const GemmKernel<float>& gemm_kernel<float>(Isa isa) {
#if defined(PYCONV_X86)
  if (isa == Isa::avx512 && cpu_supports(Isa::avx512)) return sgemm_avx512;
  if (isa != Isa::ref && cpu_supports(Isa::avx2)) return sgemm_avx2;
#endif
  return sgemm_ref;
}

template <>
const GemmKernel<double>& gemm_kernel<double>(Isa isa) {
#if defined(PYCONV_X86)
  if (isa == Isa::avx512 && cpu_supports(Isa::avx512)) return dgemm_avx512;
  if (isa != Isa::ref && cpu_supports(Isa::avx2)) return dgemm_avx2;
#endif
  return dgemm_ref;
}

}  // namespace pyconv
