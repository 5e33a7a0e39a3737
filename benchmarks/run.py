"""Run every ``benchmarks/bench_*.py`` and merge their figures into ``results.json``.

Each benchmark module exposes ``run() -> dict`` (name -> measured figures). Usage:
``python benchmarks/run.py [name ...]`` runs only the named modules (e.g. ``metrics``).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"


def main(names: list[str]) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    files = sorted(HERE.glob("bench_*.py"))
    if names:
        files = [f for f in files if f.stem.removeprefix("bench_") in names]
    for file in files:
        spec = importlib.util.spec_from_file_location(file.stem, file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        start = time.perf_counter()
        print(f"== {file.stem}", flush=True)
        figures = module.run()
        results[file.stem.removeprefix("bench_")] = {
            "figures": figures,
            "wall_s": round(time.perf_counter() - start, 2),
            "date": time.strftime("%Y-%m-%d"),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} torch threads, "
            f"python {platform.python_version()}, torch {torch.__version__}",
        }
        print(json.dumps(figures, indent=2), flush=True)
        tmp = RESULTS.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        tmp.replace(RESULTS)


if __name__ == "__main__":
    main(sys.argv[1:])
