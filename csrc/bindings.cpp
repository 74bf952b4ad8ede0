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
#include "ops/conv2d.h"

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
  return d;
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
  m.def("get_num_threads", &get_num_threads);
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
  m.def("conv2d_forward", &py_conv2d_forward, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("y"),
        py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"), py::arg("dh"), py::arg("dw"),
        py::arg("groups"));
  m.def("conv2d_backward_data", &py_conv2d_backward_data, py::arg("dy"), py::arg("w"), py::arg("dx"),
        py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"), py::arg("dh"), py::arg("dw"),
        py::arg("groups"));
  m.def("conv2d_backward_weight", &py_conv2d_backward_weight, py::arg("dy"), py::arg("x"),
        py::arg("dw"), py::arg("db"), py::arg("sh"), py::arg("sw"), py::arg("pt"), py::arg("pl"),
        py::arg("dh"), py::arg("dwl"), py::arg("groups"));
}
