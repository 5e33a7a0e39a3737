"""Tests of idvae.report: figures as PNG bytes, the affine alignment, the HTML report."""

from __future__ import annotations

import base64
import html
import io
import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

import idvae
from idvae.report import (
    PNG_MAGIC,
    Figure,
    PaperClaim,
    Profile,
    Section,
    Table,
    align_affine,
    fit_affine_alignment,
    format_mean_std,
    format_value,
    heatmap_figure,
    image_grid_figure,
    interleave_images,
    latent_grid_figure,
    metric_comparison_figure,
    profile_figure,
    profiles_figure,
    render_html,
    training_curves_figure,
    write_html_report,
    write_png,
)


def decode(png: bytes) -> np.ndarray:
    assert png[:8] == PNG_MAGIC
    return imread(io.BytesIO(png), format="png")


def random_invertible(rng: np.random.Generator, m: int) -> np.ndarray:
    while True:
        a = rng.normal(size=(m, m))
        if abs(np.linalg.det(a)) > 0.3:
            return a


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(1)
    centers = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    labels = rng.integers(0, 3, size=900)
    z = centers[labels] + 0.4 * rng.normal(size=(900, 2))
    runs = [z @ random_invertible(rng, 2) + rng.normal(size=2) for _ in range(4)]
    return z, labels, runs


# Every figure function, with its input; built once per module (matplotlib is the cost).
def _figure_inputs(toy):
    z, labels, runs = toy
    rng = np.random.default_rng(2)
    grid = np.linspace(-2.0, 2.0, 81)
    nll = (grid - 0.5) ** 2 * (grid + 1.2) ** 2 + 0.1 * grid
    history = [
        [{"epoch": e, "loss": 50 / (e + 1) + r, "kl": 3.0 + r} for e in range(15)] for r in (0, 1)
    ]
    return {
        "latent_row": lambda: latent_grid_figure(runs, labels=labels, reference=z, n_cols=5),
        "latent_col": lambda: latent_grid_figure(runs[:2], labels=labels, n_cols=1),
        "latent_high_dim": lambda: latent_grid_figure(
            [np.hstack([r, rng.normal(size=(900, 3))]) for r in runs[:2]],
            labels=[labels, labels],
            align="none",
        ),
        "heatmap": lambda: heatmap_figure(
            np.array([[1.0, 0.9, np.nan], [0.9, 1.0, 0.7], [np.nan, 0.7, 1.0]]),
            title="weak MCC",
            labels=["run 1", "run 2", "run 3"],
        ),
        "profile": lambda: profile_figure(grid, nll, truth=0.5, parameter_name="β1"),
        "profiles": lambda: profiles_figure(
            [Profile(grid, nll, truth=0.5), {"grid": grid, "nll": nll[::-1], "truth": -0.5}],
            title="NLL profiles",
        ),
        "images": lambda: image_grid_figure(
            np.random.default_rng(3).uniform(size=(20, 784)),
            n_cols=10,
            row_labels=["component 1", "component 2"],
        ),
        "curves": lambda: training_curves_figure(history, keys=("loss", "kl")),
        "comparison": lambda: metric_comparison_figure(
            {"#1": [0.99, 0.995, np.nan], "#2": [0.97, 0.98, 0.99]},
            title="weak MCC",
            paper={"#1": (0.99, 0.003), "#2": 0.99},
        ),
    }


@pytest.fixture(scope="module")
def pngs(toy):
    return {name: build() for name, build in _figure_inputs(toy).items()}


# ---------------------------------------------------------------- PNG validity


@pytest.mark.parametrize(
    "name",
    [
        "latent_row",
        "latent_col",
        "latent_high_dim",
        "heatmap",
        "profile",
        "profiles",
        "images",
        "curves",
        "comparison",
    ],
)
def test_every_figure_is_a_valid_non_blank_png(pngs, name):
    image = decode(pngs[name])
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    assert image.shape[0] > 50 and image.shape[1] > 50
    # Not blank: the pixels vary and a visible share of them is not the white background.
    assert image[..., :3].std() > 0.02
    assert np.mean(image[..., :3].min(axis=2) < 0.9) > 0.005


def test_figure_aspect_follows_the_layout(pngs):
    row = decode(pngs["latent_row"])  # 5 panels in one row
    col = decode(pngs["latent_col"])  # 2 panels in one column
    assert row.shape[1] / row.shape[0] > 3
    assert col.shape[0] / col.shape[1] > 1.5
    images = decode(pngs["images"])  # 2 rows of 10 square images
    assert images.shape[1] / images.shape[0] > 2.5
    curves = decode(pngs["curves"])  # two panels side by side
    assert curves.shape[1] > curves.shape[0]


def test_figures_are_deterministic(toy, pngs):
    builders = _figure_inputs(toy)
    for name in ("latent_row", "heatmap", "images", "curves"):
        assert builders[name]() == pngs[name], name


def test_latent_subsample_is_seeded(toy):
    z, labels, runs = toy
    a = latent_grid_figure(runs[:2], labels=labels, max_points=200, random_state=0)
    b = latent_grid_figure(runs[:2], labels=labels, max_points=200, random_state=0)
    c = latent_grid_figure(runs[:2], labels=labels, max_points=200, random_state=1)
    assert a == b
    assert a != c


def test_importing_report_sets_no_pyplot_backend():
    code = (
        "import sys, idvae.report as r, numpy as np;"
        "r.heatmap_figure(np.eye(2), title='t');"
        "print('matplotlib.pyplot' in sys.modules)"
    )
    out = subprocess.run(
        [os.sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------- alignment


def test_affine_alignment_recovers_the_reference_exactly(rng):
    for m in (1, 2, 5):
        ref = rng.normal(size=(300, m))
        a, b = random_invertible(rng, m), rng.normal(size=m)
        fit = fit_affine_alignment(ref @ a + b, ref)
        np.testing.assert_allclose(fit.apply(ref @ a + b), ref, atol=1e-9)
        np.testing.assert_allclose(fit.matrix, np.linalg.inv(a), atol=1e-9)
        assert fit.r2 == pytest.approx(1.0, abs=1e-12)


def test_affine_alignment_is_the_least_squares_solution(rng):
    ref = rng.normal(size=(400, 2))
    z = np.tanh(ref @ random_invertible(rng, 2)) + 0.1 * rng.normal(size=(400, 2))
    aligned = align_affine(z, ref)
    fit = fit_affine_alignment(z, ref)
    # Normal equations: the residual is orthogonal to the design [z, 1].
    residual = ref - aligned
    design = np.hstack([z, np.ones((400, 1))])
    np.testing.assert_allclose(design.T @ residual, 0.0, atol=1e-8)
    assert 0.0 < fit.r2 < 1.0
    assert fit.r2 == pytest.approx(1 - np.sum(residual**2) / np.sum((ref - ref.mean(0)) ** 2))
    # Invariance: an affine reparametrisation of z is aligned to the same points.
    np.testing.assert_allclose(
        align_affine(z @ random_invertible(rng, 2) - 3.0, ref), aligned, atol=1e-8
    )


def test_affine_alignment_maps_a_higher_dimensional_latent_onto_the_reference(rng):
    ref = rng.normal(size=(500, 2))
    z = np.hstack([ref, rng.normal(size=(500, 3))]) @ random_invertible(rng, 5)
    np.testing.assert_allclose(align_affine(z, ref), ref, atol=1e-9)


def test_latent_grid_draws_affine_images_of_the_reference_on_top_of_it(toy):
    z, labels, runs = toy
    # Run 2 is an affine image of run 1, so after alignment both panels are the same; the
    # figure equals the one drawn from two identical runs up to rounding of a few pixels.
    aligned = decode(latent_grid_figure([z, runs[0]], labels=labels, n_cols=2))
    identical = decode(latent_grid_figure([z, z.copy()], labels=labels, n_cols=2))
    assert aligned.shape == identical.shape
    assert np.mean(np.abs(aligned - identical).max(axis=2) > 0.1) < 1e-3
    # Without alignment the panels differ visibly.
    raw = decode(latent_grid_figure([z, runs[0]], labels=labels, n_cols=2, align="none"))
    assert np.mean(np.abs(raw - identical).max(axis=2) > 0.1) > 0.01


# ------------------------------------------------------------------- bad input


def test_figures_refuse_bad_input(toy):
    z, labels, runs = toy
    with pytest.raises(TypeError, match="single 2-D array"):
        latent_grid_figure(z)
    with pytest.raises(ValueError, match="empty"):
        latent_grid_figure([])
    with pytest.raises(ValueError, match="same samples|rows"):
        latent_grid_figure([z, z[:100]])
    with pytest.raises(ValueError, match="'affine' or 'none'"):
        latent_grid_figure(runs, align="cca")
    with pytest.raises(ValueError, match="900 entries"):
        latent_grid_figure(runs, labels=labels[:10])
    with pytest.raises(ValueError, match="4 label arrays"):
        latent_grid_figure(runs, labels=[labels, labels])
    with pytest.raises(ValueError, match="dims < 2"):
        latent_grid_figure(runs, dims=(0, 2))
    with pytest.raises(ValueError, match="finite latents"):
        latent_grid_figure([np.full((10, 2), np.nan)])
    with pytest.raises(ValueError, match="2-D"):
        heatmap_figure(np.ones(3), title="t")
    with pytest.raises(ValueError, match="3 row labels"):
        heatmap_figure(np.eye(3), title="t", labels=["a", "b"])
    with pytest.raises(ValueError, match="one value per grid point"):
        profile_figure(np.arange(5.0), np.arange(4.0), truth=1.0, parameter_name="a")
    with pytest.raises(ValueError, match="finite number"):
        profile_figure(np.arange(5.0), np.arange(5.0), truth=float("nan"), parameter_name="a")
    with pytest.raises(ValueError, match="square"):
        image_grid_figure(np.zeros((4, 10)), n_cols=2)
    with pytest.raises(ValueError, match="2 row labels"):
        image_grid_figure(np.zeros((4, 16)), n_cols=2, row_labels=["a"])
    with pytest.raises(ValueError, match="absent; available"):
        training_curves_figure([[{"loss": 1.0}]], keys=("elbo",))
    with pytest.raises(ValueError, match="same shape"):
        interleave_images(np.zeros((2, 4)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="paper's groups"):
        metric_comparison_figure({"a": [1.0]}, title="t", paper={"b": 1.0})
    with pytest.raises(ValueError, match="reference_labels"):
        latent_grid_figure(runs, reference=z, reference_labels=labels[:5])


def test_heatmap_draws_non_finite_cells_instead_of_failing():
    finite = decode(heatmap_figure(np.array([[1.0, 0.5], [0.5, 1.0]]), title="t"))
    broken = decode(heatmap_figure(np.array([[1.0, np.inf], [np.nan, 1.0]]), title="t"))
    assert broken.shape == finite.shape
    assert not np.array_equal(broken, finite)


def _significant_digits(label: str) -> int:
    mantissa = re.split(r"[eE×]", label.replace("−", "-"))[0]
    return len(re.sub(r"\D", "", mantissa).lstrip("0"))


def test_profile_tick_labels_keep_a_few_significant_digits():
    from idvae.report.profiles import _profiles_axes

    grid = np.linspace(-1.0, 1.0, 41)
    rounding = np.random.default_rng(0).normal(scale=1e-16, size=grid.size)
    curves = {
        "flat": 0.0326441720878 + rounding,  # every point tied: the data say nothing
        "narrow": 1234.5678 + 1e-4 * grid**2,  # a range of 1e-7 of the value
        "shallow": 1234.5678 + 5.0 * grid**2,  # 4e-3 of the value
        "wide": 0.03 + grid**2,
        "huge": 2.5e7 + 1e3 * (grid - 0.3) ** 2,
    }
    profiles = [Profile(grid, nll, truth=0.0, title=name) for name, nll in curves.items()]
    fig = _profiles_axes(profiles, n_cols=5, title=None, dpi=100)
    fig.canvas.draw()
    for ax in fig.axes:
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert len(labels) >= 3 and len(set(labels)) == len(labels), (ax.get_title(), labels)
        assert max(map(_significant_digits, labels)) <= 4, (ax.get_title(), labels)
        # a power of ten beside the axis at most ("1e−4"), never a 14-digit offset
        assert len(ax.yaxis.get_offset_text().get_text()) <= 5, ax.get_title()
    by_title = {ax.get_title(): ax for ax in fig.axes}
    for name in ("narrow", "shallow"):  # drawn as NLL minus its least value, named so
        assert "least = 1234.57" in by_title[name].get_ylabel()
    low, high = by_title["flat"].get_ylim()  # a band around the value: drawn flat
    assert low < 0.0326441720878 < high and high - low == pytest.approx(0.1 * 0.0326441720878)


TABLE2_GROUPS = [f"Random parallelograms #{i}" for i in (1, 2, 3)]
TABLE3_GROUPS = [
    f"Arch{a} {m}"
    for a in (1, 2, 3)
    for m in ("MFCVAE ReLU", "MFCVAE LeakyReLU", "iVAE LeakyReLU (u = labels)")
]
UNBREAKABLE_GROUPS = [f"an_unbreakable_study_name_{i}" for i in range(8)]


@pytest.mark.parametrize("names", [TABLE2_GROUPS, TABLE3_GROUPS, UNBREAKABLE_GROUPS])
def test_comparison_tick_labels_do_not_overlap(names):
    from idvae.report.figures import _comparison_axes

    values = {name: np.linspace(0.8, 1.0, 10) for name in names}
    paper = {names[0]: (0.99, 0.003)}
    fig = _comparison_axes(values, paper, "weak MCC", "weak_mcc", "paper (Table 2)", None, 100)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = fig.axes[0].get_xticklabels()
    assert [t.get_text().split("\n(n =")[0].replace("\n", " ") for t in labels] == names
    boxes = [t.get_window_extent(renderer) for t in labels]
    for i, box in enumerate(boxes):
        for other in boxes[i + 1 :]:
            assert not box.overlaps(other), (labels[i].get_text(), box, other)
        assert box.x0 >= -1 and box.x1 <= fig.bbox.x1 + 1 and box.y0 >= -1  # on the page


def test_interleave_images_alternates_pairs():
    a, b = np.arange(6.0).reshape(3, 2), -np.arange(6.0).reshape(3, 2)
    out = interleave_images(a, b)
    np.testing.assert_array_equal(out[0::2], a)
    np.testing.assert_array_equal(out[1::2], b)


# --------------------------------------------------------------------------- HTML


@pytest.mark.parametrize(
    ("value", "precision", "text"),
    [
        (None, 3, "–"),
        (float("nan"), 3, "–"),
        (7, 3, "7"),
        (np.int64(12), 3, "12"),
        (0.98765, 3, "0.988"),
        (np.float32(0.5), 2, "0.50"),
        (0.0, 2, "0.00"),
        (123.456, 3, "123.5"),
        (2.5e7, 3, "2.50e+07"),
        (1.5e-6, 3, "1.50e-06"),
        (float("-inf"), 3, "−∞"),
        (True, 3, "yes"),
        ("0.83 (0.12)", 3, "0.83 (0.12)"),
    ],
)
def test_format_value(value, precision, text):
    assert format_value(value, precision) == text


def test_format_mean_std():
    assert format_mean_std(0.8612, 0.0903) == "0.86 ± 0.09"


def _report_sections(pngs) -> list[Section]:
    table = Table(
        ["dataset", "ours", "paper", "ours", "paper"],
        [
            ["parallelograms #1", 0.99612, 0.99, 0.0412, 0.1542],
            ["parallelograms #2", 0.99388, 0.99, None, 0.1231],
            ["pinwheel", np.float64(0.98), "–", 17, float("nan")],
        ],
        caption="Table 2",
        precision=[3, 4, 2, 4, 4],
        column_groups=[("", 1), ("weak MCC", 2), ("distAff", 2)],
    )
    return [
        Section(
            "Stability",
            text="Five runs of VaDE.\n\nWeak MCC ≥ 0.99 everywhere.",
            tables=[table],
            figures=[Figure(pngs["latent_row"], "Latent spaces (Fig. 2)")],
        ),
        Section(
            "Pairwise metrics",
            figures=[Figure(pngs["heatmap"], "weak MCC"), Figure(pngs["profiles"], "Fig. 1")],
        ),
        Section(
            "MNIST",
            figures=[Figure(pngs["images"], "Fig. 8"), Figure(pngs["curves"], "training")],
        ),
    ]


def test_html_report_is_self_contained(tmp_path, pngs):
    sections = _report_sections(pngs)
    path = write_html_report(
        tmp_path / "out" / "report.html", title="Reproduction", sections=sections
    )
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    for forbidden in ("<script", "<link", 'src="http', "src='http", "url(http", "@import"):
        assert forbidden not in text.lower()
    sources = re.findall(r'<img src="([^"]+)"', text)
    assert len(sources) == 5
    expected = [f.png for s in sections for f in s.figures]
    for src, png in zip(sources, expected, strict=True):
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :]) == png


def test_html_contains_every_table_value_and_marks_paper_columns(pngs):
    sections = _report_sections(pngs)
    text = render_html(title="t", sections=sections)
    table = sections[0].tables[0]
    for row in table.rows:
        for value, digits in zip(row, table.precision, strict=True):
            assert f">{format_value(value, digits)}</td>" in text
    assert ">0.9961</td>" in text and ">0.99</td>" in text  # per-column precision
    assert text.count('<td class="num paper">') == 5  # numeric paper cells are muted
    assert '<th colspan="2">weak MCC</th>' in text
    assert "<p>Five runs of VaDE.</p>" in text


def test_papers_claims_are_labelled_and_drawn_after_our_numbers(pngs):
    claim = PaperClaim("App. J.3.1", "In all 50 simulations the truth was the unique minimiser.")
    assert str(claim) == f"Paper (App. J.3.1): {claim.text}"
    section = Section(
        "MLE",
        text="Ours: in 4 of 5 simulations the truth was the unique minimiser.",
        tables=[Table(["count", "ours", "paper (App. J.3.1)"], [["unique", 4, 50]])],
        figures=[Figure(pngs["profiles"], "Fig. 1")],
        claims=[claim],
    )
    text = render_html(title="t", sections=[section])
    drawn = (
        '<p class="paper-claim"><span class="paper-label">Paper (App. J.3.1):</span> '
        "In all 50 simulations the truth was the unique minimiser.</p>"
    )
    assert text.count(drawn) == 1 and text.count("In all 50 simulations") == 1
    # ours first: our sentence, the table (ours, then the paper's column), the claim, figures
    order = [text.index(s) for s in ("<p>Ours: in 4 of 5", "<table>", drawn, "<figure>")]
    assert order == sorted(order)
    assert '<th class=paper scope="col">paper (App. J.3.1)</th>' in text
    assert ".paper-claim {" in text  # styled apart from our text
    with pytest.raises(ValueError, match="source"):
        PaperClaim("", "text")
    with pytest.raises(TypeError, match="claims\\[0\\] to be a PaperClaim"):
        Section("s", claims=["Paper (x): an unlabelled string"])


def test_html_escapes_user_text(pngs):
    evil = '<script>alert("x")</script> & <b>'
    section = Section(
        evil,
        text=evil,
        tables=[Table([evil], [[evil]], caption=evil)],
        figures=[Figure(pngs["heatmap"], caption=evil, alt=evil)],
    )
    text = render_html(title=evil, sections=[section], metadata={evil: evil})
    assert "<script" not in text and "<b>" not in text
    # <title> and <h1>, <h2>, <p>, <th>, <td>, <caption>, alt, <figcaption>, footer key, value
    assert text.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &lt;b&gt;") == 11


def test_html_footer_has_generation_metadata(pngs):
    text = render_html(title="t", sections=_report_sections(pngs), metadata={"seed": 0, "runs": 5})
    footer = text[text.index("<footer>") :]
    assert f"<dd>{idvae.__version__}</dd>" in footer
    assert re.search(r"<dt>generated</dt><dd>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</dd>", footer)
    assert "<dt>command</dt>" in footer
    assert "<dt>seed</dt><dd>0</dd>" in footer and "<dt>runs</dt><dd>5</dd>" in footer


def test_report_objects_refuse_bad_input(pngs):
    with pytest.raises(ValueError, match="2 cells"):
        Table(["a", "b"], [[1, 2], [3]])
    with pytest.raises(ValueError, match="add up to 2"):
        Table(["a", "b"], [[1, 2]], column_groups=[("g", 3)])
    with pytest.raises(ValueError, match="one per column"):
        Table(["a", "b"], [[1, 2]], precision=[1, 2, 3])
    with pytest.raises(ValueError, match="PNG signature"):
        Figure(b"GIF89a....")
    with pytest.raises(TypeError, match="bytes"):
        Figure("not bytes")
    with pytest.raises(TypeError, match="tables\\[0\\] to be a Table"):
        Section("s", tables=[Figure(pngs["heatmap"])])
    with pytest.raises(TypeError, match="Section"):
        render_html(title="t", sections=["text"])
    with pytest.raises(ValueError, match="PNG signature"):
        write_png("unused.png", b"not a png")


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path, pngs, monkeypatch):
    sections = _report_sections(pngs)
    target = tmp_path / "report.html"

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr("idvae._validation.os.fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        write_html_report(target, title="t", sections=sections)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    write_html_report(target, title="first", sections=sections)
    before = target.read_bytes()
    monkeypatch.setattr("idvae._validation.os.fsync", fail)
    with pytest.raises(OSError):
        write_html_report(target, title="second", sections=sections)
    with pytest.raises(OSError):
        write_png(tmp_path / "fig.png", pngs["heatmap"])
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_written_files_round_trip_and_are_world_readable(tmp_path, pngs):
    path = write_png(tmp_path / "figs" / "latent.png", pngs["latent_row"])
    assert path.read_bytes() == pngs["latent_row"]
    page = write_html_report(tmp_path / "r.html", title="t", sections=[Section("s")])
    assert render_html(title="t", sections=[Section("s")]).split("<footer>")[0] in (
        page.read_text(encoding="utf-8")
    )
    for p in (path, page):
        assert p.stat().st_mode & 0o777 == 0o644


# ------------------------------------------------------------------ real browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]


def _render(browser: str, page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _console_errors(stderr: str) -> list[str]:
    # Chromium logs page console messages as "...:CONSOLE(...)] ..." lines; the page has no
    # script, so any console message or uncaught error is a fault of the report.
    return [
        line
        for line in stderr.splitlines()
        if ":CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line
    ]


# Appended to a copy of a page (the report itself has no script): once the page has loaded,
# write what it shows as JSON into the DOM, which Chromium's --dump-dom prints.
_PROBE = """<script>
window.addEventListener("load", () => {
  const look = (e) => {
    const s = getComputedStyle(e);
    return {tag: e.tagName.toLowerCase(), cls: e.className, text: e.innerText,
            top: e.getBoundingClientRect().top,
            style: [s.color, s.fontStyle, s.backgroundColor].join(" ")};
  };
  const out = {
    images: [...document.images].map((i) => [i.complete, i.naturalWidth, i.naturalHeight]),
    sections: [...document.querySelectorAll("section")].map((s) => [...s.children].map(look)),
    cells: [...document.querySelectorAll("td, th")].map(look),
    labels: [...document.querySelectorAll(".paper-label")].map(look),
    text: document.body.innerText,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _look_at(browser: str, page: Path, tmp: Path, *extra: str) -> dict:
    """What Chromium shows of ``page``: images, sections, cells and text, as the probe saw."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"))
    result = _render(browser, probed, tmp, "--dump-dom", *extra)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _console_errors(result.stderr) == []
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, result.stdout[-2000:]
    return {**json.loads(html.unescape(found.group(1))), "dom": result.stdout}


def _assert_ours_first_and_the_papers_labelled(shown: dict) -> None:
    """In every section our text and tables come before the paper's claims and are drawn
    above them; each claim carries "Paper (...):" and looks unlike our text; the paper's
    columns are headed "paper" and look unlike ours."""
    for children in shown["sections"]:
        claims = [i for i, c in enumerate(children) if c["cls"] == "paper-claim"]
        ours = [i for i, c in enumerate(children) if c["tag"] in ("p", "table") and i not in claims]
        if claims and ours:
            assert max(ours) < min(claims)
            assert max(children[i]["top"] for i in ours) < min(children[i]["top"] for i in claims)
        for i in claims:
            assert re.match(r"Paper \([^)]+\): \S", children[i]["text"]), children[i]["text"]
            assert all(children[i]["style"] != children[j]["style"] for j in ours if j < i)
    for label in shown["labels"]:
        assert label["text"].startswith("Paper (") and label["text"].endswith("):")
    cells = shown["cells"]
    paper_cells = [c for c in cells if "paper" in c["cls"].split()]
    ours_cells = [c for c in cells if c["tag"] == "td" and "paper" not in c["cls"].split()]
    for c in (c for c in paper_cells if c["tag"] == "th"):
        assert c["text"].startswith("paper")
    assert {c["style"] for c in paper_cells if c["tag"] == "td"}.isdisjoint(
        {c["style"] for c in ours_cells}
    )


def _assert_every_image_decodes(shown: dict, expected: int) -> None:
    assert len(shown["images"]) == expected
    assert all(complete and width > 0 and height > 0 for complete, width, height in shown["images"])


def test_report_renders_in_headless_chromium(tmp_path, pngs, browser):
    page = write_html_report(
        tmp_path / "report.html", title="Reproduction", sections=_report_sections(pngs)
    )
    shot = tmp_path / "shot.png"
    # One launch takes the screenshot and dumps the DOM the probe wrote into.
    shown = _look_at(browser, page, tmp_path, f"--screenshot={shot}", "--window-size=1200,1600")
    assert shot.exists()
    pixels = imread(shot)[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 0.05  # not blank: text, tables and figures are drawn
    # The figure (colourful scatter points) is on screen, not only black text on white.
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert np.mean(saturation > 0.3) > 0.002
    _assert_every_image_decodes(shown, 5)
    assert "parallelograms #1\t0.9961\t0.99\t0.0412\t0.1542" in shown["text"]
    _assert_ours_first_and_the_papers_labelled(shown)

    # The checks are live: a script error, and an image that does not decode, are caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
    assert _console_errors(_render(browser, bad, tmp_path, f"--screenshot={shot}").stderr)
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><img src="data:image/png;base64,iVBORw0K"></body></html>')
    assert _look_at(browser, broken, tmp_path)["images"] == [[True, 0, 0]]


def test_mle_report_in_chromium_shows_ours_first_and_labels_the_papers_claim(tmp_path, browser):
    """The page of ``idvae reproduce mle --quick``: 5 truths, the paper's 50 of 50 labelled."""
    from idvae.experiments import reproduce
    from idvae.experiments.paper import PAPER_MLE

    summary = reproduce("mle", tmp_path / "out", quick=True)["mle"]["summary"]
    n, unique = summary["n_simulations"], summary["n_unique"]
    shown = _look_at(browser, tmp_path / "out" / "mle" / "report.html", tmp_path)
    _assert_every_image_decodes(shown, 3)  # the NLL profiles of three truths (Fig. 1)
    _assert_ours_first_and_the_papers_labelled(shown)
    first = shown["sections"][0]
    assert first[1]["text"].startswith(f"Ours: in {unique} of {n} simulations the truth")
    # our counts, then the paper's, in the table
    row = "truth is the unique global minimiser (up to equivalence)"
    assert f"{row}\t{unique}\t50" in shown["text"]
    assert f"simulations\t{n}\t50" in shown["text"]
    # the paper's sentence: once on the page, and there labelled as the paper's
    source, sentence = PAPER_MLE
    claims = [c["text"] for c in first if c["cls"] == "paper-claim"]
    assert claims == [f"Paper ({source}): {sentence}"]
    assert shown["text"].count("In all 50 simulations") == 1


def test_table2_report_in_chromium_sets_the_papers_numbers_apart(tmp_path, toy, browser):
    from idvae.experiments.configs import StudyData, experiment
    from idvae.experiments.html import write_experiment_report
    from idvae.experiments.results import format_stat
    from idvae.experiments.tables import paper_cell

    z, labels, _ = toy
    exp = experiment("table2", quick=True)
    result = _toy_stability_result(toy)
    data = StudyData(x=z, z=z, labels=labels, description={"dataset": "toy"})
    studies = {s.key: (s, data, result) for s in exp.studies}
    page = tmp_path / "report.html"
    write_experiment_report(page, exp, studies, {"wall_seconds": 1.0})
    shown = _look_at(browser, page, tmp_path)
    # per study: its latents and two heatmaps; the comparison: weak MCC and distAff
    _assert_every_image_decodes(shown, 2 + 3 * 3)
    _assert_ours_first_and_the_papers_labelled(shown)
    source, setup = exp.paper_setup
    first = shown["sections"][0]
    assert first[1]["text"].startswith(f"Ours: {exp.n_runs} runs of each study")
    assert [c["text"] for c in first if c["cls"] == "paper-claim"] == [f"Paper ({source}): {setup}"]
    assert shown["text"].count(setup) == 1
    # every number of the paper's Table 2 is in a muted paper cell, and only there
    paper_texts = [c["text"] for c in shown["cells"] if "paper" in c["cls"].split()]
    ours_texts = [c["text"] for c in shown["cells"] if "paper" not in c["cls"].split()]
    stat = result.summary()["between_runs"]
    for study in exp.studies:
        for metric, value in study.paper.items():
            if metric not in result.matrices:  # the toy runs have no strong MCC
                continue
            cell = paper_cell(value)
            assert paper_texts.count(cell) >= 2  # the comparison and the study's table
            assert shown["text"].count(cell) == paper_texts.count(cell)
        # our measured figures are on the page, in our cells
        assert format_stat(stat["weak_mcc"]) in ours_texts
        # the comparison row: runs (failed), then per metric ours and the paper's
        ours_dist, paper_dist = format_stat(stat["dist_aff"]), paper_cell(study.paper["dist_aff"])
        row = f"{study.title}\t3 (1)\t{ours_dist}\t{paper_dist}\t{format_stat(stat['weak_mcc'])}"
        assert row in shown["text"]


# ------------------------------------------------------- failed runs, stability


def test_latent_grid_keeps_a_panel_for_a_failed_run(toy):
    z, labels, runs = toy
    with_failed = latent_grid_figure([runs[0], None, runs[1]], labels=[labels, None, labels])
    without = latent_grid_figure([runs[0], runs[1]], labels=[labels, labels])
    # Three panels side by side instead of two: the failed run is shown, not dropped.
    assert decode(with_failed).shape[1] > decode(without).shape[1] * 1.3
    with pytest.raises(ValueError, match="every entry is None"):
        latent_grid_figure([None, None])
    # A diverged run (NaN latents) is drawn as such instead of breaking the figure.
    diverged = runs[2].copy()
    diverged[5] = np.nan
    with_nan = latent_grid_figure([runs[0], diverged, runs[1]], labels=labels)
    assert decode(with_nan).shape == decode(with_failed).shape


def _toy_stability_result(toy):
    from idvae.experiments import RunRecord, StabilityResult

    z, labels, runs = toy
    nan = np.nan
    mcc = np.array([[1.0, nan, 0.9], [nan, 1.0, nan], [0.9, nan, 1.0]])
    records = [
        RunRecord(0, 11, "ok", fit_seconds=3.25, truth={"weak_mcc": 0.99}),
        RunRecord(1, 12, "failed", error="loss became NaN <epoch 3>"),
        RunRecord(2, 13, "ok", fit_seconds=2.75, truth={"weak_mcc": 0.97}),
    ]
    return StabilityResult(
        runs=records,
        matrices={"weak_mcc": mcc, "dist_aff": np.where(np.isnan(mcc), nan, 0.25)},
        latents=[runs[0], None, runs[1]],
        predictions=[labels, None, labels],
        notes=["distAff failed on pair (0, 1)"],
    )


def test_stability_section_lists_every_run_and_the_papers_values(toy):
    from idvae.report import stability_section

    z, labels, _ = toy
    result = _toy_stability_result(toy)
    section = stability_section(
        result, heading="Toy study", labels=labels, reference=z, paper={"weak_mcc": "0.99"}
    )
    summary, runs_table = section.tables
    rows = {(r[0], r[1]): r for r in summary.rows}
    stats = result.summary()
    weak = rows[("weak MCC", "between runs")]
    assert weak[2:5] == (
        pytest.approx(stats["between_runs"]["weak_mcc"]["mean"]),
        pytest.approx(0.0),
        1,
    )
    assert weak[5] == "0.99"
    assert rows[("weak MCC", "to the truth")][2] == pytest.approx(0.98)
    assert rows[("weak MCC", "to the truth")][5] is None  # the paper gives between-runs only
    assert [r[2] for r in runs_table.rows] == ["ok", "failed", "ok"]
    assert runs_table.rows[1][-1] == "loss became NaN <epoch 3>"
    assert len(section.figures) == 1 + len(result.matrices)  # latents + one heatmap each
    text = render_html(title="t", sections=[section])
    assert "loss became NaN &lt;epoch 3&gt;" in text
    assert "distAff failed on pair (0, 1)" in text
    with pytest.raises(TypeError, match="StabilityResult"):
        stability_section(object(), heading="x")


def test_image_grid_places_images_row_by_row():
    # Black, white / white, black: the dark cells must sit on the diagonal.
    images = np.stack(
        [np.zeros((10, 10)), np.ones((10, 10)), np.ones((10, 10)), np.zeros((10, 10))]
    )
    pixels = decode(image_grid_figure(images, n_cols=2, vmin=0, vmax=1))[..., :3].mean(axis=2)
    dark = pixels < 0.5
    rows, cols = np.nonzero(dark)
    mid_r, mid_c = (rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2
    top_left = dark[: int(mid_r), : int(mid_c)].sum()
    top_right = dark[: int(mid_r), int(mid_c) :].sum()
    bottom_right = dark[int(mid_r) :, int(mid_c) :].sum()
    assert top_left > 20 * max(top_right, 1) and bottom_right > 20 * max(top_right, 1)
    # Flattened input gives the same picture; pairs set apart make the figure wider.
    assert image_grid_figure(images.reshape(4, 100), n_cols=2, vmin=0, vmax=1) == (
        image_grid_figure(images, n_cols=2, vmin=0, vmax=1)
    )
    wide = decode(image_grid_figure(np.zeros((8, 100)), n_cols=8, col_group=2))
    narrow = decode(image_grid_figure(np.zeros((8, 100)), n_cols=8))
    assert wide.shape[1] > narrow.shape[1]
