"""Saving and loading models and checkpoints as plain ``.npz`` files (never pickle).

``save(obj, path)`` takes a Module (its state dict is saved) or a dict that
may nest further dicts, lists and tuples of arrays, numbers, strings, bools
and None — e.g. a checkpoint ``{'model': ..., 'optimizer': ..., 'epoch': 3}``.
Arrays go into the archive as ``.npy`` members; the structure and every
non-array leaf go into one JSON member, so ``np.load(..., allow_pickle=False)``
reads everything back and dict keys keep their types (the optimizer's integer
parameter indices stay ints).

The write is atomic: the archive goes to a temporary file in the target's
directory, is flushed and fsync'ed, and only then renamed over the target, so
a crash or a kill in the middle of a save leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

__all__ = ["save", "load", "CheckpointError"]

_META = "__pyconv_meta__"
_FORMAT = 1


class CheckpointError(ValueError):
    """A file that is not a loadable pyconv archive (pickled, truncated, corrupt or incomplete)."""


def _encode(obj, arrays: dict, where: str):
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        arr = np.asarray(obj)
        if arr.dtype.kind not in "biufcSU":
            raise TypeError(f"save: {where} has dtype {arr.dtype}, which cannot be stored without pickle")
        key = f"a{len(arrays)}"
        arrays[key] = np.ascontiguousarray(arr) if arr.ndim else arr
        return {"__array__": key, "scalar": isinstance(obj, np.generic)}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return {"__float__": repr(obj)}  # keeps nan / inf exact and standard JSON
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"save: {where} has a key of type {type(k).__name__}; "
                                "only str and int keys can be saved")
            items.append([k, _encode(v, arrays, f"{where}[{k!r}]")])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(obj)]
    if hasattr(obj, "detach") and hasattr(obj, "numpy"):  # a CPU torch tensor
        return _encode(obj.detach().cpu().numpy(), arrays, where)
    raise TypeError(f"save: cannot store {where} of type {type(obj).__name__} "
                    "(arrays, numbers, str, bool, None, and dicts / lists / tuples of them)")


def _decode(node, arrays, path: str):
    if isinstance(node, list):
        return [_decode(v, arrays, path) for v in node]
    if not isinstance(node, dict):
        return node
    if "__array__" in node:
        key = node["__array__"]
        if key not in arrays:
            raise CheckpointError(f"load: {path} is missing array member {key!r}")
        a = arrays[key]
        return a[()] if node.get("scalar") else a
    if "__float__" in node:
        return float(node["__float__"])
    if "__tuple__" in node:
        return tuple(_decode(v, arrays, path) for v in node["__tuple__"])
    if "__dict__" in node:
        return {k: _decode(v, arrays, path) for k, v in node["__dict__"]}
    raise CheckpointError(f"load: {path} has an unknown entry {sorted(node)!r}")


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save(obj: Any, path) -> str:
    """Save a Module's state dict, or a (nested) dict of arrays and plain values, to ``path``.

    The file is a standard ``.npz`` written atomically (temporary file, fsync,
    rename). The path is used exactly as given. Returns the path.
    """
    from .nn.module import Module  # local import: nn imports functional, not io

    if isinstance(obj, Module):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise TypeError(f"save: expected a Module or a dict, got {type(obj).__name__}")
    path = os.fspath(path)
    arrays: dict = {}
    tree = _encode(obj, arrays, "obj")
    meta = json.dumps({"format": _FORMAT, "tree": tree})
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + "-",
                               suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **{_META: np.array(meta)}, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


def load(path) -> Any:
    """Load what :func:`save` wrote (or any pickle-free ``.npz``, as a dict of arrays).

    Raises FileNotFoundError for a missing file and :class:`CheckpointError`
    (a ValueError) for pickles, truncated or corrupt files and incomplete
    archives.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file {path!r}")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise CheckpointError(f"load: {path!r} is a bare .npy array, not a pyconv archive")
            arrays = {k: z[k] for k in z.files}  # reads every member: CRCs are checked here
    except CheckpointError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"load: {path!r} contains pickled data, which pyconv never "
                                  "loads (it can run arbitrary code)") from None
        raise CheckpointError(f"load: {path!r} is not a valid .npz archive ({e})") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as e:
        raise CheckpointError(f"load: {path!r} is truncated or corrupt "
                              f"({type(e).__name__}: {e})") from None
    if _META not in arrays:
        return OrderedDict(arrays)
    try:
        meta = json.loads(str(arrays.pop(_META)[()]))
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"load: {path!r} has an unreadable metadata member ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise CheckpointError(f"load: {path!r} has unsupported format {meta.get('format')!r}")
    out = _decode(meta["tree"], arrays, repr(path))
    return OrderedDict(out) if isinstance(out, dict) else out
