// cpuinfo.h - CPU feature detection (done once) and the ISA choice.
// The ISA is picked from CPU *features*, never from model tables, and can be
// forced with PYCONV_ISA=ref|avx2|avx512 or at run time with set_isa().
#pragma once
#include <string>
#include <vector>

namespace pyconv {

enum class Isa { ref = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
bool isa_from_name(const std::string& name, Isa* out);
bool cpu_supports(Isa isa);
std::vector<Isa> supported_isas();
Isa best_isa();

// The active ISA for all kernels. Initialised from PYCONV_ISA or best_isa().
Isa active_isa();
// Throws std::invalid_argument if the CPU lacks `isa`.
void set_active_isa(Isa isa);

}  // namespace pyconv
