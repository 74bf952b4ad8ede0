"""``python -m pyconv.bench [options]``: the benchmark CLI (see ``--help``)."""
import sys

from .runner import main

if __name__ == "__main__":
    sys.exit(main())
