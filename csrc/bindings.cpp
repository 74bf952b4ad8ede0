// bindings.cpp - the only file that includes pybind11. It checks dtypes,
// shapes, contiguity and writability (never converting or copying: the
// Python layer owns conversion), then releases the GIL around all compute.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "common.h"
#include "cpu/cpuinfo.h"
#include "cpu/parallel.h"
#include "gemm/gemm.h"
#include "ops/activation.h"
#include "ops/conv2d.h"
#include "ops/batchnorm.h"
#include "ops/linear.h"
#include "ops/optim.h"
#include "ops/loss.h"
#include "ops/pad.h"
#include "ops/membench.h"
#include "ops/pool2d.h"
#include "ops/winograd.h"

namespace py = pybind11;
using namespace pyconv;

namespace {

#ifndef PYCONV_COMPILER
#define PYCONV_COMPILER "unknown"
#endif

enum class DType { f32, f64 };

DType dtype_of(const py::array& a, const char* name) {
  if (a.dtype().is(py::dtype::of<float>())) return DType::f32;
  if (a.dtype().is(py::dtype::of<double>())) return DType::f64;
  throw py::type_error(std::string(name) + ": expected a float32 or float64 array, got dtype " +
                       std::string(py::str(a.dtype())));
}

void require_c_contig(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + ": array must be C-contiguous");
}

void require_writable(const py::array& a, const char* name) {
  if (!a.writeable()) throw py::value_error(std::string(name) + ": output array is read-only");
}

void require_ndim(const py::array& a, py::ssize_t nd, const char* name) {
  if (a.ndim() != nd)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(nd) +
                          "-d array, got " + std::to_string(a.ndim()) + "-d");
}

void require_same_dtype(DType d, const py::array& a, const char* name) {
  if (dtype_of(a, name) != d)
    throw py::type_error(std::string(name) + ": dtype differs from the other arrays");
}

Isa parse_isa(const std::string& name) {
  Isa isa;
  if (!isa_from_name(name, &isa))
    throw py::value_error("isa must be 'ref', 'avx2' or 'avx512', got '" + name + "'");
  if (!cpu_supports(isa))
    throw py::value_error("isa='" + name + "' is not supported by this CPU");
  return isa;
}

template <typename T>
T* mut_ptr(py::array& a) { return static_cast<T*>(a.mutable_data()); }
template <typename T>
const T* ptr(const py::array& a) { return static_cast<const T*>(a.data()); }

// ---------------------------------------------------------------- gemm
template <typename T>
void gemm_impl(const py::array& a, const py::array& b, py::array& c, double beta, Isa isa,
               int nthreads) {
  const i64 m = a.shape(0), k = a.shape(1), n = b.shape(1);
  const i64 isz = sizeof(T);
  for (auto* arr : {&a, &b})
    for (int d = 0; d < 2; ++d)
      if (arr->strides(d) % isz) throw py::value_error("gemm: strides must be multiples of the item size");
  if (c.strides(1) != isz || c.strides(0) % isz || c.strides(0) / isz < n)
    throw py::value_error("gemm: c must have unit column stride and row stride >= n");
  const GemmKernel<T>& K = gemm_kernel<T>(isa);
  const T* A = ptr<T>(a);
  const T* B = ptr<T>(b);
  T* C = mut_ptr<T>(c);
  const i64 rsa = a.strides(0) / isz, csa = a.strides(1) / isz;
  const i64 rsb = b.strides(0) / isz, csb = b.strides(1) / isz;
  const i64 ldc = c.strides(0) / isz;
  py::gil_scoped_release nogil;
  gemm<T>(K, m, n, k, A, rsa, csa, B, rsb, csb, T(beta), C, ldc, nthreads);
}

void py_gemm(const py::array& a, const py::array& b, py::array& c, double beta,
             const std::string& isa, int nthreads) {
  const DType d = dtype_of(a, "a");
  require_same_dtype(d, b, "b");
  require_same_dtype(d, c, "c");
  require_ndim(a, 2, "a");
  require_ndim(b, 2, "b");
  require_ndim(c, 2, "c");
  require_writable(c, "c");
  if (a.shape(1) != b.shape(0) || c.shape(0) != a.shape(0) || c.shape(1) != b.shape(1))
    throw py::value_error("gemm: shapes do not match: a " + std::to_string(a.shape(0)) + "x" +
                          std::to_string(a.shape(1)) + ", b " + std::to_string(b.shape(0)) + "x" +
                          std::to_string(b.shape(1)) + ", c " + std::to_string(c.shape(0)) + "x" +
                          std::to_string(c.shape(1)));
  if (nthreads < 0) throw py::value_error("nthreads must be >= 0");
  const Isa i = isa.empty() ? active_isa() : parse_isa(isa);
  if (d == DType::f32) gemm_impl<float>(a, b, c, beta, i, nthreads);
  else gemm_impl<double>(a, b, c, beta, i, nthreads);
}

// ---------------------------------------------------------------- conv2d
// Builds the parameter block from the arrays and checks every size that
// memory safety depends on.
Conv2dParams conv_params(const py::array& x, const py::array& w, const py::array& y,
                         i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups,
                         const char* xname, const char* yname) {
  require_ndim(x, 4, xname);
  require_ndim(w, 4, "weight");
  require_ndim(y, 4, yname);
  Conv2dParams p;
  p.N = x.shape(0); p.C = x.shape(1); p.H = x.shape(2); p.W = x.shape(3);
  p.OC = w.shape(0); p.KH = w.shape(2); p.KW = w.shape(3);
  p.SH = sh; p.SW = sw; p.PT = pt; p.PL = pl; p.DH = dh; p.DW = dw; p.G = groups;
  p.OH = y.shape(2); p.OW = y.shape(3);
  if (groups <= 0 || p.C % groups || p.OC % groups || w.shape(1) * groups != p.C)
    throw py::value_error("conv2d: weight/groups do not match the input channels");
  if (y.shape(0) != p.N || y.shape(1) != p.OC)
    throw py::value_error(std::string("conv2d: ") + yname + " has the wrong shape");
  p.validate();
  return p;
}

void check_conv_arrays(DType d, std::initializer_list<std::pair<const py::array*, const char*>> arrs) {
  for (auto& [a, name] : arrs) {
    require_same_dtype(d, *a, name);
    require_c_contig(*a, name);
  }
}

void py_conv2d_forward(const py::array& x, const py::array& w, const py::object& b, py::array& y,
                       i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
  const DType d = dtype_of(x, "input");
  check_conv_arrays(d, {{&x, "input"}, {&w, "weight"}, {&y, "out"}});
  require_writable(y, "out");
  Conv2dParams p = conv_params(x, w, y, sh, sw, pt, pl, dh, dw, groups, "input", "out");
  py::array barr;
  if (!b.is_none()) {
    barr = py::reinterpret_borrow<py::array>(b);
    check_conv_arrays(d, {{&barr, "bias"}});
    require_ndim(barr, 1, "bias");
    if (barr.shape(0) != p.OC) throw py::value_error("conv2d: bias must have out_channels elements");
  }
  const void* bp = b.is_none() ? nullptr : barr.data();
  py::gil_scoped_release nogil;
  if (d == DType::f32)
    conv2d_forward<float>(p, ptr<float>(x), ptr<float>(w), static_cast<const float*>(bp), mut_ptr<float>(y));
  else
    conv2d_forward<double>(p, ptr<double>(x), ptr<double>(w), static_cast<const double*>(bp), mut_ptr<double>(y));
}

// ---- conv2d's fast path: the common call, geometry included, in one call.
// Exact ndarrays of one native dtype (float32 or float64), C-contiguous and
// aligned, a non-empty batch, zero padding and stride / padding / dilation
// given as ints or pairs of ints. Anything else, and any argument that the
// Python layer must reject, returns None: functional.conv2d then runs its
// full checks and raises the named error (so the messages live in one place).
bool small_int(PyObject* o, i64* v) {
  if (!PyLong_CheckExact(o)) return false;
  int overflow = 0;
  const long long r = PyLong_AsLongLongAndOverflow(o, &overflow);
  if (overflow || r < -2147483647LL || r > 2147483647LL) return false;
  *v = r;
  return true;
}

bool int_or_pair(PyObject* o, i64* a, i64* b) {
  if (PyLong_CheckExact(o)) {
    if (!small_int(o, a)) return false;
    *b = *a;
    return true;
  }
  return PyTuple_CheckExact(o) && PyTuple_GET_SIZE(o) == 2 && small_int(PyTuple_GET_ITEM(o, 0), a) &&
         small_int(PyTuple_GET_ITEM(o, 1), b);
}

// The array behind o if it is an exact, C-contiguous, aligned ndarray of
// ndim dimensions and one of our native dtypes; else nullptr.
const py::array* plain_array(py::handle o, int ndim, py::array* holder, DType* d) {
  auto& api = py::detail::npy_api::get();
  if (Py_TYPE(o.ptr()) != api.PyArray_Type_) return nullptr;
  *holder = py::reinterpret_borrow<py::array>(o);
  constexpr int need = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  if (holder->ndim() != ndim || (py::detail::array_proxy(o.ptr())->flags & need) != need) return nullptr;
  const py::dtype dt = holder->dtype();
  if (dt.is(py::dtype::of<float>())) *d = DType::f32;
  else if (dt.is(py::dtype::of<double>())) *d = DType::f64;
  else return nullptr;
  return holder;
}

py::object py_conv2d_fast(py::handle x_obj, py::handle w_obj, py::handle b_obj, py::handle stride,
                          py::handle padding, py::handle dilation, py::handle groups) {
  py::array x, w, b;
  DType d, dw_, db_;
  if (!plain_array(x_obj, 4, &x, &d) || !plain_array(w_obj, 4, &w, &dw_) || dw_ != d)
    return py::none();
  const bool has_b = !b_obj.is_none();
  if (has_b && (!plain_array(b_obj, 1, &b, &db_) || db_ != d)) return py::none();
  Conv2dParams p;
  if (!int_or_pair(stride.ptr(), &p.SH, &p.SW) || !int_or_pair(padding.ptr(), &p.PT, &p.PL) ||
      !int_or_pair(dilation.ptr(), &p.DH, &p.DW) || !small_int(groups.ptr(), &p.G))
    return py::none();
  p.N = x.shape(0); p.C = x.shape(1); p.H = x.shape(2); p.W = x.shape(3);
  p.OC = w.shape(0); p.KH = w.shape(2); p.KW = w.shape(3);
  const i64 Cg = w.shape(1);
  if (p.N < 1 || p.C < 1 || p.H < 1 || p.W < 1 || p.OC < 1 || Cg < 1 || p.KH < 1 || p.KW < 1 ||
      p.G < 1 || p.SH < 1 || p.SW < 1 || p.DH < 1 || p.DW < 1 || p.PT < 0 || p.PL < 0 ||
      p.C % p.G || p.OC % p.G || Cg * p.G != p.C || (has_b && b.shape(0) != p.OC))
    return py::none();
  // the sizes the Python layer also limits (each below 2**31 - 1, so no overflow here)
  if (p.KH > 2147483647 / p.DH || p.KW > 2147483647 / p.DW) return py::none();
  const i64 ekh = p.DH * (p.KH - 1) + 1, ekw = p.DW * (p.KW - 1) + 1;
  const i64 hp = p.H + 2 * p.PT, wp = p.W + 2 * p.PL;
  if (hp < ekh || wp < ekw) return py::none();
  p.OH = (hp - ekh) / p.SH + 1;
  p.OW = (wp - ekw) / p.SW + 1;
  constexpr double kMaxElems = 4.611686018427388e18;  // 2**62, as functional._MAX_ELEMS
  if (double(p.N) * p.C * p.H * p.W >= kMaxElems || double(p.N) * p.OC * p.OH * p.OW >= kMaxElems)
    return py::none();
  py::array y = d == DType::f32 ? py::array(py::array_t<float>({p.N, p.OC, p.OH, p.OW}))
                                : py::array(py::array_t<double>({p.N, p.OC, p.OH, p.OW}));
  const void* bp = has_b ? b.data() : nullptr;
  {
    py::gil_scoped_release nogil;
    if (d == DType::f32)
      conv2d_forward<float>(p, ptr<float>(x), ptr<float>(w), static_cast<const float*>(bp), mut_ptr<float>(y));
    else
      conv2d_forward<double>(p, ptr<double>(x), ptr<double>(w), static_cast<const double*>(bp), mut_ptr<double>(y));
  }
  return std::move(y);
}

void py_conv2d_backward_data(const py::array& dy, const py::array& w, py::array& dx,
                             i64 sh, i64 sw, i64 pt, i64 pl, i64 dh, i64 dw, i64 groups) {
  const DType d = dtype_of(dy, "grad_output");
  check_conv_arrays(d, {{&dy, "grad_output"}, {&w, "weight"}, {&dx, "grad_input"}});
  require_writable(dx, "grad_input");
  Conv2dParams p = conv_params(dx, w, dy, sh, sw, pt, pl, dh, dw, groups, "grad_input", "grad_output");
  py::gil_scoped_release nogil;
  if (d == DType::f32)
    conv2d_backward_data<float>(p, ptr<float>(dy), ptr<float>(w), mut_ptr<float>(dx));
  else
    conv2d_backward_data<double>(p, ptr<double>(dy), ptr<double>(w), mut_ptr<double>(dx));
}

void py_conv2d_backward_weight(const py::array& dy, const py::array& x, py::array& dw_arr,
                               const py::object& db, i64 sh, i64 sw, i64 pt, i64 pl, i64 dh,
                               i64 dw, i64 groups) {
  const DType d = dtype_of(dy, "grad_output");
  check_conv_arrays(d, {{&dy, "grad_output"}, {&x, "input"}, {&dw_arr, "grad_weight"}});
  require_writable(dw_arr, "grad_weight");
  Conv2dParams p = conv_params(x, dw_arr, dy, sh, sw, pt, pl, dh, dw, groups, "input", "grad_output");
  py::array dbarr;
  if (!db.is_none()) {
    dbarr = py::reinterpret_borrow<py::array>(db);
    check_conv_arrays(d, {{&dbarr, "grad_bias"}});
    require_writable(dbarr, "grad_bias");
    require_ndim(dbarr, 1, "grad_bias");
    if (dbarr.shape(0) != p.OC) throw py::value_error("conv2d: grad_bias must have out_channels elements");
  }
  void* dbp = db.is_none() ? nullptr : dbarr.mutable_data();
  py::gil_scoped_release nogil;
  if (d == DType::f32)
    conv2d_backward_weight<float>(p, ptr<float>(dy), ptr<float>(x), mut_ptr<float>(dw_arr), static_cast<float*>(dbp));
  else
    conv2d_backward_weight<double>(p, ptr<double>(dy), ptr<double>(x), mut_ptr<double>(dw_arr), static_cast<double*>(dbp));
}

template <typename T>
py::dict kernel_info(Isa isa) {
  const GemmKernel<T>& K = gemm_kernel<T>(isa);
  py::dict d;
  d["name"] = K.name;
  d["isa"] = isa_name(K.isa);
  d["mr"] = K.mr; d["nr"] = K.nr; d["mc"] = K.mc; d["kc"] = K.kc; d["nc"] = K.nc;
  py::list short_rows;  // the row counts of the short kernels for a last row tile
  for (const auto& s : K.short_rows)
    if (s.rows > 0) short_rows.append(s.rows);
  d["short_rows"] = short_rows;
  return d;
}

// ---------------------------------------------------------------- shared checks
// Checks that every array is C-contiguous with dtype d; returns d.
DType same_contig(std::initializer_list<std::pair<const py::array*, const char*>> arrs) {
  const DType d = dtype_of(*arrs.begin()->first, arrs.begin()->second);
  for (auto& [a, name] : arrs) {
    require_same_dtype(d, *a, name);
    require_c_contig(*a, name);
  }
  return d;
}

void require_size(const py::array& a, i64 n, const char* name) {
  if ((i64)a.size() != n)
    throw py::value_error(std::string(name) + ": expected " + std::to_string(n) + " elements, got " +
                          std::to_string(a.size()));
}

// Throws the ValueError for the first of p[0..n) outside [0, limit), if any.
void check_indices(const std::int64_t* p, i64 n, i64 limit, const char* name) {
  for (i64 i = 0; i < n; ++i)
    if (p[i] < 0 || p[i] >= limit)
      throw py::value_error(std::string(name) + ": value " + std::to_string(p[i]) +
                            " at position " + std::to_string(i) + " is outside [0, " +
                            std::to_string(limit) + ")");
}

// An int64, C-contiguous array of n indices; with check, each in [0, limit).
const std::int64_t* index_array(const py::array& a, const char* name, i64 n, i64 limit,
                                bool check = true) {
  if (!a.dtype().is(py::dtype::of<std::int64_t>()))
    throw py::type_error(std::string(name) + ": expected an int64 array");
  require_c_contig(a, name);
  require_size(a, n, name);
  const std::int64_t* p = static_cast<const std::int64_t*>(a.data());
  if (check) check_indices(p, n, limit, name);
  return p;
}

// ---------------------------------------------------------------- pooling
Pool2dParams pool_params(const py::array& x, const py::array& y, i64 kh, i64 kw, i64 sh, i64 sw,
                         i64 ph, i64 pw, i64 dh, i64 dw, const char* xname, const char* yname) {
  require_ndim(x, 4, xname);
  require_ndim(y, 4, yname);
  if (x.shape(0) != y.shape(0) || x.shape(1) != y.shape(1))
    throw py::value_error(std::string("pool2d: ") + yname + " must have the batch and channels of " + xname);
  Pool2dParams p{x.shape(0), x.shape(1), x.shape(2), x.shape(3), kh, kw, sh, sw, ph, pw, dh, dw,
                 y.shape(2), y.shape(3)};
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 || ph < 0 || pw < 0)
    throw py::value_error("pool2d: bad window parameters");
  // Every window must hold at least one input position (ceil_mode rule).
  if (p.OH > 0 && ((p.OH - 1) * sh - ph >= p.H || (p.OW - 1) * sw - pw >= p.W))
    throw py::value_error("pool2d: output size too large for the input");
  return p;
}

template <typename F>
void with_dtype(DType d, F f) {
  if (d == DType::f32) f(float{});
  else f(double{});
}

void py_max_pool2d_forward(const py::array& x, py::array& y, const py::object& idx, i64 kh, i64 kw,
                           i64 sh, i64 sw, i64 ph, i64 pw, i64 dh, i64 dw) {
  const DType d = same_contig({{&x, "input"}, {&y, "out"}});
  require_writable(y, "out");
  Pool2dParams p = pool_params(x, y, kh, kw, sh, sw, ph, pw, dh, dw, "input", "out");
  std::int64_t* ip = nullptr;
  py::array ia;
  if (!idx.is_none()) {
    ia = py::reinterpret_borrow<py::array>(idx);
    if (!ia.dtype().is(py::dtype::of<std::int64_t>())) throw py::type_error("indices: expected int64");
    require_c_contig(ia, "indices");
    require_writable(ia, "indices");
    require_size(ia, y.size(), "indices");
    ip = static_cast<std::int64_t*>(ia.mutable_data());
  }
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    max_pool2d_forward<T>(p, ptr<T>(x), mut_ptr<T>(y), ip);
  });
}

void py_max_pool2d_backward(const py::array& dy, const py::array& idx, py::array& dx) {
  const DType d = same_contig({{&dy, "grad_output"}, {&dx, "grad_input"}});
  require_writable(dx, "grad_input");
  require_ndim(dx, 4, "grad_input");
  require_ndim(dy, 4, "grad_output");
  if (dx.shape(0) != dy.shape(0) || dx.shape(1) != dy.shape(1))
    throw py::value_error("max_pool2d_backward: grad_output must have the batch and channels of grad_input");
  Pool2dParams p{dx.shape(0), dx.shape(1), dx.shape(2), dx.shape(3), 1, 1, 1, 1, 0, 0, 1, 1,
                 dy.shape(2), dy.shape(3)};
  // The kernel bounds-checks every index as it scatters (no separate pass
  // with the GIL held); on a bad one it reports false and the scan below
  // names the first offender.
  const std::int64_t* ip = index_array(idx, "indices", dy.size(), p.H * p.W, false);
  bool ok = true;
  {
    py::gil_scoped_release nogil;
    with_dtype(d, [&](auto t) {
      using T = decltype(t);
      ok = max_pool2d_backward<T>(p, ptr<T>(dy), ip, mut_ptr<T>(dx));
    });
  }
  if (!ok) {  // name the offender; it may have been changed by another thread meanwhile
    check_indices(ip, dy.size(), p.H * p.W, "indices");
    throw py::value_error("indices: a value was outside [0, " + std::to_string(p.H * p.W) + ")");
  }
}

void py_avg_pool2d(bool backward, const py::array& in, py::array& out, i64 kh, i64 kw, i64 sh,
                   i64 sw, i64 ph, i64 pw, bool cip, i64 dov) {
  const DType d = same_contig({{&in, backward ? "grad_output" : "input"},
                               {&out, backward ? "grad_input" : "out"}});
  require_writable(out, "out");
  const py::array& x = backward ? out : in;
  const py::array& y = backward ? in : out;
  Pool2dParams p = pool_params(x, y, kh, kw, sh, sw, ph, pw, 1, 1, "input", "output");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    if (backward) avg_pool2d_backward<T>(p, cip, dov, ptr<T>(in), mut_ptr<T>(out));
    else avg_pool2d_forward<T>(p, cip, dov, ptr<T>(in), mut_ptr<T>(out));
  });
}

// The fast paths of functional.max_pool2d / avg_pool2d: a batched plain
// array and int (or int pair) window arguments, checked and sized here as
// functional._pool_geom does (PyTorch's rules); false for anything else
// (including every argument to reject), whereupon Python takes its checked
// path and raises the error.
bool pool_fast_params(py::handle x_obj, py::handle kernel_size, py::handle stride, py::handle padding,
                      py::handle dilation, bool ceil_mode, py::array* x, DType* d, Pool2dParams* p) {
  if (!plain_array(x_obj, 4, x, d)) return false;
  i64 kh, kw, sh, sw, ph, pw, dh, dw;
  if (!int_or_pair(kernel_size.ptr(), &kh, &kw) || !int_or_pair(padding.ptr(), &ph, &pw) ||
      !int_or_pair(dilation.ptr(), &dh, &dw))
    return false;
  if (stride.is_none()) {
    sh = kh;
    sw = kw;
  } else if (!int_or_pair(stride.ptr(), &sh, &sw)) {
    return false;
  }
  const i64 N = x->shape(0), C = x->shape(1), H = x->shape(2), W = x->shape(3);
  if (N < 1 || C < 1 || H < 1 || W < 1 || kh < 1 || kw < 1 || sh < 1 || sw < 1 || dh < 1 || dw < 1 ||
      ph < 0 || pw < 0 || 2 * ph > kh || 2 * pw > kw)
    return false;
  auto out = [&](i64 size, i64 k, i64 s, i64 pad, i64 dil, i64* o) {
    const i64 span = size + 2 * pad - dil * (k - 1) - 1;  // each term below 2^62: no overflow
    if (span < 0) return false;
    *o = (span + (ceil_mode ? s - 1 : 0)) / s + 1;
    if (ceil_mode && (*o - 1) * s >= size + pad) --*o;  // the last window starts inside
    return *o >= 1;
  };
  i64 OH, OW;
  if (!out(H, kh, sh, ph, dh, &OH) || !out(W, kw, sw, pw, dw, &OW)) return false;
  *p = Pool2dParams{N, C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW};
  return true;
}

py::array new_array(DType d, std::initializer_list<i64> shape) {
  std::vector<py::ssize_t> s(shape.begin(), shape.end());
  return d == DType::f32 ? py::array(py::array_t<float>(s)) : py::array(py::array_t<double>(s));
}

py::object py_max_pool2d_fast(py::handle x_obj, py::handle kernel_size, py::handle stride,
                              py::handle padding, py::handle dilation, bool ceil_mode, bool return_indices) {
  py::array x;
  DType d;
  Pool2dParams p;
  if (!pool_fast_params(x_obj, kernel_size, stride, padding, dilation, ceil_mode, &x, &d, &p))
    return py::none();
  py::array y = new_array(d, {p.N, p.C, p.OH, p.OW});
  py::array_t<std::int64_t> idx;
  if (return_indices) idx = py::array_t<std::int64_t>(std::vector<py::ssize_t>{p.N, p.C, p.OH, p.OW});
  {
    py::gil_scoped_release nogil;
    with_dtype(d, [&](auto t) {
      using T = decltype(t);
      max_pool2d_forward<T>(p, ptr<T>(x), mut_ptr<T>(y), return_indices ? idx.mutable_data() : nullptr);
    });
  }
  if (return_indices) return py::make_tuple(y, idx);
  return std::move(y);
}

py::object py_avg_pool2d_fast(py::handle x_obj, py::handle kernel_size, py::handle stride,
                              py::handle padding, bool ceil_mode, bool count_include_pad,
                              py::handle divisor_override) {
  py::array x;
  DType d;
  Pool2dParams p;
  if (!divisor_override.is_none()) return py::none();
  if (!pool_fast_params(x_obj, kernel_size, stride, padding, py::int_(1), ceil_mode, &x, &d, &p))
    return py::none();
  py::array y = new_array(d, {p.N, p.C, p.OH, p.OW});
  {
    py::gil_scoped_release nogil;
    with_dtype(d, [&](auto t) {
      using T = decltype(t);
      avg_pool2d_forward<T>(p, count_include_pad, 0, ptr<T>(x), mut_ptr<T>(y));
    });
  }
  return std::move(y);
}

// functional.max_pool2d_backward's fast path: plain batched grad_output,
// C-contiguous int64 indices of its shape and input_shape a tuple of four
// ints matching its batch and channels; None for anything else, and for an
// index out of range (the checked path then raises, naming it).
py::object py_max_pool2d_backward_fast(py::handle dy_obj, py::handle idx_obj, py::handle input_shape) {
  py::array dy;
  DType d;
  if (!plain_array(dy_obj, 4, &dy, &d) || dy.size() == 0) return py::none();
  auto& api = py::detail::npy_api::get();
  if (Py_TYPE(idx_obj.ptr()) != api.PyArray_Type_) return py::none();
  const py::array idx = py::reinterpret_borrow<py::array>(idx_obj);
  constexpr int need = py::detail::npy_api::NPY_ARRAY_C_CONTIGUOUS_ | py::detail::npy_api::NPY_ARRAY_ALIGNED_;
  if (!idx.dtype().is(py::dtype::of<std::int64_t>()) || idx.ndim() != 4 ||
      (py::detail::array_proxy(idx_obj.ptr())->flags & need) != need)
    return py::none();
  for (int k = 0; k < 4; ++k)
    if (idx.shape(k) != dy.shape(k)) return py::none();
  if (!PyTuple_CheckExact(input_shape.ptr()) || PyTuple_GET_SIZE(input_shape.ptr()) != 4) return py::none();
  i64 s[4];
  for (int k = 0; k < 4; ++k)
    if (!small_int(PyTuple_GET_ITEM(input_shape.ptr(), k), &s[k]) || s[k] < 1) return py::none();
  if (s[0] != dy.shape(0) || s[1] != dy.shape(1)) return py::none();
  py::array dx = new_array(d, {s[0], s[1], s[2], s[3]});
  const Pool2dParams p{s[0], s[1], s[2], s[3], 1, 1, 1, 1, 0, 0, 1, 1, dy.shape(2), dy.shape(3)};
  const auto* ip = static_cast<const std::int64_t*>(idx.data());
  bool ok = true;
  {
    py::gil_scoped_release nogil;
    with_dtype(d, [&](auto t) {
      using T = decltype(t);
      ok = max_pool2d_backward<T>(p, ptr<T>(dy), ip, mut_ptr<T>(dx));
    });
  }
  if (!ok) return py::none();
  return std::move(dx);
}

Pool2dParams adaptive_params(const py::array& x, const py::array& y) {
  require_ndim(x, 4, "input");
  require_ndim(y, 4, "output");
  if (x.shape(0) != y.shape(0) || x.shape(1) != y.shape(1) || y.shape(2) < 1 || y.shape(3) < 1 ||
      x.shape(2) < 1 || x.shape(3) < 1)
    throw py::value_error("adaptive pool: shapes do not match");
  return Pool2dParams{x.shape(0), x.shape(1), x.shape(2), x.shape(3), 1, 1, 1, 1, 0, 0, 1, 1,
                      y.shape(2), y.shape(3)};
}

void py_adaptive_avg(bool backward, const py::array& in, py::array& out) {
  const DType d = same_contig({{&in, "input"}, {&out, "out"}});
  require_writable(out, "out");
  Pool2dParams p = backward ? adaptive_params(out, in) : adaptive_params(in, out);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    if (backward) adaptive_avg_pool2d_backward<T>(p, ptr<T>(in), mut_ptr<T>(out));
    else adaptive_avg_pool2d_forward<T>(p, ptr<T>(in), mut_ptr<T>(out));
  });
}

void py_adaptive_max(const py::array& x, py::array& y, py::array& idx) {
  const DType d = same_contig({{&x, "input"}, {&y, "out"}});
  require_writable(y, "out");
  Pool2dParams p = adaptive_params(x, y);
  if (!idx.dtype().is(py::dtype::of<std::int64_t>())) throw py::type_error("indices: expected int64");
  require_c_contig(idx, "indices");
  require_writable(idx, "indices");
  require_size(idx, y.size(), "indices");
  std::int64_t* ip = static_cast<std::int64_t*>(idx.mutable_data());
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    adaptive_max_pool2d_forward<T>(p, ptr<T>(x), mut_ptr<T>(y), ip);
  });
}

// ---------------------------------------------------------------- activations
Act parse_act(const std::string& name) {
  if (name == "relu") return Act::relu;
  if (name == "leaky_relu") return Act::leaky_relu;
  if (name == "elu") return Act::elu;
  if (name == "sigmoid") return Act::sigmoid;
  if (name == "tanh") return Act::tanh;
  if (name == "gelu") return Act::gelu;
  if (name == "gelu_tanh") return Act::gelu_tanh;
  throw py::value_error("unknown activation '" + name + "'");
}

void py_activation_forward(const std::string& name, const py::array& x, py::array& y, double alpha) {
  const DType d = same_contig({{&x, "input"}, {&y, "out"}});
  require_writable(y, "out");
  require_size(y, x.size(), "out");
  const Act a = parse_act(name);
  const i64 n = x.size();
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    activation_forward<T>(a, T(alpha), ptr<T>(x), mut_ptr<T>(y), n);
  });
}

void py_activation_backward(const std::string& name, const py::array& dy, const py::array& saved,
                            py::array& dx, double alpha) {
  const DType d = same_contig({{&dy, "grad_output"}, {&saved, "saved"}, {&dx, "grad_input"}});
  require_writable(dx, "grad_input");
  require_size(saved, dy.size(), "saved");
  require_size(dx, dy.size(), "grad_input");
  const Act a = parse_act(name);
  const i64 n = dy.size();
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    activation_backward<T>(a, T(alpha), ptr<T>(dy), ptr<T>(saved), mut_ptr<T>(dx), n);
  });
}

void check_lines(i64 outer, i64 dim, i64 inner) {
  if (outer < 0 || dim < 1 || inner < 1) throw py::value_error("bad (outer, dim, inner) view");
}

void py_softmax_forward(bool log, const py::array& x, py::array& y, i64 outer, i64 dim, i64 inner) {
  const DType d = same_contig({{&x, "input"}, {&y, "out"}});
  require_writable(y, "out");
  check_lines(outer, dim, inner);
  require_size(x, outer * dim * inner, "input");
  require_size(y, outer * dim * inner, "out");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    softmax_forward<T>(log, ptr<T>(x), mut_ptr<T>(y), outer, dim, inner);
  });
}

void py_softmax_backward(bool log, const py::array& dy, const py::array& y, py::array& dx,
                         i64 outer, i64 dim, i64 inner) {
  const DType d = same_contig({{&dy, "grad_output"}, {&y, "output"}, {&dx, "grad_input"}});
  require_writable(dx, "grad_input");
  check_lines(outer, dim, inner);
  for (auto* a : {&dy, &y}) require_size(*a, outer * dim * inner, "grad_output/output");
  require_size(dx, outer * dim * inner, "grad_input");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    softmax_backward<T>(log, ptr<T>(dy), ptr<T>(y), mut_ptr<T>(dx), outer, dim, inner);
  });
}

void py_maxout(bool backward, const py::array& a, const py::array& b, py::array& out, i64 outer,
               i64 dim, i64 inner, i64 pieces) {
  check_lines(outer, dim, inner);
  if (pieces < 1 || dim % pieces) throw py::value_error("maxout: pieces must divide the channels");
  if (!backward) {  // a = x, out = y
    const DType d = same_contig({{&a, "input"}, {&out, "out"}});
    require_writable(out, "out");
    require_size(a, outer * dim * inner, "input");
    require_size(out, outer * (dim / pieces) * inner, "out");
    py::gil_scoped_release nogil;
    with_dtype(d, [&](auto t) {
      using T = decltype(t);
      maxout_forward<T>(ptr<T>(a), mut_ptr<T>(out), outer, dim, inner, pieces);
    });
    return;
  }
  // a = dy, b = x, out = dx
  const DType d = same_contig({{&a, "grad_output"}, {&b, "input"}, {&out, "grad_input"}});
  require_writable(out, "grad_input");
  require_size(a, outer * (dim / pieces) * inner, "grad_output");
  require_size(b, outer * dim * inner, "input");
  require_size(out, outer * dim * inner, "grad_input");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto t) {
    using T = decltype(t);
    maxout_backward<T>(ptr<T>(a), ptr<T>(b), mut_ptr<T>(out), outer, dim, inner, pieces);
  });
}

// ---------------------------------------------------------------- losses
struct Targets {
  const std::int64_t* idx = nullptr;
  py::array prob;
};

Targets targets(DType d, const py::array& x, const py::object& t_idx, const py::object& t_prob) {
  Targets t;
  const i64 N = x.shape(0), C = x.shape(1);
  if (!t_idx.is_none())
    t.idx = index_array(py::reinterpret_borrow<py::array>(t_idx), "target", N, C);
  else {
    t.prob = py::reinterpret_borrow<py::array>(t_prob);
    require_same_dtype(d, t.prob, "target");
    require_c_contig(t.prob, "target");
    require_size(t.prob, N * C, "target");
  }
  return t;
}

int parse_reduction(int r) {
  if (r < 0 || r > 2) throw py::value_error("reduction code must be 0, 1 or 2");
  return r;
}

void py_cross_entropy_forward(const py::array& x, const py::object& t_idx, const py::object& t_prob,
                              double eps, int reduction, py::array& out) {
  const DType d = same_contig({{&x, "input"}, {&out, "out"}});
  require_ndim(x, 2, "input");
  require_writable(out, "out");
  require_size(out, parse_reduction(reduction) == kNone ? x.shape(0) : 1, "out");
  Targets t = targets(d, x, t_idx, t_prob);
  const i64 N = x.shape(0), C = x.shape(1);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    cross_entropy_forward<T>(ptr<T>(x), N, C, t.idx, t.idx ? nullptr : ptr<T>(t.prob), T(eps),
                             reduction, mut_ptr<T>(out));
  });
}

void py_cross_entropy_backward(const py::array& x, const py::object& t_idx, const py::object& t_prob,
                               double eps, const py::array& g, double scale, py::array& dx) {
  const DType d = same_contig({{&x, "input"}, {&g, "grad_output"}, {&dx, "grad_input"}});
  require_ndim(x, 2, "input");
  require_writable(dx, "grad_input");
  require_size(dx, x.size(), "grad_input");
  const i64 N = x.shape(0), C = x.shape(1);
  if (g.size() != 1 && (i64)g.size() != N) throw py::value_error("grad_output: expected 1 or N values");
  const i64 gs = g.size() == 1 && N != 1 ? 0 : 1;
  Targets t = targets(d, x, t_idx, t_prob);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    cross_entropy_backward<T>(ptr<T>(x), N, C, t.idx, t.idx ? nullptr : ptr<T>(t.prob), T(eps),
                              ptr<T>(g), gs, T(scale), mut_ptr<T>(dx));
  });
}

void py_nll_forward(const py::array& x, const py::array& t, int reduction, py::array& out) {
  const DType d = same_contig({{&x, "input"}, {&out, "out"}});
  require_ndim(x, 2, "input");
  require_writable(out, "out");
  require_size(out, parse_reduction(reduction) == kNone ? x.shape(0) : 1, "out");
  const i64 N = x.shape(0), C = x.shape(1);
  const std::int64_t* tp = index_array(t, "target", N, C);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    nll_loss_forward<T>(ptr<T>(x), N, C, tp, reduction, mut_ptr<T>(out));
  });
}

void py_nll_backward(const py::array& t, const py::array& g, double scale, py::array& dx) {
  const DType d = same_contig({{&g, "grad_output"}, {&dx, "grad_input"}});
  require_ndim(dx, 2, "grad_input");
  require_writable(dx, "grad_input");
  const i64 N = dx.shape(0), C = dx.shape(1);
  if (g.size() != 1 && (i64)g.size() != N) throw py::value_error("grad_output: expected 1 or N values");
  const i64 gs = g.size() == 1 && N != 1 ? 0 : 1;
  const std::int64_t* tp = index_array(t, "target", N, C);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    nll_loss_backward<T>(N, C, tp, ptr<T>(g), gs, T(scale), mut_ptr<T>(dx));
  });
}

void py_mse_forward(const py::array& x, const py::array& tg, int reduction, py::array& out) {
  const DType d = same_contig({{&x, "input"}, {&tg, "target"}, {&out, "out"}});
  require_writable(out, "out");
  require_size(tg, x.size(), "target");
  require_size(out, parse_reduction(reduction) == kNone ? x.size() : 1, "out");
  const i64 n = x.size();
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    mse_loss_forward<T>(ptr<T>(x), ptr<T>(tg), n, reduction, mut_ptr<T>(out));
  });
}

void py_mse_backward(const py::array& x, const py::array& tg, const py::array& g, double scale,
                     py::array& dx) {
  const DType d = same_contig({{&x, "input"}, {&tg, "target"}, {&g, "grad_output"}, {&dx, "grad_input"}});
  require_writable(dx, "grad_input");
  require_size(tg, x.size(), "target");
  require_size(dx, x.size(), "grad_input");
  if (g.size() != 1 && g.size() != x.size()) throw py::value_error("grad_output: expected 1 or n values");
  const i64 n = x.size(), gs = g.size() == 1 && n != 1 ? 0 : 1;
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    mse_loss_backward<T>(ptr<T>(x), ptr<T>(tg), n, ptr<T>(g), gs, T(scale), mut_ptr<T>(dx));
  });
}

// ---------------------------------------------------------------- pad
PadParams pad_params(const py::array& x, const py::array& y, i64 l, i64 r, i64 t, i64 b, int mode) {
  if (x.ndim() < 1 || x.ndim() != y.ndim()) throw py::value_error("pad: input/output ranks differ");
  if (l < 0 || r < 0 || t < 0 || b < 0) throw py::value_error("pad: negative padding");
  if (mode < 0 || mode > 3) throw py::value_error("pad: bad mode code");
  const int nd = (int)x.ndim();
  const i64 W = x.shape(nd - 1), H = nd >= 2 ? x.shape(nd - 2) : 1;
  if ((t || b) && nd < 2) throw py::value_error("pad: height padding needs a 2-d input");
  PadParams p{H * W ? (i64)x.size() / (H * W) : 0, H, W, l, r, t, b, (PadMode)mode};
  for (int d = 0; d < nd - 2; ++d)
    if (x.shape(d) != y.shape(d)) throw py::value_error("pad: leading dimensions differ");
  if (y.shape(nd - 1) != p.OW() || (nd >= 2 && y.shape(nd - 2) != p.OH()))
    throw py::value_error("pad: output has the wrong shape");
  if (p.mode == PadMode::reflect && (l >= W || r >= W || t >= H || b >= H))
    throw py::value_error("pad: reflect padding must be smaller than the input size");
  if (p.mode == PadMode::circular && (l > W || r > W || t > H || b > H))
    throw py::value_error("pad: circular padding must not exceed the input size");
  if (p.mode != PadMode::constant && (H == 0 || W == 0) && (l || r || t || b))
    throw py::value_error("pad: cannot pad an empty input with this mode");
  return p;
}

void py_pad(bool backward, const py::array& in, py::array& out, i64 l, i64 r, i64 t, i64 b, int mode,
            double value) {
  const DType d = same_contig({{&in, "input"}, {&out, "out"}});
  require_writable(out, "out");
  PadParams p = backward ? pad_params(out, in, l, r, t, b, mode) : pad_params(in, out, l, r, t, b, mode);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    if (backward) pad_backward<T>(p, ptr<T>(in), mut_ptr<T>(out));
    else pad_forward<T>(p, T(value), ptr<T>(in), mut_ptr<T>(out));
  });
}

// ---------------------------------------------------------------- batch norm
template <typename T>
const T* opt_ptr(const py::object& o) {
  return o.is_none() ? nullptr : static_cast<const T*>(py::reinterpret_borrow<py::array>(o).data());
}
template <typename T>
T* opt_mut(const py::object& o) {
  return o.is_none() ? nullptr : static_cast<T*>(py::reinterpret_borrow<py::array>(o).mutable_data());
}

void check_channel_vec(DType d, const py::object& o, i64 C, const char* name, bool writable) {
  if (o.is_none()) return;
  py::array a = py::reinterpret_borrow<py::array>(o);
  require_same_dtype(d, a, name);
  require_c_contig(a, name);
  require_size(a, C, name);
  if (writable) require_writable(a, name);
}

struct NCS { i64 N, C, S; };
NCS ncs_of(const py::array& x) {
  if (x.ndim() < 2) throw py::value_error("batch_norm: input must have at least 2 dims");
  NCS v{x.shape(0), x.shape(1), 1};
  for (int d = 2; d < x.ndim(); ++d) v.S *= x.shape(d);
  return v;
}

void py_bn_train(const py::array& x, double eps, const py::object& w, const py::object& b,
                 py::array& y, py::array& mean, py::array& var, py::array& invstd) {
  const DType d = same_contig({{&x, "input"}, {&y, "out"}, {&mean, "mean"}, {&var, "var"},
                               {&invstd, "invstd"}});
  require_writable(y, "out");
  require_size(y, x.size(), "out");
  const NCS v = ncs_of(x);
  check_channel_vec(d, mean, v.C, "mean", true);
  check_channel_vec(d, var, v.C, "var", true);
  check_channel_vec(d, invstd, v.C, "invstd", true);
  check_channel_vec(d, w, v.C, "weight", false);
  check_channel_vec(d, b, v.C, "bias", false);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    batch_norm_train_forward<T>(ptr<T>(x), v.N, v.C, v.S, T(eps), opt_ptr<T>(w), opt_ptr<T>(b),
                                mut_ptr<T>(y), mut_ptr<T>(mean), mut_ptr<T>(var),
                                mut_ptr<T>(invstd));
  });
}

void py_bn_normalize(const py::array& x, const py::array& mean, const py::array& invstd,
                     const py::object& w, const py::object& b, py::array& y) {
  const DType d = same_contig({{&x, "input"}, {&mean, "mean"}, {&invstd, "invstd"}, {&y, "out"}});
  require_writable(y, "out");
  require_size(y, x.size(), "out");
  const NCS v = ncs_of(x);
  check_channel_vec(d, mean, v.C, "mean", false);
  check_channel_vec(d, invstd, v.C, "invstd", false);
  check_channel_vec(d, w, v.C, "weight", false);
  check_channel_vec(d, b, v.C, "bias", false);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    batch_norm_normalize<T>(ptr<T>(x), v.N, v.C, v.S, ptr<T>(mean), ptr<T>(invstd), opt_ptr<T>(w),
                            opt_ptr<T>(b), mut_ptr<T>(y));
  });
}

void py_bn_backward(const py::array& dy, const py::array& x, const py::array& mean,
                    const py::array& invstd, const py::object& w, bool training, const py::object& dx,
                    const py::object& dw, const py::object& db) {
  const DType d = same_contig({{&dy, "grad_output"}, {&x, "input"}, {&mean, "mean"}, {&invstd, "invstd"}});
  require_size(dy, x.size(), "grad_output");
  const NCS v = ncs_of(x);
  check_channel_vec(d, mean, v.C, "mean", false);
  check_channel_vec(d, invstd, v.C, "invstd", false);
  check_channel_vec(d, w, v.C, "weight", false);
  check_channel_vec(d, dw, v.C, "grad_weight", true);
  check_channel_vec(d, db, v.C, "grad_bias", true);
  if (!dx.is_none()) {
    py::array a = py::reinterpret_borrow<py::array>(dx);
    require_same_dtype(d, a, "grad_input");
    require_c_contig(a, "grad_input");
    require_writable(a, "grad_input");
    require_size(a, x.size(), "grad_input");
  }
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    batch_norm_backward<T>(ptr<T>(dy), ptr<T>(x), v.N, v.C, v.S, ptr<T>(mean), ptr<T>(invstd),
                           opt_ptr<T>(w), training, opt_mut<T>(dx), opt_mut<T>(dw), opt_mut<T>(db));
  });
}

// ---------------------------------------------------------------- optimizers
// Every array C-contiguous, of the parameter's dtype and size (state arrays
// writable). Python checks this first and otherwise runs its NumPy form.
DType optim_arrays(const py::array& p, std::initializer_list<std::pair<const py::array*, const char*>> arrs) {
  const DType d = dtype_of(p, "param");
  require_c_contig(p, "param");
  require_writable(p, "param");
  for (auto& [a, name] : arrs) {
    require_same_dtype(d, *a, name);
    require_c_contig(*a, name);
    require_size(*a, p.size(), name);
  }
  return d;
}

void py_sgd_update(py::array& p, const py::array& g, const py::object& buf, double lr, double momentum,
                   double dampening, bool nesterov, int mode) {
  if (mode < 0 || mode > 2) throw py::value_error("sgd_update: mode must be 0, 1 or 2");
  if (mode != 0 && !py::isinstance<py::array>(buf))
    throw py::type_error("sgd_update: momentum_buffer must be an array with momentum");
  py::array b = mode == 0 ? p : py::reinterpret_borrow<py::array>(buf);
  const DType d = optim_arrays(p, {{&g, "grad"}, {&b, "momentum_buffer"}});
  if (mode) require_writable(b, "momentum_buffer");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    sgd_update<T>(mut_ptr<T>(p), ptr<T>(g), mode ? mut_ptr<T>(b) : nullptr, p.size(), T(lr), T(momentum),
                  T(1 - dampening), nesterov, mode);
  });
}

void py_adam_update(py::array& p, const py::array& g, py::array& m, py::array& v, const py::object& vmax,
                    bool decoupled, double decay, double w, bool far, double beta2, double rsbc2, double eps,
                    double step_size) {
  if (!vmax.is_none() && !py::isinstance<py::array>(vmax))
    throw py::type_error("adam_update: max_exp_avg_sq must be an array or None");
  py::array vm = vmax.is_none() ? m : py::reinterpret_borrow<py::array>(vmax);
  const DType d = optim_arrays(p, {{&g, "grad"}, {&m, "exp_avg"}, {&v, "exp_avg_sq"}, {&vm, "max_exp_avg_sq"}});
  require_writable(m, "exp_avg");
  require_writable(v, "exp_avg_sq");
  require_writable(vm, "max_exp_avg_sq");
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    // As NumPy rounds them: w and beta2 to T, 1 - w and 1 - beta2 in T.
    adam_update<T>(mut_ptr<T>(p), ptr<T>(g), mut_ptr<T>(m), mut_ptr<T>(v),
                   vmax.is_none() ? nullptr : mut_ptr<T>(vm), p.size(), decoupled, T(decay), T(w),
                   T(1) - T(w), far, T(beta2), T(1 - beta2), T(rsbc2), T(eps), T(step_size));
  });
}

// ---------------------------------------------------------------- linear
void py_linear_forward(const py::array& x, const py::array& w, const py::object& b, py::array& y) {
  const DType d = same_contig({{&x, "input"}, {&w, "weight"}, {&y, "out"}});
  require_ndim(x, 2, "input");
  require_ndim(w, 2, "weight");
  require_ndim(y, 2, "out");
  require_writable(y, "out");
  const i64 M = x.shape(0), K = x.shape(1), N = w.shape(0);
  if (w.shape(1) != K || y.shape(0) != M || y.shape(1) != N)
    throw py::value_error("linear: shapes do not match");
  check_channel_vec(d, b, N, "bias", false);
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    linear_forward<T>(ptr<T>(x), ptr<T>(w), opt_ptr<T>(b), mut_ptr<T>(y), M, K, N);
  });
}

void py_linear_backward(const py::array& dy, const py::array& x, const py::array& w, const py::object& dx,
                        const py::object& dw, const py::object& db) {
  const DType d = same_contig({{&dy, "grad_output"}, {&x, "input"}, {&w, "weight"}});
  require_ndim(x, 2, "input");
  require_ndim(w, 2, "weight");
  require_ndim(dy, 2, "grad_output");
  const i64 M = x.shape(0), K = x.shape(1), N = w.shape(0);
  if (w.shape(1) != K || dy.shape(0) != M || dy.shape(1) != N)
    throw py::value_error("linear: shapes do not match");
  for (auto [o, name, n] : {std::tuple<const py::object*, const char*, i64>{&dx, "grad_input", M * K},
                            {&dw, "grad_weight", N * K}, {&db, "grad_bias", N}}) {
    if (o->is_none()) continue;
    py::array a = py::reinterpret_borrow<py::array>(*o);
    require_same_dtype(d, a, name);
    require_c_contig(a, name);
    require_writable(a, name);
    require_size(a, n, name);
  }
  py::gil_scoped_release nogil;
  with_dtype(d, [&](auto z) {
    using T = decltype(z);
    linear_backward<T>(ptr<T>(dy), ptr<T>(x), ptr<T>(w), opt_mut<T>(dx), opt_mut<T>(dw), opt_mut<T>(db),
                       M, K, N);
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "pyconv compiled core (internal; use the pyconv package)";

  m.def("supported_isas", [] {
    std::vector<std::string> v;
    for (Isa i : supported_isas()) v.push_back(isa_name(i));
    return v;
  });
  m.def("get_isa", [] { return std::string(isa_name(active_isa())); });
  m.def("set_isa", [](const std::string& name) { set_active_isa(parse_isa(name)); }, py::arg("isa"));
  m.def("get_winograd", [] { return g_winograd_enabled.load(); });
  m.def("set_winograd", [](bool on) { g_winograd_enabled.store(on); }, py::arg("enabled"));
  // Testing hook (not public API): the largest forward conv, in multiply-adds,
  // run as direct loops; 0 sends every shape through the GEMM paths.
  m.def("get_conv_direct_max", [] { return g_conv_direct_max.load(); });
  m.def("set_conv_direct_max", [](long long macs) { g_conv_direct_max.store(macs < 0 ? 0 : macs); },
        py::arg("macs"));
  m.def("get_num_threads", &get_num_threads);
  m.def("in_forked_child", &in_forked_child);
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("num_threads must be >= 1, got " + std::to_string(n));
    set_num_threads(n);
  }, py::arg("n"));
  m.def("build_info", [] {
    py::dict d;
    d["compiler"] = PYCONV_COMPILER;
    d["openmp"] = openmp_enabled();
#ifdef _OPENMP
    d["openmp_version"] = _OPENMP;
#endif
    d["pybind11"] = std::to_string(PYBIND11_VERSION_MAJOR) + "." + std::to_string(PYBIND11_VERSION_MINOR) +
                    "." + std::to_string(PYBIND11_VERSION_PATCH);
    return d;
  });
  m.def("gemm_kernel_info", [](const std::string& dtype, const std::string& isa) {
    const Isa i = isa.empty() ? active_isa() : parse_isa(isa);
    if (dtype == "float32") return kernel_info<float>(i);
    if (dtype == "float64") return kernel_info<double>(i);
    throw py::type_error("dtype must be 'float32' or 'float64'");
  }, py::arg("dtype"), py::arg("isa") = "");
  m.def("ukernel_peak_gflops", [](const std::string& dtype, const std::string& isa, double seconds) {
    const Isa i = isa.empty() ? active_isa() : parse_isa(isa);
    py::gil_scoped_release nogil;
    if (dtype == "float64") return ukernel_peak_gflops<double>(gemm_kernel<double>(i), seconds);
    return ukernel_peak_gflops<float>(gemm_kernel<float>(i), seconds);
  }, py::arg("dtype") = "float32", py::arg("isa") = "", py::arg("seconds") = 0.2);

  m.def("gemm", &py_gemm, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("beta") = 0.0,
        py::arg("isa") = "", py::arg("nthreads") = 0,
        "c := a @ b + beta * c. a, b: any 2-d strides; c: unit column stride.");
  m.def("conv2d_fast", &py_conv2d_fast, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("groups"),
        "conv2d for plain arrays and int arguments, or None (see functional.conv2d)");
  m.def("conv2d_forward", &py_conv2d_forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"),
        py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"), py::arg("dh"), py::arg("dw"),
        py::arg("groups"));
  m.def("conv2d_backward_data", &py_conv2d_backward_data, py::arg("dy"), py::arg("w"), py::arg("dx"),
        py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"), py::arg("dh"), py::arg("dw"),
        py::arg("groups"));
  m.def("conv2d_backward_weight", &py_conv2d_backward_weight, py::arg("dy"), py::arg("x"),
        py::arg("dw"), py::arg("db"), py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"),
        py::arg("dh"), py::arg("dwl"), py::arg("groups"));
  // pooling
  m.def("max_pool2d_forward", &py_max_pool2d_forward, py::arg("x"), py::arg("y"), py::arg("indices"),
        py::arg("kh"), py::arg("kw"), py::arg("sh"), py::arg("sw"), py::arg("ph"), py::arg("pw"),
        py::arg("dh"), py::arg("dw"));
  m.def("max_pool2d_fast", &py_max_pool2d_fast, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("dilation"), py::arg("ceil_mode"), py::arg("return_indices"),
        "max_pool2d for a plain batched array and int arguments, or None (see functional.max_pool2d)");
  m.def("avg_pool2d_fast", &py_avg_pool2d_fast, py::arg("x"), py::arg("kernel_size"), py::arg("stride"),
        py::arg("padding"), py::arg("ceil_mode"), py::arg("count_include_pad"), py::arg("divisor_override"),
        "avg_pool2d for a plain batched array and int arguments, or None (see functional.avg_pool2d)");
  m.def("max_pool2d_backward_fast", &py_max_pool2d_backward_fast, py::arg("grad_output"), py::arg("indices"),
        py::arg("input_shape"), "max_pool2d_backward for plain arrays, or None (see functional)");
  m.def("max_pool2d_backward", &py_max_pool2d_backward, py::arg("dy"), py::arg("indices"), py::arg("dx"));
  m.def("avg_pool2d_forward", [](const py::array& x, py::array& y, i64 kh, i64 kw, i64 sh, i64 sw,
                                 i64 ph, i64 pw, bool cip, i64 dov) {
    py_avg_pool2d(false, x, y, kh, kw, sh, sw, ph, pw, cip, dov);
  });
  m.def("avg_pool2d_backward", [](const py::array& dy, py::array& dx, i64 kh, i64 kw, i64 sh, i64 sw,
                                  i64 ph, i64 pw, bool cip, i64 dov) {
    py_avg_pool2d(true, dy, dx, kh, kw, sh, sw, ph, pw, cip, dov);
  });
  m.def("adaptive_avg_pool2d_forward", [](const py::array& x, py::array& y) { py_adaptive_avg(false, x, y); });
  m.def("adaptive_avg_pool2d_backward", [](const py::array& dy, py::array& dx) { py_adaptive_avg(true, dy, dx); });
  m.def("adaptive_max_pool2d_forward", &py_adaptive_max);
  // activations
  m.def("activation_forward", &py_activation_forward, py::arg("name"), py::arg("x"), py::arg("y"),
        py::arg("alpha") = 0.0);
  m.def("activation_backward", &py_activation_backward, py::arg("name"), py::arg("dy"),
        py::arg("saved"), py::arg("dx"), py::arg("alpha") = 0.0);
  m.def("softmax_forward", &py_softmax_forward);
  m.def("softmax_backward", &py_softmax_backward);
  m.def("maxout_forward", [](const py::array& x, py::array& y, i64 outer, i64 dim, i64 inner, i64 pieces) {
    py_maxout(false, x, x, y, outer, dim, inner, pieces);
  });
  m.def("maxout_backward", [](const py::array& dy, const py::array& x, py::array& dx, i64 outer, i64 dim,
                              i64 inner, i64 pieces) { py_maxout(true, dy, x, dx, outer, dim, inner, pieces); });
  // losses
  m.def("cross_entropy_forward", &py_cross_entropy_forward);
  m.def("cross_entropy_backward", &py_cross_entropy_backward);
  m.def("nll_loss_forward", &py_nll_forward);
  m.def("nll_loss_backward", &py_nll_backward);
  m.def("mse_loss_forward", &py_mse_forward);
  m.def("mse_loss_backward", &py_mse_backward);
  // bench yardstick
  m.def("triad_gbps", [](i64 n, int nthreads, double seconds) {
    if (n < 1 || nthreads < 1) throw py::value_error("triad_gbps: n and nthreads must be >= 1");
    py::gil_scoped_release nogil;
    return triad_gbps(n, nthreads, seconds);
  }, py::arg("n") = i64(1) << 25, py::arg("nthreads") = 1, py::arg("seconds") = 0.5);
  // pad, batch norm, linear
  m.def("pad_forward", [](const py::array& x, py::array& y, i64 l, i64 r, i64 t, i64 b, int mode, double value) {
    py_pad(false, x, y, l, r, t, b, mode, value);
  });
  m.def("pad_backward", [](const py::array& dy, py::array& dx, i64 l, i64 r, i64 t, i64 b, int mode) {
    py_pad(true, dy, dx, l, r, t, b, mode, 0.0);
  });
  m.def("batch_norm_train", &py_bn_train);
  m.def("batch_norm_normalize", &py_bn_normalize);
  m.def("batch_norm_backward", &py_bn_backward);
  m.def("sgd_update", &py_sgd_update, py::arg("p"), py::arg("g"), py::arg("buf"), py::arg("lr"),
        py::arg("momentum"), py::arg("dampening"), py::arg("nesterov"), py::arg("mode"));
  m.def("adam_update", &py_adam_update, py::arg("p"), py::arg("g"), py::arg("m"), py::arg("v"),
        py::arg("vmax"), py::arg("decoupled"), py::arg("decay"), py::arg("w"), py::arg("far"),
        py::arg("beta2"), py::arg("rsbc2"), py::arg("eps"), py::arg("step_size"));
  m.def("linear_forward", &py_linear_forward);
  m.def("linear_backward", &py_linear_backward);
}
