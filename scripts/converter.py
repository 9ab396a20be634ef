#!/usr/bin/env python
"""lightx2v-compatible weight converter: ``python scripts/converter.py -s EXPORT -o OUT -d backward``.

A thin entry point; the work is done by :mod:`vidquant.export.converter`.
"""

import sys
from pathlib import Path

try:
    from vidquant.export.converter import main
except ModuleNotFoundError:  # a checkout without `pip install -e .`: use the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
    from vidquant.export.converter import main

if __name__ == "__main__":
    sys.exit(main())
