"""Modes of a stability study: which runs found the same latent space, and which fit best.

Runs that agree with each other may share a wrong optimum: agreement is not recovery. This
module groups the runs of a study into *modes* and says, per mode, how well its runs fit
data none of them was trained on, so that a shared optimum can be told from the best one.

Definitions (v1):

* **Agreement** of runs i and j, and the **groups** of agreeing runs: see
  :mod:`idvae.experiments.agreement` (the symmetric affine weak MCC; single linkage at
  ``threshold``, default ``MODE_THRESHOLD`` = 0.95).
* **Modes**: those groups, each scored. Failed runs belong to no mode. Modes are ordered by
  size (largest first), then by best held-out ELBO, then by their first run; ``modes[0]``
  is "the largest mode".
* **Held-out ELBO** of a run: its estimator's ``score`` (mean ELBO per sample) on rows of
  X kept out of every run's fit (``idvae.stability(..., holdout=0.2)``). Comparable
  between runs because every run is scored on the same rows.
* A mode's **best run**: its member with the highest held-out ELBO (the run a user without
  the truth would pick); without held-out ELBOs, its first member.

Warnings (:class:`ModeWarning`), each a pure function of the modes and the scores:

* **agreement without the best ELBO**: the largest mode holds a majority of the runs
  (more than half), yet a run outside it reached a strictly higher held-out ELBO than every
  run inside it. The runs agree, but the objective prefers another start.
* **modes disagree**: more than one mode holds at least two runs, or no mode holds a
  majority.

Without the truth nothing here establishes recovery; :meth:`ModeReport.statements` says so.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from idvae._validation import RandomState
from idvae.experiments.agreement import (
    MODE_THRESHOLD,
    agreement_matrix,
    check_threshold,
    group_runs,
)

__all__ = [
    "Mode",
    "ModeReport",
    "ModeWarning",
    "find_modes",
    "mode_warnings",
    "warn_modes",
]

AGREEMENT_IS_NOT_RECOVERY = (
    "runs agree, but another start found a higher ELBO: agreement is not recovery"
)
MODES_DISAGREE = "modes disagree"
NO_TRUTH = (
    "the truth is not known here: agreement between runs does not establish recovery "
    "(runs can share a wrong optimum); compare the modes' held-out ELBO"
)


class ModeWarning(UserWarning):
    """The runs of a study agree while another start fits better, or they disagree."""


# --------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class Mode:
    """One group of runs whose latent spaces match up to an affine map.

    Attributes:
        index: 1-based rank of the mode (1: the largest).
        members: the run indices (0-based, as ``RunRecord.run_id``).
        heldout_elbo_mean: mean held-out ELBO of the members that have one, or None.
        heldout_elbo_max: the highest held-out ELBO among the members, or None.
        best_run: the member with the highest held-out ELBO (the first member without).
        weak_mcc_to_truth: weak MCC (affine) of ``best_run``'s latents to the truth, or None.
    """

    index: int
    members: tuple[int, ...]
    heldout_elbo_mean: float | None
    heldout_elbo_max: float | None
    best_run: int
    weak_mcc_to_truth: float | None = None

    @property
    def size(self) -> int:
        return len(self.members)

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "size": self.size,
            "members": list(self.members),
            "heldout_elbo_mean": self.heldout_elbo_mean,
            "heldout_elbo_max": self.heldout_elbo_max,
            "best_run": self.best_run,
            "weak_mcc_to_truth": self.weak_mcc_to_truth,
        }


@dataclass(frozen=True)
class ModeReport:
    """The modes of a study, the scores they are built from, and the warnings they raise.

    Attributes:
        modes: the modes, largest first.
        agreement: array of shape (n_runs, n_runs), the symmetric affine weak MCC.
        threshold: the agreement at which two runs are linked.
        heldout_elbo: per run, its held-out ELBO or None.
        weak_mcc_to_truth: per run, weak MCC (affine) of its latents to the truth or None;
            None as a whole when the truth is not known.
        warnings: the warning messages (see the module's docstring).
        heldout_note: why held-out ELBOs are missing, when they are.
        notes: pairs whose agreement could not be computed.
    """

    modes: tuple[Mode, ...]
    agreement: np.ndarray = field(repr=False)
    threshold: float = MODE_THRESHOLD
    heldout_elbo: tuple[float | None, ...] = ()
    weak_mcc_to_truth: tuple[float | None, ...] | None = None
    warnings: tuple[str, ...] = ()
    heldout_note: str | None = None
    notes: tuple[str, ...] = ()

    @property
    def n_grouped(self) -> int:
        """The runs in some mode (those with latents)."""
        return sum(m.size for m in self.modes)

    @property
    def has_truth(self) -> bool:
        return self.weak_mcc_to_truth is not None

    def mode_of(self, run_id: int) -> int | None:
        """The 1-based index of the mode holding ``run_id``, or None (a failed run)."""
        for mode in self.modes:
            if run_id in mode.members:
                return mode.index
        return None

    def statements(self) -> list[str]:
        """Plain sentences for a console or a report: the modes, warnings, and caveats."""
        n = self.n_grouped
        if not self.modes:
            return ["no run succeeded: there are no modes"]
        sizes = ", ".join(str(m.size) for m in self.modes)
        lines = [
            f"{n} runs fall into {len(self.modes)} mode{'s' if len(self.modes) != 1 else ''} "
            f"(sizes {sizes}; runs in one mode match up to an affine map, weak MCC ≥ "
            f"{self.threshold:g})"
        ]
        lines += [f"warning: {w}" for w in self.warnings]
        if self.heldout_note:
            lines.append(f"held-out ELBO not available: {self.heldout_note}")
        if self.has_truth:
            scored = [m for m in self.modes if m.weak_mcc_to_truth is not None]
            if scored:
                cells = ", ".join(
                    f"mode {m.index} {m.weak_mcc_to_truth:.3f} (run {m.best_run})" for m in scored
                )
                lines.append(f"weak MCC (affine) to the truth of each mode's best run: {cells}")
        else:
            lines.append(NO_TRUTH)
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "definition": "v1",
            "threshold": self.threshold,
            "linkage": "single",
            "modes": [m.to_dict() for m in self.modes],
            "heldout_elbo": list(self.heldout_elbo),
            "weak_mcc_to_truth": (
                None if self.weak_mcc_to_truth is None else list(self.weak_mcc_to_truth)
            ),
            "agreement": [[_finite_or_none(v) for v in row] for row in self.agreement],
            "warnings": list(self.warnings),
            "heldout_note": self.heldout_note,
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModeReport:
        """Rebuild a report from :meth:`to_dict`'s output."""
        modes = tuple(
            Mode(
                index=int(m["index"]),
                members=tuple(int(r) for r in m["members"]),
                heldout_elbo_mean=m.get("heldout_elbo_mean"),
                heldout_elbo_max=m.get("heldout_elbo_max"),
                best_run=int(m["best_run"]),
                weak_mcc_to_truth=m.get("weak_mcc_to_truth"),
            )
            for m in data.get("modes", [])
        )
        agreement = np.array(
            [[np.nan if v is None else v for v in row] for row in data.get("agreement", [])],
            dtype=np.float64,
        )
        truth = data.get("weak_mcc_to_truth")
        return cls(
            modes=modes,
            agreement=agreement,
            threshold=float(data.get("threshold", MODE_THRESHOLD)),
            heldout_elbo=tuple(data.get("heldout_elbo", ())),
            weak_mcc_to_truth=None if truth is None else tuple(truth),
            warnings=tuple(data.get("warnings", ())),
            heldout_note=data.get("heldout_note"),
            notes=tuple(data.get("notes", ())),
        )

    def rows(self) -> list[dict[str, Any]]:
        """Long-format rows (``scope="mode"``, one per mode and score) for a results CSV."""
        rows: list[dict[str, Any]] = []
        for m in self.modes:
            members = " ".join(str(r) for r in m.members)
            for metric, value in (
                ("size", m.size),
                ("heldout_elbo_mean", m.heldout_elbo_mean),
                ("heldout_elbo_max", m.heldout_elbo_max),
                ("best_run", m.best_run),
                ("weak_mcc_to_truth_best_run", m.weak_mcc_to_truth),
            ):
                if value is not None:
                    rows.append(
                        {"scope": "mode", "mode": m.index, "metric": metric, "value": value,
                         "n": m.size, "status": f"runs {members}"}
                    )  # fmt: skip
        for message in self.warnings:
            rows.append({"scope": "mode_warning", "metric": "warning", "status": message})
        return rows

    def table(self, title: str | None = None) -> Any:
        """A ``rich.table.Table`` of the modes: size, runs, held-out ELBO, MCC to truth."""
        from rich.table import Table

        caption = (
            f"runs in one mode match up to an affine map (weak MCC ≥ {self.threshold:g}, "
            "single linkage); ELBO: mean per sample on rows no run was fitted on"
        )
        table = Table(title=title or "Modes", caption=caption)
        table.add_column("mode", justify="right")
        table.add_column("size", justify="right")
        table.add_column("runs")
        table.add_column("held-out ELBO mean", justify="right")
        table.add_column("max", justify="right")
        table.add_column("best run", justify="right")
        if self.has_truth:
            table.add_column("weak MCC (affine) of best run to truth", justify="right")
        for m in self.modes:
            cells = [
                str(m.index),
                str(m.size),
                " ".join(str(r) for r in m.members),
                _fmt(m.heldout_elbo_mean),
                _fmt(m.heldout_elbo_max),
                str(m.best_run),
            ]
            if self.has_truth:
                cells.append(_fmt(m.weak_mcc_to_truth))
            table.add_row(*cells)
        return table


def _fmt(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _finite(values: Sequence[float | None] | None, n: int, name: str) -> list[float | None]:
    if values is None:
        return [None] * n
    if len(values) != n:
        raise ValueError(f"Expected {name} with {n} entries (one per run) but got {len(values)}")
    return [float(v) if v is not None and math.isfinite(float(v)) else None for v in values]


def find_modes(
    latents: Sequence[np.ndarray | None],
    heldout_elbo: Sequence[float | None] | None = None,
    *,
    weak_mcc_to_truth: Sequence[float | None] | None = None,
    threshold: float = MODE_THRESHOLD,
    random_state: RandomState = 0,
    heldout_note: str | None = None,
    agreement: Any = None,
) -> ModeReport:
    """Group runs into modes, score each mode, and decide the warnings (no training).

    Args:
        latents: per run, an array of shape (n_samples, latent_dim) of the same samples, or
            None for a failed run.
        heldout_elbo: per run, its held-out ELBO (mean per sample) or None.
        weak_mcc_to_truth: per run, weak MCC (affine) of its latents to the true latents,
            or None as a whole when the truth is not known.
        threshold: agreement at which two runs are in one mode, in (0, 1].
        random_state: seeds the out-of-sample split of the agreement MCCs.
        heldout_note: why there are no held-out ELBOs (shown with the modes).
        agreement: a precomputed agreement matrix of shape (n_runs, n_runs) (skips the MCCs).

    Returns:
        A :class:`ModeReport`; its ``warnings`` are not issued (see :func:`warn_modes`).

    Example:
        >>> import numpy as np
        >>> z = np.random.default_rng(0).normal(size=(500, 2))
        >>> report = find_modes([z, 2 * z + 1, z ** 3], [-3.0, -3.1, -2.5])
        >>> [m.members for m in report.modes]
        [(0, 1), (2,)]
    """
    n_runs = len(latents)
    threshold = check_threshold(threshold)
    elbo = _finite(heldout_elbo, n_runs, "heldout_elbo")
    truth = (
        None
        if weak_mcc_to_truth is None
        else _finite(weak_mcc_to_truth, n_runs, "weak_mcc_to_truth")
    )
    notes: list[str] = []
    if agreement is None:
        matrix = agreement_matrix(latents, random_state=random_state, notes=notes)
    else:
        matrix = np.array(agreement, dtype=np.float64)
        if matrix.shape != (n_runs, n_runs):
            raise ValueError(
                f"Expected agreement of shape ({n_runs}, {n_runs}) but got {matrix.shape}"
            )
        missing = [i for i, z in enumerate(latents) if z is None]
        matrix[missing, :] = matrix[:, missing] = np.nan  # a failed run is in no mode
    groups = group_runs(matrix, threshold)
    modes = [_score_mode(group, elbo, truth) for group in groups]
    modes.sort(key=lambda m: (-m.size, -_or_inf(m.heldout_elbo_max), m.members[0]))
    modes = [
        Mode(i + 1, m.members, m.heldout_elbo_mean, m.heldout_elbo_max, m.best_run,
             m.weak_mcc_to_truth)
        for i, m in enumerate(modes)
    ]  # fmt: skip
    if heldout_note is None and modes and all(v is None for v in elbo):
        heldout_note = "no run has a held-out ELBO"
    return ModeReport(
        modes=tuple(modes),
        agreement=matrix,
        threshold=threshold,
        heldout_elbo=tuple(elbo),
        weak_mcc_to_truth=None if truth is None else tuple(truth),
        warnings=tuple(mode_warnings(modes, elbo)),
        heldout_note=heldout_note,
        notes=tuple(notes),
    )


def _or_inf(value: float | None) -> float:
    return -math.inf if value is None else value


def _score_mode(
    members: Sequence[int], elbo: Sequence[float | None], truth: Sequence[float | None] | None
) -> Mode:
    scored = [(elbo[i], i) for i in members if elbo[i] is not None]
    best = max(scored, key=lambda pair: (pair[0], -pair[1]))[1] if scored else members[0]
    values = [v for v, _ in scored]
    return Mode(
        index=0,
        members=tuple(members),
        heldout_elbo_mean=float(np.mean(values)) if values else None,
        heldout_elbo_max=max(values) if values else None,
        best_run=best,
        weak_mcc_to_truth=None if truth is None else truth[best],
    )


def mode_warnings(modes: Sequence[Mode], heldout_elbo: Sequence[float | None]) -> list[str]:
    """The warning messages the modes raise (see the module's docstring for the rules).

    Args:
        modes: the modes, largest first (as :func:`find_modes` orders them).
        heldout_elbo: per run, its held-out ELBO or None.
    """
    if not modes:
        return []
    n = sum(m.size for m in modes)
    largest = modes[0]
    messages = []
    majority = largest.size > n / 2
    if majority and largest.heldout_elbo_max is not None:
        outside = [
            (heldout_elbo[i], i)
            for m in modes[1:]
            for i in m.members
            if heldout_elbo[i] is not None and heldout_elbo[i] > largest.heldout_elbo_max
        ]
        if outside:
            value, run = max(outside)
            messages.append(
                f"{AGREEMENT_IS_NOT_RECOVERY} (mode 1 holds {largest.size} of {n} runs, its "
                f"best held-out ELBO is {largest.heldout_elbo_max:.4g}; run {run}, outside "
                f"it, reached {value:.4g})"
            )
    shared = [m for m in modes if m.size >= 2]
    why = []
    if len(shared) > 1:
        why.append(f"{len(shared)} modes hold two runs or more")
    if not majority:
        why.append(f"no mode holds a majority of the {n} runs")
    if why:
        sizes = ", ".join(str(m.size) for m in modes)
        messages.append(f"{MODES_DISAGREE}: {'; '.join(why)} (mode sizes {sizes})")
    return messages


def warn_modes(report: ModeReport, stacklevel: int = 2) -> None:
    """Issue each of the report's warnings as a :class:`ModeWarning`."""
    for message in report.warnings:
        warnings.warn(message, ModeWarning, stacklevel=stacklevel + 1)
