"""Figures and HTML report: time to draw each figure at the paper's sizes, report size.

Figures, not timed tests. Run with ``python benchmarks/run.py report``.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from idvae.report import (
    Figure,
    Section,
    Table,
    heatmap_figure,
    image_grid_figure,
    interleave_images,
    latent_grid_figure,
    profiles_figure,
    training_curves_figure,
    write_html_report,
)


def _timed(build, repeats: int = 3) -> tuple[float, bytes]:
    best, png = float("inf"), b""
    for _ in range(repeats):
        start = time.perf_counter()
        png = build()
        best = min(best, time.perf_counter() - start)
    return best, png


def run() -> dict:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    figures: dict = {}
    pngs: dict[str, bytes] = {}

    # Fig. 2 / 5-7: 5 runs of 5,000 points, m = 2, aligned to the truth.
    z = rng.normal(size=(5000, 2))
    labels = rng.integers(0, 3, size=5000)
    runs = [z @ rng.normal(size=(2, 2)) + rng.normal(size=2) for _ in range(5)]
    # Table 3 scale: 10 runs of 70,000 MNIST latents, m = 5, 25 clusters.
    z5 = rng.normal(size=(70_000, 5))
    runs5 = [z5 @ rng.normal(size=(5, 5)) for _ in range(10)]
    labels5 = rng.integers(0, 25, size=70_000)
    grid = np.linspace(-2, 2, 401)
    profiles = [
        {"grid": grid, "nll": (grid - t) ** 2 * (grid + 1) ** 2, "truth": t}
        for t in (0.3, -0.5, 1.0)
    ]
    history = [[{"epoch": e, "loss": 100 / (e + 1) + r} for e in range(35)] for r in range(10)]
    cases = {
        "latent_grid_5x5000_m2": lambda: latent_grid_figure(runs, labels=labels, reference=z),
        "latent_grid_10x70000_m5": lambda: latent_grid_figure(runs5, labels=labels5),
        "heatmap_10x10": lambda: heatmap_figure(rng.uniform(size=(10, 10)), title="weak MCC"),
        "profiles_3": lambda: profiles_figure(profiles),
        "image_grid_25x10_mnist": lambda: image_grid_figure(
            rng.uniform(size=(250, 784)), n_cols=10, row_labels=[str(k) for k in range(25)]
        ),
        "reconstructions_25x4_pairs": lambda: image_grid_figure(
            interleave_images(rng.uniform(size=(100, 784)), rng.uniform(size=(100, 784))),
            n_cols=8,
        ),
        "training_curves_10_runs": lambda: training_curves_figure(history),
    }
    for name, build in cases.items():
        seconds, png = _timed(build)
        figures[f"{name}_s"] = round(seconds, 3)
        figures[f"{name}_png_kib"] = round(len(png) / 1024, 1)
        pngs[name] = png

    table = Table(["dataset", "ours", "paper"], [[f"#{i}", 0.99, "0.99"] for i in range(3)])
    sections = [
        Section(name, tables=[table], figures=[Figure(png, name)]) for name, png in pngs.items()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = write_html_report(Path(tmp) / "report.html", title="bench", sections=sections)
        figures["html_write_s"] = round(time.perf_counter() - start, 3)
        figures["html_report_kib"] = round(path.stat().st_size / 1024, 1)
    return figures
