"""Fixtures shared by the test modules."""
import pytest

import pyconv


@pytest.fixture(params=pyconv.supported_isas())
def isa(request):
    """Run the test with each micro-kernel ISA this CPU supports, then restore."""
    old = pyconv.get_isa()
    pyconv.set_isa(request.param)
    try:
        yield request.param
    finally:
        pyconv.set_isa(old)


@pytest.fixture
def restore_threads():
    """Restore pyconv's thread count after the test."""
    old = pyconv.get_num_threads()
    try:
        yield old
    finally:
        pyconv.set_num_threads(old)
