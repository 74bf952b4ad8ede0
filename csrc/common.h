// common.h - shared types for the pyconv C++ core: checks, the conv2d
// parameter block, and cached aligned scratch buffers.
//
// Contract: every size is int64_t, so no product of dimensions overflows
// 32 bits. Callers (bindings.cpp) validate shapes before calling an op; the
// checks here are a second line of defence and throw std::invalid_argument.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>

namespace pyconv {

using i64 = std::int64_t;

#define PYCONV_CHECK(cond, msg)                                   \
  do {                                                            \
    if (!(cond)) throw std::invalid_argument(std::string(msg));   \
  } while (0)

// Convolution geometry. Padding is given as (top, left); bottom/right padding
// is implied by OH/OW, which lets 'same' padding be asymmetric as in PyTorch.
struct Conv2dParams {
  i64 N, C, H, W;      // input
  i64 OC, KH, KW;      // weight is (OC, C/G, KH, KW)
  i64 SH, SW;          // stride
  i64 PT, PL;          // padding top, left
  i64 DH, DW;          // dilation
  i64 G;               // groups
  i64 OH, OW;          // output

  i64 Cg() const { return C / G; }
  i64 OCg() const { return OC / G; }
  i64 K() const { return Cg() * KH * KW; }     // GEMM reduction length per group
  i64 OHW() const { return OH * OW; }
  // A 1x1, stride-1, unpadded convolution is a plain GEMM on the NCHW rows.
  bool is_pointwise() const {
    return KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 &&
           OH == H && OW == W;
  }
  void validate() const {
    PYCONV_CHECK(N >= 0 && C > 0 && H > 0 && W > 0 && OC > 0 && KH > 0 && KW > 0,
                 "conv2d: non-positive dimension");
    PYCONV_CHECK(SH > 0 && SW > 0 && DH > 0 && DW > 0 && PT >= 0 && PL >= 0,
                 "conv2d: bad stride/dilation/padding");
    PYCONV_CHECK(G > 0 && C % G == 0 && OC % G == 0, "conv2d: bad groups");
    PYCONV_CHECK(OH > 0 && OW > 0, "conv2d: empty output");
  }
};

// Pooling geometry (windows start at o*S - P; bottom/right extents follow OH/OW).
struct Pool2dParams {
  i64 N, C, H, W;
  i64 KH, KW, SH, SW, PH, PW, DH, DW;
  i64 OH, OW;
  i64 planes() const { return N * C; }
};

// A growable 64-byte-aligned buffer. It is kept between calls (one per
// calling thread, see Scratch) so hot loops do not pay for page faults.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  AlignedBuffer(AlignedBuffer&& o) noexcept : ptr_(o.ptr_), cap_(o.cap_) { o.ptr_ = nullptr; o.cap_ = 0; }
  AlignedBuffer& operator=(AlignedBuffer&& o) noexcept {
    if (this != &o) { std::free(ptr_); ptr_ = o.ptr_; cap_ = o.cap_; o.ptr_ = nullptr; o.cap_ = 0; }
    return *this;
  }
  ~AlignedBuffer() { std::free(ptr_); }
  // Returns at least `bytes` of storage; contents are unspecified.
  void* reserve(std::size_t bytes) {
    if (bytes > cap_) {
      std::size_t want = (bytes + 63) & ~std::size_t(63);
      void* p = std::aligned_alloc(64, want);
      if (!p) throw std::bad_alloc();
      std::free(ptr_);
      ptr_ = p;
      cap_ = want;
    }
    return ptr_;
  }
  void release() { std::free(ptr_); ptr_ = nullptr; cap_ = 0; }
  std::size_t capacity() const { return cap_; }

 private:
  void* ptr_ = nullptr;
  std::size_t cap_ = 0;
};

// Multiplies non-negative sizes, throwing instead of overflowing.
inline std::size_t checked_bytes(i64 a, i64 b, std::size_t elem) {
  if (a < 0 || b < 0) throw std::invalid_argument("negative size");
  unsigned __int128 r = (unsigned __int128)a * (unsigned __int128)b * elem;
  if (r > (unsigned __int128)(SIZE_MAX / 2)) throw std::bad_alloc();
  return (std::size_t)r;
}

}  // namespace pyconv
