// cpuinfo.cpp - feature detection with __builtin_cpu_supports, which also
// checks that the OS saves the wider register state (XGETBV).
#include "cpu/cpuinfo.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace pyconv {

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "ref";
  }
}

bool isa_from_name(const std::string& name, Isa* out) {
  if (name == "ref") { *out = Isa::ref; return true; }
  if (name == "avx2") { *out = Isa::avx2; return true; }
  if (name == "avx512") { *out = Isa::avx512; return true; }
  return false;
}

bool cpu_supports(Isa isa) {
#if defined(PYCONV_X86)
  static const bool has_avx2 = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  static const bool has_avx512 = [] {
    __builtin_cpu_init();
    return has_avx2 && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  switch (isa) {
    case Isa::avx512: return has_avx512;
    case Isa::avx2: return has_avx2;
    default: return true;
  }
#else
  return isa == Isa::ref;
#endif
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> v;
  for (Isa i : {Isa::ref, Isa::avx2, Isa::avx512})
    if (cpu_supports(i)) v.push_back(i);
  return v;
}

Isa best_isa() {
  if (cpu_supports(Isa::avx512)) return Isa::avx512;
  if (cpu_supports(Isa::avx2)) return Isa::avx2;
  return Isa::ref;
}

static Isa initial_isa() {
  const char* env = std::getenv("PYCONV_ISA");
  Isa isa;
  if (env && *env && isa_from_name(env, &isa) && cpu_supports(isa)) return isa;
  // An unknown or unsupported PYCONV_ISA falls back to the best ISA; the
  // Python layer warns about it at import.
  return best_isa();
}

static std::atomic<int> g_isa{-1};

Isa active_isa() {
  int v = g_isa.load(std::memory_order_relaxed);
  if (v < 0) {
    v = (int)initial_isa();
    g_isa.store(v, std::memory_order_relaxed);
  }
  return (Isa)v;
}

void set_active_isa(Isa isa) {
  if (!cpu_supports(isa))
    throw std::invalid_argument(std::string("this CPU does not support isa='") +
                                isa_name(isa) + "'");
  g_isa.store((int)isa, std::memory_order_relaxed);
}

}  // namespace pyconv
