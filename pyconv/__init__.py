"""pyconv: fast CPU building blocks for convolutional networks on NumPy arrays.

The compute core is C++ (OpenMP threads, SIMD GEMM micro-kernels chosen at
import from the CPU's features); this package is a thin NumPy layer over it
with PyTorch's names and semantics. See README.md.
"""
try:
    from . import _C  # noqa: F401  (the compiled core)
except ImportError as _err:
    # This is a source checkout without the compiled module, imported because
    # the checkout's root is on sys.path (``python -m pyconv`` or ``python -c``
    # run in the repository). Hand over to the installed package, or explain.
    from ._checkout import use_installed_package as _use_installed_package

    _use_installed_package(_err)
else:
    from ._api import *  # noqa: F401,F403
    from ._api import __all__, __version__  # noqa: F401
