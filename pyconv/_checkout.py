"""Fallback for a source checkout that shadows the installed pyconv.

``python -m pyconv`` (or ``python -c "import pyconv"``) run in the repository
root puts the root first on ``sys.path``, so the uncompiled ``pyconv/`` folder
would hide the installed package, whose ``_C`` extension it lacks. This module
finds the installed package elsewhere on ``sys.path`` and puts it in
``sys.modules`` in place of the checkout's (the import system then returns it),
or raises an ImportError that says what to do.
"""
import importlib.machinery
import importlib.util
import os
import sys


def use_installed_package(err: ImportError) -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    paths = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec("pyconv", paths)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if spec is None or not locations or os.path.abspath(locations[0]) == here:
        raise ImportError(
            "pyconv's compiled core (pyconv._C) is missing: this is a source checkout that is "
            "not built. Install it with `pip install .` (see README.md); then run Python from "
            "any folder.") from err
    module = importlib.util.module_from_spec(spec)
    sys.modules["pyconv"] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop("pyconv", None)
        raise
