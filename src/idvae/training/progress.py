"""The progress display of a phase (a rich bar on stderr, only when verbose > 0)."""

from __future__ import annotations

from typing import Any

__all__ = ["Progress"]


class Progress:
    """A rich progress bar over the steps of each epoch (only when verbose > 0)."""

    def __init__(self, verbose: int, phase: str, epochs: int, steps: int) -> None:
        self.bar = None
        if verbose <= 0:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self.phase, self.epochs, self.steps = phase, epochs, steps
        self.bar.start()
        self.task = self.bar.add_task(phase, total=steps)

    def epoch_start(self, epoch: int) -> None:
        if self.bar is not None:
            self.bar.reset(self.task, total=self.steps)
            self.bar.update(self.task, description=f"{self.phase} {epoch}/{self.epochs}")

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def epoch_end(self, epoch: int, record: dict[str, Any]) -> None:
        if self.bar is not None:
            terms = " ".join(
                f"{k}={v:.4g}"
                for k, v in record.items()
                if k not in ("phase", "epoch", "time_s", "lr", "min_weight")
                and isinstance(v, float)
            )
            self.bar.update(self.task, description=f"{self.phase} {epoch}/{self.epochs} {terms}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
