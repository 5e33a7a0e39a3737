"""Three candidate searches for the truth's basin, probed on the simulator's seeds 0-9.

The eighth round of docs/recovery_levers.md found that VaDE's defaults miss the truth mostly
because no start reaches its basin. Each probe here asks whether a cheap signal could guide a
search there, before any of it is built into the estimator:

* ``ltsa``: the alignment cost of local tangent space alignment (LTSA). For a piecewise-
  affine decoder without noise the true z is affine in the local tangent coordinates of x
  everywhere, so its cost is zero; does the cost, with the data's noise, rank the true
  model's posterior mean E[z | x] below wrong latents? Candidates: E[z | x]; three
  re-arrangements of it (a random affine map per true component); PCA; Isomap; Laplacian
  eigenmaps; LTSA's own embedding (scikit-learn's, the cost's bottom eigenvectors). Each is
  whitened by its pooled within-component covariance (true labels)
  before its cost tr(Z' B Z) / n is taken, so no candidate gains by shrinking.
* ``flow``: are the defaults' latent codes non-Gaussian inside the clusters, in a way that
  a map of the latent alone could undo? A mixture of full-covariance Gaussians pushed
  through an invertible piecewise-affine flow (LeakyReLU layers, learned negative slopes)
  is fitted by maximum likelihood to the standardised codes of one default fit, best of
  four restarts, beside a plain ``GaussianMixture``: the gain in nats per point, and the
  weak MCC and accuracy of the flow's output and labels.
* ``overcomplete``: can an extra latent dimension unfold a fold? The defaults are fitted
  with latent_dim = m + 1, their codes projected to m by PCA, and the defaults refitted
  from that projection (``pretrain=`` the array, 20 epochs, as the truth start).

Usage (resumable: one JSON file per probe and seed)::

    python benchmarks/search_probes.py ltsa|flow|overcomplete [--seeds 0 1 ...]

Writes ``results/levers/search_probes/<probe>/seed<s>.json`` and prints one line per seed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from idvae import VaDE
from idvae._validation import write_json_atomic
from idvae.metrics import cluster_accuracy, mcc
from levers_vade import ROOT, SEEDS, _instance

OUT = ROOT / "search_probes"
NEIGHBOURS = 20  # LTSA's neighbourhood size
FLOW_LAYERS, FLOW_RESTARTS, FLOW_STEPS = 2, 4, 1500


def _weak(z: np.ndarray, z_hat: np.ndarray) -> float:
    return round(float(mcc(z, z_hat, alignment="affine", random_state=0)), 4)


# --------------------------------------------------------------------------- LTSA


def ltsa_alignment(x: np.ndarray, latent_dim: int, n_neighbors: int = NEIGHBOURS):
    """The LTSA alignment matrix B (sparse, n x n): sum over points i of
    S_i (I - G_i G_i') S_i', G_i = [1/sqrt(k), the top ``latent_dim`` left singular vectors
    of the centred neighbourhood of i]; z' B z = 0 when z is affine in every neighbourhood's
    tangent coordinates."""
    import scipy.sparse as sp
    from sklearn.neighbors import NearestNeighbors

    k = n_neighbors
    neighbours = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x, return_distance=False)
    blocks = []
    for nb in neighbours:
        u = np.linalg.svd(x[nb] - x[nb].mean(0), full_matrices=False)[0][:, :latent_dim]
        g = np.hstack([np.full((k, 1), 1 / np.sqrt(k)), u])
        blocks.append((np.eye(k) - g @ g.T).ravel())
    rows = np.repeat(neighbours, k, axis=1).ravel()
    cols = np.tile(neighbours, (1, k)).ravel()
    return sp.csr_matrix((np.concatenate(blocks), (rows, cols)), shape=(len(x), len(x)))


def alignment_cost(b, z: np.ndarray, labels: np.ndarray) -> float:
    """tr(W' B W) / n for W = z centred and whitened by its pooled within-component
    covariance."""
    z = z - z.mean(0)
    within = sum(np.mean(labels == c) * np.cov(z[labels == c].T) for c in np.unique(labels))
    w = z @ np.linalg.cholesky(np.linalg.inv(within))
    return float(np.trace(w.T @ (b @ w)) / len(z))


def probe_ltsa(seed: int) -> dict:
    from sklearn.decomposition import PCA
    from sklearn.manifold import LocallyLinearEmbedding

    from idvae.experiments.recovery.ceiling import true_posterior
    from idvae.models._geometries import isomap_embedding, spectral_embedding

    sim = _instance(seed)
    x, z, labels = sim.x.astype(np.float64), sim.z, sim.labels
    m = z.shape[1]
    post = true_posterior(sim)[1]
    rng = np.random.default_rng(seed)
    candidates = {"posterior_mean": post}
    for r in range(3):
        arranged = post.copy()
        for c in np.unique(labels):
            slope = np.eye(m) + 0.3 * rng.standard_normal((m, m))
            arranged[labels == c] = post[labels == c] @ slope + 0.5 * rng.standard_normal(m)
        candidates[f"rearranged_{r}"] = arranged
    xt = torch.as_tensor(x)
    candidates |= {
        "pca": PCA(m).fit_transform(x),
        "isomap": isomap_embedding(xt, m).numpy(),
        "spectral": spectral_embedding(xt, m).numpy(),
        "ltsa": LocallyLinearEmbedding(
            n_neighbors=NEIGHBOURS, n_components=m, method="ltsa", eigen_solver="dense"
        ).fit_transform(x),
    }
    b = ltsa_alignment(x, m)
    return {
        name: {"cost": round(alignment_cost(b, c, labels), 4), "weak_mcc": _weak(z, c)}
        for name, c in candidates.items()
    }


# --------------------------------------------------------------------------- flow


class PiecewiseAffineFlow(torch.nn.Module):
    """z = A_L s(... s(A_0 w + b_0) ...) + b_L, s a LeakyReLU with a learned negative slope
    per unit, under a full-covariance Gaussian mixture: an invertible piecewise-affine map
    of the latent, so the model stays a mixture pushed through a piecewise-affine map."""

    def __init__(self, dim: int, layers: int, z0: np.ndarray, n_components: int, seed: int):
        from sklearn.mixture import GaussianMixture

        super().__init__()
        gen = torch.Generator().manual_seed(seed)

        def near_identity() -> torch.nn.Parameter:
            noise = 0.3 * torch.randn(dim, dim, generator=gen, dtype=torch.float64)
            return torch.nn.Parameter(torch.eye(dim, dtype=torch.float64) + noise)

        self.weights = torch.nn.ParameterList(near_identity() for _ in range(layers + 1))
        self.biases = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64)) for _ in range(layers + 1)
        )
        self.log_slopes = torch.nn.ParameterList(
            torch.nn.Parameter(torch.zeros(dim, dtype=torch.float64)) for _ in range(layers)
        )
        with torch.no_grad():
            start = self(torch.as_tensor(z0))[0].numpy()
        gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed).fit(start)
        cholesky = torch.linalg.cholesky(torch.as_tensor(gmm.covariances_))
        self.means = torch.nn.Parameter(torch.as_tensor(gmm.means_))
        self.logits = torch.nn.Parameter(torch.log(torch.as_tensor(gmm.weights_)))
        self.scale_tril = torch.nn.Parameter(cholesky)

    def forward(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros(len(w), dtype=w.dtype)
        for i, (a, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            w = w @ a.T + b
            log_det = log_det + torch.linalg.slogdet(a)[1]
            if i < len(self.log_slopes):
                negative = w < 0
                w = torch.where(negative, w * torch.exp(self.log_slopes[i]), w)
                log_det = log_det + (negative * self.log_slopes[i]).sum(1)
        return w, log_det

    def component_log_probs(self, z: torch.Tensor) -> torch.Tensor:
        tril = torch.tril(self.scale_tril, -1) + torch.diag_embed(
            torch.diagonal(self.scale_tril, dim1=-2, dim2=-1).abs() + 1e-6
        )
        comps = torch.distributions.MultivariateNormal(self.means, scale_tril=tril)
        return comps.log_prob(z[:, None, :]) + torch.log_softmax(self.logits, 0)

    def mean_log_likelihood(self, w: torch.Tensor) -> torch.Tensor:
        z, log_det = self(w)
        return (torch.logsumexp(self.component_log_probs(z), 1) + log_det).mean()


def fit_flow(
    codes: np.ndarray, n_components: int, seed: int
) -> tuple[float, np.ndarray, np.ndarray]:
    """One maximum-likelihood fit (full batch, Adam, cosine schedule): the mean log-likelihood
    per point, the flow's output and the mixture's labels."""
    flow = PiecewiseAffineFlow(codes.shape[1], FLOW_LAYERS, codes, n_components, seed)
    w = torch.as_tensor(codes)
    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, FLOW_STEPS)
    for _ in range(FLOW_STEPS):
        opt.zero_grad()
        (-flow.mean_log_likelihood(w)).backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        z = flow(w)[0]
        labels = flow.component_log_probs(z).argmax(1).numpy()
        return float(flow.mean_log_likelihood(w)), z.numpy(), labels


def probe_flow(seed: int) -> dict:
    from sklearn.mixture import GaussianMixture

    sim = _instance(seed)
    fit = VaDE(latent_dim=2, n_components=3, random_state=0).fit(sim.x)
    codes = fit.transform(sim.x).astype(np.float64)
    codes = (codes - codes.mean(0)) / codes.std(0)
    gmm = GaussianMixture(3, covariance_type="full", n_init=3, random_state=0).fit(codes)
    runs = [fit_flow(codes, 3, r) for r in range(FLOW_RESTARTS)]
    best_ll, flowed, labels = max(runs, key=lambda run: run[0])
    return {
        "defaults": {
            "weak_mcc": _weak(sim.z, codes),
            "accuracy": round(cluster_accuracy(sim.labels, fit.predict(sim.x)), 4),
        },
        "gmm_log_likelihood": round(float(gmm.score(codes)), 4),
        "flow_log_likelihoods": [round(run[0], 4) for run in runs],
        "flow": {
            "weak_mcc": _weak(sim.z, flowed),
            "accuracy": round(cluster_accuracy(sim.labels, labels), 4),
            "gain": round(best_ll - float(gmm.score(codes)), 4),
        },
    }


# --------------------------------------------------------------------------- overcomplete


def probe_overcomplete(seed: int) -> dict:
    from sklearn.decomposition import PCA

    sim = _instance(seed)
    m = sim.z.shape[1]
    big = VaDE(latent_dim=m + 1, n_components=3, random_state=0).fit(sim.x)
    codes = big.transform(sim.x)
    pca = PCA(m + 1).fit(codes)
    start = pca.transform(codes)[:, :m]
    fit = VaDE(
        latent_dim=m, n_components=3, random_state=0, pretrain=start, pretrain_epochs=20
    ).fit(sim.x)
    return {
        "explained_variance_ratio": [round(float(v), 4) for v in pca.explained_variance_ratio_],
        "overcomplete_weak_mcc": _weak(sim.z, codes),
        "start_weak_mcc": _weak(sim.z, start),
        "weak_mcc": _weak(sim.z, fit.transform(sim.x)),
        "accuracy": round(cluster_accuracy(sim.labels, fit.predict(sim.x)), 4),
    }


# --------------------------------------------------------------------------- subsample

TRIALS, HELD_OUT = 6, 3000


def probe_subsample(seed: int) -> dict:
    """Six fits of the defaults on random thirds of the rows (rows and weights from seed r)
    beside six on all the rows (weights from seed r), each scored against the truth on all
    the rows and by its log-likelihood (200 draws) on HELD_OUT new points of the instance."""
    sim = _instance(seed)
    held_out = _instance(seed, 3000 + HELD_OUT).x[-HELD_OUT:]
    x = sim.x

    def scored(fit: VaDE) -> dict:
        return {
            "held_out_log_likelihood": round(fit.log_likelihood(held_out, n_draws=200), 4),
            "weak_mcc": _weak(sim.z, fit.transform(x)),
            "accuracy": round(cluster_accuracy(sim.labels, fit.predict(x)), 4),
        }

    def trial(r: int, rows: np.ndarray) -> dict:
        return scored(VaDE(latent_dim=2, n_components=3, random_state=r).fit(x[rows]))

    thirds = [
        np.sort(np.random.default_rng(r).permutation(len(x))[: len(x) // 3]) for r in range(TRIALS)
    ]
    return {
        "subsample": [trial(r, rows) for r, rows in enumerate(thirds)],
        "all_rows": [trial(r, np.arange(len(x))) for r in range(TRIALS)],
    }


HOLDOUT_SEARCH = {"n_init": 6, "init_fraction": 0.8}


def probe_holdout(seed: int) -> dict:
    """``VaDE(**HOLDOUT_SEARCH)``: six restarts, each on its own random 80 % of the rows,
    compared by their log-likelihood on the other 20 %, the kept one trained on all rows."""
    sim = _instance(seed)
    fit = VaDE(latent_dim=2, n_components=3, random_state=0, **HOLDOUT_SEARCH).fit(sim.x)
    return {
        "weak_mcc": _weak(sim.z, fit.transform(sim.x)),
        "accuracy": round(cluster_accuracy(sim.labels, fit.predict(sim.x)), 4),
        "init_scores": [round(v, 4) for v in fit.init_scores_],
        "best_init": fit.best_init_,
    }


PROBES = {
    "ltsa": probe_ltsa,
    "flow": probe_flow,
    "overcomplete": probe_overcomplete,
    "subsample": probe_subsample,
    "holdout": probe_holdout,
}


# --------------------------------------------------------------------------- tables


def load(probe: str, root=OUT) -> list[dict]:
    """The records of one probe, by seed."""
    records = [json.loads(p.read_text()) for p in (root / probe).glob("seed*.json")]
    return sorted(records, key=lambda r: r["seed"])


def _pair(record: dict) -> str:
    return f"{record['weak_mcc']:.3f} / {record['accuracy']:.3f}"


def ltsa_rows(records: list[dict]) -> list[str]:
    """Markdown rows: per seed, each candidate's alignment cost (its weak MCC)."""
    table = []
    for r in records:
        arranged = min((r[f"rearranged_{i}"] for i in range(3)), key=lambda c: c["cost"])
        cells = [
            str(r["seed"]),
            *(
                f"{c['cost']:.3f} ({c['weak_mcc']:.3f})"
                for c in (
                    r["posterior_mean"],
                    arranged,
                    r["pca"],
                    r["isomap"],
                    r["spectral"],
                    r["ltsa"],
                )
            ),
        ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def flow_rows(records: list[dict]) -> list[str]:
    """Markdown rows: per seed, the defaults' weak MCC / accuracy, the flow's gain over the
    mixture in nats per point, and the flow's weak MCC / accuracy."""
    return [
        f"| {r['seed']} | {_pair(r['defaults'])} | {r['flow']['gain']:+.3f} | {_pair(r['flow'])} |"
        for r in records
    ]


def overcomplete_rows(records: list[dict]) -> list[str]:
    """Markdown rows: per seed, the third dimension's share of the 3-D codes' variance, the
    codes' weak MCC, the projected start's, and the refit's weak MCC / accuracy."""
    return [
        f"| {r['seed']} | {r['explained_variance_ratio'][-1]:.4f} | "
        f"{r['overcomplete_weak_mcc']:.3f} | {r['start_weak_mcc']:.3f} | {_pair(r)} |"
        for r in records
    ]


def _recovered(fit: dict) -> bool:
    return fit["weak_mcc"] >= 0.95 and fit["accuracy"] >= 0.95


def subsample_rows(records: list[dict]) -> list[str]:
    """Markdown rows: per seed and kind of trial (thirds of the rows, all the rows), how
    many of the six recover, and the weak MCC / accuracy and held-out log-likelihood of
    the trial that held-out data would pick."""
    table = []
    for r in records:
        cells = [str(r["seed"])]
        for kind in ("subsample", "all_rows"):
            picked = max(r[kind], key=lambda fit: fit["held_out_log_likelihood"])
            cells += [
                f"{sum(map(_recovered, r[kind]))}/{len(r[kind])}",
                f"{_pair(picked)} ({picked['held_out_log_likelihood']:.3f})",
            ]
        table.append("| " + " | ".join(cells) + " |")
    return table


def holdout_rows(records: list[dict]) -> list[str]:
    """Markdown rows: per seed, the search's weak MCC / accuracy and the trial it kept."""
    return [f"| {r['seed']} | {_pair(r)} | {r['best_init']} |" for r in records]


TABLES = {
    "ltsa": ltsa_rows,
    "flow": flow_rows,
    "overcomplete": overcomplete_rows,
    "subsample": subsample_rows,
    "holdout": holdout_rows,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("probe", choices=sorted(PROBES))
    parser.add_argument("--seeds", type=int, nargs="*", default=list(SEEDS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    for seed in args.seeds:
        path = OUT / args.probe / f"seed{seed}.json"
        if not path.exists():
            start = time.perf_counter()
            record = {"seed": seed, **PROBES[args.probe](seed)}
            record["seconds"] = round(time.perf_counter() - start, 1)
            write_json_atomic(path, record)
        print(json.dumps(json.loads(path.read_text())), flush=True)
    print("\n".join(TABLES[args.probe](load(args.probe))))


if __name__ == "__main__":
    main()
