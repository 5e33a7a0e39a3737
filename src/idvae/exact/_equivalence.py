"""Equivalence of toy models up to the symmetries of Sec. 2, distances, injectivity."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from idvae.exact._model import ToyModel, affine_pieces, log_ndtr_diff, mass_interval


# ---------------------------------------------------------------------------------------
# equivalence up to the model's symmetries
# ---------------------------------------------------------------------------------------
def decoder_function(
    alpha: np.ndarray, beta: np.ndarray, bias: np.ndarray, tol: float
) -> tuple[float, float, list[tuple[float, float]]]:
    """f as a function: f(z) = const + slope z + sum_k jump_k ReLU(z - kink_k), unique.

    Uses ReLU(b (z - k)) = b ReLU(z - k) for b > 0 and |b| (ReLU(z - k) - (z - k)) for b < 0
    (positive homogeneity of ReLU); equal kinks are merged and zero jumps dropped.
    """
    const, slope = 0.0, 0.0
    jumps: dict[float, float] = {}
    for a, b, c in zip(alpha, beta, bias, strict=True):
        if b == 0:
            const += a * max(c, 0.0)  # a constant neuron
            continue
        k = -c / b
        jumps[k] = jumps.get(k, 0.0) + a * abs(b)
        if b < 0:
            slope -= a * abs(b)
            const += a * abs(b) * k
    merged: list[list[float]] = []
    for k in sorted(jumps):
        if merged and abs(k - merged[-1][0]) <= tol:
            merged[-1][1] += jumps[k]
        else:
            merged.append([k, jumps[k]])
    scale = max([1.0, abs(slope)] + [abs(d) for _, d in merged])
    kept = [(k, d) for k, d in merged if abs(d) > tol * scale]
    return const, slope, kept


def canonical_form(model: ToyModel, *, sign: int = 1, tol: float = 1e-9) -> dict[str, Any]:
    """A representative of the model's class under the symmetries of Sec. 2 / App. J.3.1.

    The affine map h(z) = sign (z - m) / S, with m and S the mean and standard deviation of
    Z, standardises the prior (P' = h#P, f' = f o h^{-1}, Definition 2.1); then the prior is
    described as a distribution (zero weights dropped, identical components merged, sorted)
    and f as a function (``decoder_function``), which removes permutations of components and
    neurons, positive rescalings alpha_i <-> (beta_i, pi_i) and inactive neurons. ``sign``
    chooses the orientation; two models are equivalent iff the form of one equals the form
    of the other for sign = +1 or -1.

    Returns:
        dict with ``prior``: list of (weight, mean, std) and ``decoder``:
        (const, slope, [(kink, jump), ...]).
    """
    if model.is_batched:
        raise ValueError("Expected an unbatched ToyModel but got a batch")
    if sign not in (1, -1):
        raise ValueError(f"Expected sign +1 or -1 but got {sign}")
    w, mu, s = model.weights, model.means, model.stds
    mean = float(w @ mu)
    scale = math.sqrt(float(w @ (s**2 + (mu - mean) ** 2)))
    comps: list[list[float]] = []
    for wj, mj, sj in sorted(
        zip(w, sign * (mu - mean) / scale, s / scale, strict=True), key=lambda t: (t[1], t[2])
    ):
        if wj <= tol:
            continue
        if comps and abs(mj - comps[-1][1]) <= tol and abs(sj - comps[-1][2]) <= tol:
            comps[-1][0] += wj
        else:
            comps.append([float(wj), float(mj), float(sj)])
    # z = mean + sign * scale * z'  =>  beta z + pi = (sign scale beta) z' + (pi + beta mean)
    decoder = decoder_function(
        model.alpha, sign * scale * model.beta, model.bias + model.beta * mean, tol
    )
    return {"prior": [tuple(c) for c in comps], "decoder": decoder}


def _eval_decoder(
    form: tuple[float, float, list[tuple[float, float]]], z: np.ndarray
) -> np.ndarray:
    const, slope, kinks = form
    out = const + slope * z
    for k, d in kinks:
        out = out + d * np.maximum(z - k, 0.0)
    return out


def _forms_close(a: dict[str, Any], b: dict[str, Any], tol: float) -> bool:
    if not _priors_close(a, b, tol):
        return False
    (ca, la, ka), (cb, lb, kb) = a["decoder"], b["decoder"]
    if len(ka) != len(kb) or abs(ca - cb) > tol * max(1, abs(ca)) or abs(la - lb) > tol:
        return False
    return all(
        abs(k1 - k2) <= tol * max(1.0, abs(k1)) and abs(d1 - d2) <= tol * max(1.0, abs(d1))
        for (k1, d1), (k2, d2) in zip(ka, kb, strict=True)
    )


def _priors_close(a: dict[str, Any], b: dict[str, Any], tol: float) -> bool:
    return len(a["prior"]) == len(b["prior"]) and np.allclose(
        np.array(a["prior"]), np.array(b["prior"]), rtol=0, atol=tol
    )


def equivalent(a: ToyModel, b: ToyModel, tol: float = 1e-6) -> bool:
    """Whether two toy models are the same up to the model's symmetries.

    (P, f) ~ (P', f') iff there is an invertible affine h with P' = h#P and f' = f o h^{-1}
    (Definition 2.1) and equal noise. Component/neuron permutations, zero weights, merged
    identical components, positive rescaling of ReLU units and inactive neurons are all
    absorbed by ``canonical_form``. Equivalent models have equal densities; the converse is
    the identifiability the paper proves (and that ``grid_search`` probes).

    Args:
        a, b: unbatched ToyModels.
        tol: absolute tolerance on the canonical parameters.
    """
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    if abs(float(a.noise_std) - float(b.noise_std)) > tol:
        return False
    form_a = canonical_form(a, tol=tol * 1e-3)
    return any(
        _forms_close(form_a, canonical_form(b, sign=sgn, tol=tol * 1e-3), tol) for sgn in (1, -1)
    )


def disagreement_mass(a: ToyModel, b: ToyModel, tol: float = 1e-6) -> float:
    """How far two models are from equivalent, as prior probability.

    1.0 when no affine map of z matches their priors (or their noise differs); otherwise,
    after that map, the probability under the prior of {z : f_a(z) != f_b(z)} (the smaller
    of the two orientations). 0.0 iff ``equivalent(a, b)``. Models that disagree only on a
    set of prior mass eps have a KL divergence of order eps^2, so mass below ~1e-5 is beyond
    what a float64 likelihood resolves: such ties in a grid search are numerical, not a
    failure of identifiability.
    """
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    if abs(float(a.noise_std) - float(b.noise_std)) > tol:
        return 1.0
    form_a = canonical_form(a, tol=tol * 1e-3)
    best = 1.0
    for sgn in (1, -1):
        form_b = canonical_form(b, sign=sgn, tol=tol * 1e-3)
        if not _priors_close(form_a, form_b, tol):
            continue
        kinks = np.unique([k for k, _ in form_a["decoder"][2] + form_b["decoder"][2]])
        edges = np.concatenate([[-np.inf], kinks, [np.inf]])
        probes = np.concatenate([[kinks[0] - 1.0] if kinks.size else [-1.0], kinks])
        probes = np.concatenate([probes, [kinks[-1] + 1.0] if kinks.size else [1.0]])
        fa, fb = _eval_decoder(form_a["decoder"], probes), _eval_decoder(form_b["decoder"], probes)
        agree = np.abs(fa - fb) <= tol * np.maximum(1.0, np.abs(fa))
        if not kinks.size:
            agree_piece = np.array([agree.all()])
        else:  # both are affine between consecutive probes: agreement at both ends suffices
            agree_piece = agree[:-1] & agree[1:]
        prior = np.array(form_a["prior"])  # (weight, mean, std)
        std_edges = (edges[None, :] - prior[:, 1:2]) / prior[:, 2:3]
        piece_mass = prior[:, :1] * np.exp(log_ndtr_diff(std_edges[:, :-1], std_edges[:, 1:]))
        mass = float(np.sum(piece_mass[:, ~agree_piece]))
        best = min(best, mass)
    return best


def tie_total_variation(truth: ToyModel, models: list[ToyModel], chunk: int = 64) -> np.ndarray:
    """``total_variation`` of each model to the truth, batched; shape (n_models,)."""
    if not models:
        return np.empty(0)
    batch = ToyModel.stack(models)
    lo9, hi9 = mass_interval(batch, 9.0)
    t_lo9, t_hi9 = mass_interval(truth, 9.0)
    step = min(float(truth.noise_std), float(batch.noise_std.min())) / 4
    fine = np.arange(min(lo9.min(), t_lo9[0]), max(hi9.max(), t_hi9[0]) + step, step)
    p_truth = truth.pdf(fine)
    tvs = [
        0.5 * step * np.abs(ToyModel.stack(models[i : i + chunk]).pdf(fine) - p_truth).sum(1)
        for i in range(0, len(models), chunk)
    ]
    return np.concatenate(tvs)


def max_log_density_gap(a: ToyModel, b: ToyModel, cutoff: float = 30.0) -> float:
    """max_x |log p_a - log p_b| / max(1, |log p_a|) over a wide range (tails included)."""
    lo_a, hi_a = mass_interval(a, cutoff)
    lo_b, hi_b = mass_interval(b, cutoff)
    x = np.linspace(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()), 4001)
    la, lb = a.logpdf(x), b.logpdf(x)
    return float(np.max(np.abs(la - lb) / np.maximum(1.0, np.abs(la))))


def total_variation(a: ToyModel, b: ToyModel) -> float:
    """The total variation distance 1/2 int |p_a - p_b| dx, by quadrature of closed forms."""
    if a.is_batched or b.is_batched:
        raise ValueError("Expected two unbatched ToyModels")
    lo_a, hi_a = mass_interval(a, 9.0)
    lo_b, hi_b = mass_interval(b, 9.0)
    step = min(float(a.noise_std), float(b.noise_std)) / 4
    x = np.arange(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()) + step, step)
    return float(0.5 * step * np.sum(np.abs(a.pdf(x) - b.pdf(x))))


def density_distance(a: ToyModel, b: ToyModel, *, n_points: int = 2001) -> float:
    """max_x |p_a(x) - p_b(x)| on a uniform grid covering both densities."""
    lo_a, hi_a = mass_interval(a, 9.0)
    lo_b, hi_b = mass_interval(b, 9.0)
    x = np.linspace(min(lo_a.min(), lo_b.min()), max(hi_a.max(), hi_b.max()), n_points)
    return float(np.max(np.abs(a.pdf(x) - b.pdf(x))))


def _bulk_interval(model: ToyModel, bulk: float) -> tuple[float, float]:
    """The hull of mean_j +- bulk * std_j over components of positive weight."""
    used = model.weights > 0
    return (
        float(np.min(model.means[used] - bulk * model.stds[used])),
        float(np.max(model.means[used] + bulk * model.stds[used])),
    )


def injectivity(model: ToyModel, *, bulk: float | None = None) -> str:
    """The strongest of (F4) / (F3) / (F2) of Definition 3.1 that the decoder f meets.

    Args:
        model: an unbatched ToyModel.
        bulk: if given, classify f restricted to the bulk of the prior (the hull of
            mean +- ``bulk`` std over components): a decoder whose only sloped piece lies
            10 standard deviations out is injective on R but constant where Z lives.

    Returns:
        One of ``"injective"``, ``"observably injective"``, ``"weakly injective"`` or
        ``"not weakly injective"`` (a constant f included). Decided exactly from the pieces.
    """
    if model.is_batched:
        raise ValueError("Expected an unbatched ToyModel but got a batch")
    interval = None if bulk is None else _bulk_interval(model, bulk)
    return decoder_injectivity(model.alpha, model.beta, model.bias, interval)


def decoder_injectivity(
    alpha: np.ndarray,
    beta: np.ndarray,
    bias: np.ndarray,
    interval: tuple[float, float] | None = None,
) -> str:
    """``injectivity`` of f = sum_i alpha_i ReLU(beta_i z + pi_i), on R or on an interval."""
    lower, upper, slope, intercept = (
        p[0] for p in affine_pieces(alpha[None], beta[None], bias[None])
    )
    if interval is not None:
        left, right = interval
        lower, upper = np.clip(lower, left, right), np.clip(upper, left, right)
    used = upper > lower
    lower, upper, slope, intercept = lower[used], upper[used], slope[used], intercept[used]
    sloped = slope != 0
    if not np.any(sloped):
        return "not weakly injective"
    with np.errstate(invalid="ignore"):
        ends = np.stack([slope * lower + intercept, slope * upper + intercept], 1)
    ends = np.where(np.isnan(ends), intercept[:, None], ends)  # 0 * inf on flat pieces
    images = np.sort(ends, axis=1)
    if sloped.all() and (np.all(slope > 0) or np.all(slope < 0)):
        return "injective"
    # multiplicity of values on the open intervals between image endpoints
    cuts = np.unique(images[np.isfinite(images)])
    if cuts.size == 0:
        cuts = np.zeros(1)
    probes = np.concatenate([[cuts[0] - 1.0], (cuts[:-1] + cuts[1:]) / 2, [cuts[-1] + 1.0]])
    counts = np.array([np.sum(sloped & (images[:, 0] < y) & (y < images[:, 1])) for y in probes])
    covered = counts > 0
    if np.all(counts[covered] == 1):
        return "observably injective"  # (F3); flat pieces only add measure-zero values
    if np.any(counts == 1):
        return "weakly injective"
    return "not weakly injective"
