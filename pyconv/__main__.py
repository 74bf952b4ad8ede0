"""The ``pyconv`` command (console script ``pyconv = pyconv.__main__:main``).

    pyconv [demo options]  the main job: train a CNN on the bundled digits and
                           report accuracy, plots and speed (``pyconv --help``)
    pyconv demo [...]      the same, by name
    pyconv bench [...]     the benchmark suite, same options as ``python -m pyconv.bench``
    pyconv info            print pyconv.config()

To add a subcommand, write ``_cmd_<name>(argv) -> int`` and register it in
``COMMANDS``; to change what a bare ``pyconv`` does, point ``DEFAULT`` at
another handler.
"""
from __future__ import annotations

import json
import sys
from typing import Callable, Dict, List, Optional, Sequence, Tuple

Handler = Callable[[List[str]], int]


def _cmd_bench(argv: List[str]) -> int:
    from .bench.runner import main as bench_main

    return bench_main(argv, prog="pyconv bench")


def _cmd_info(argv: List[str]) -> int:
    import pyconv

    if argv and argv[0] in ("-h", "--help"):
        print("usage: pyconv info\n\nPrint pyconv.config() as JSON.")
        return 0
    print(json.dumps(pyconv.config(), indent=2))
    return 0


def _cmd_demo(argv: List[str]) -> int:
    from .demo import main as demo_main

    return demo_main(argv)


# name -> (one-line help, handler taking the remaining argv)
COMMANDS: Dict[str, Tuple[str, Handler]] = {
    "demo": ("train a small CNN on the bundled 8x8 digits: accuracy, per-class report, PNGs, "
             "speed (the default; see `pyconv demo --help`)", _cmd_demo),
    "bench": ("check and time conv2d, GEMM and the memory-bound ops against torch and NumPy "
              "(see `pyconv bench --help`)",
              _cmd_bench),
    "info": ("print pyconv.config(): ISA, kernels, threads, build", _cmd_info),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: pyconv [COMMAND] [ARGS...]", "", "commands:"]
    lines += [f"  {n:<{width}}  {h}" for n, (h, _) in COMMANDS.items()]
    lines += ["", "With no command (or only options), runs `demo`."]
    return "\n".join(lines)


def _cmd_default(argv: List[str]) -> int:
    """Placeholder default action: configuration plus the available subcommands."""
    import pyconv

    cfg = pyconv.config()
    k = cfg["sgemm_kernel"]
    print(f"pyconv {cfg['version']}: isa {cfg['isa']} (supported {', '.join(cfg['supported_isas'])}), "
          f"{cfg['num_threads']} threads, sgemm {k['name']}, {cfg['compiler']}")
    print(json.dumps(cfg, indent=2))
    print()
    print(_usage())
    return 0


DEFAULT: Handler = _cmd_demo


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or (args[0].startswith("-") and args[0] not in ("-h", "--help")):
        return DEFAULT(args)
    head, rest = args[0], args[1:]
    if head in ("-h", "--help", "help"):
        print(_usage())
        print()
        return DEFAULT(["--help"])
    if head in COMMANDS:
        return COMMANDS[head][1](rest)
    print(f"pyconv: unknown command {head!r}\n", file=sys.stderr)
    print(_usage(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
