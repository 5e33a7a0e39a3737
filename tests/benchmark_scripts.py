"""The scripts of ``benchmarks/`` as modules, for the tests that check their functions or
read their constants and results."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_module(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported (once) with its folder on the path, since the
    scripts import each other."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    module = importlib.import_module(name)
    if Path(module.__file__).resolve().parent != BENCHMARKS:
        raise ImportError(f"Expected {name} from {BENCHMARKS} but got {module.__file__}")
    return module
