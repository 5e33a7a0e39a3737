"""A self-contained HTML report: sections of text, tables and inlined PNG figures.

One file, readable without a server: images are ``data:image/png;base64,`` URIs, the CSS is
inline, there is no script and no external resource. Every user-provided string is
HTML-escaped. The file is written atomically.

Whose claim is whose: a section's text, tables and figures are ours; what the paper says is
a :class:`PaperClaim`, drawn after our numbers, labelled "Paper (<where>):" and set apart
(muted, italic, a rule at its left), as are the table columns whose heading starts with
"paper".
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import math
import numbers
import os
import platform
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idvae._validation import atomic_write, check_list_of
from idvae.report._common import PNG_MAGIC

__all__ = [
    "Figure",
    "PaperClaim",
    "Section",
    "Table",
    "format_mean_std",
    "format_value",
    "render_html",
    "write_html_report",
    "write_png",
]

MISSING = "–"  # shown for None and NaN
# Reports are for sharing: readable by all (the temporary file of atomic_write is 0600).
REPORT_MODE = 0o644


def format_value(value: Any, precision: int = 3) -> str:
    """A table cell as text, with a precision that suits its magnitude.

    Integers print in full; floats with ``precision`` decimals below 100, one decimal up to
    10^6, and in scientific notation beyond or when tiny (below 10^-precision); None and NaN
    print as "–"; strings print as given.

    Args:
        value: a number, string, bool or None.
        precision: decimals for values of magnitude below 100.
    """
    if value is None:
        return MISSING
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars and 0-d arrays
        if isinstance(value, bool):
            return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        v = float(value)
        if math.isnan(v):
            return MISSING
        if math.isinf(v):
            return "∞" if v > 0 else "−∞"
        magnitude = abs(v)
        if magnitude == 0:
            return f"{0.0:.{precision}f}"
        if magnitude >= 1e6 or magnitude < 10.0 ** (-precision):
            return f"{v:.{max(precision - 1, 1)}e}"
        if magnitude >= 100:
            return f"{v:.1f}"
        return f"{v:.{precision}f}"
    if isinstance(value, numbers.Complex):
        raise TypeError(f"Expected a real number in a table cell but got {value!r}")
    return str(value)


def format_mean_std(mean: float, std: float, precision: int = 2) -> str:
    """``"0.86 ± 0.09"``: a mean and standard deviation as the paper's tables report them."""
    return f"{format_value(mean, precision)} ± {format_value(std, precision)}"


@dataclass(frozen=True)
class Table:
    """A table of the report.

    Attributes:
        columns: the column headings.
        rows: the rows; each has one cell per column (numbers, strings, bools or None).
        caption: a caption shown above the table.
        precision: decimals of floats (see ``format_value``): one int for every column,
            or one per column (e.g. 4 for ours and 2 for the paper's two-decimal values).
        column_groups: optional spanning headings above the columns, as (heading, span)
            pairs whose spans add up to the number of columns, e.g.
            ``[("", 1), ("weak MCC", 2), ("distAff", 2)]`` over
            ``["dataset", "ours", "paper", "ours", "paper"]``. Columns whose heading
            starts with "paper" are drawn muted, so our numbers stand out beside them.
    """

    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    caption: str | None = None
    precision: int | Sequence[int] = 3
    column_groups: Sequence[tuple[str, int]] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.columns, str) or not isinstance(self.columns, Sequence):
            raise TypeError(
                f"Expected columns to be a list of strings but got {type(self.columns).__name__}"
            )
        if len(self.columns) == 0:
            raise ValueError("Expected at least one column but got none")
        if isinstance(self.rows, str) or not isinstance(self.rows, Sequence):
            raise TypeError(
                f"Expected rows to be a list of rows but got {type(self.rows).__name__}"
            )
        rows = []
        for i, row in enumerate(self.rows):
            if isinstance(row, str) or not isinstance(row, Sequence):
                raise TypeError(f"Expected rows[{i}] to be a list but got {type(row).__name__}")
            if len(row) != len(self.columns):
                raise ValueError(
                    f"Expected rows[{i}] to have {len(self.columns)} cells (one per column) "
                    f"but got {len(row)}"
                )
            rows.append(tuple(row))
        precision = self.precision
        if isinstance(precision, numbers.Integral) and not isinstance(precision, bool):
            precision = (precision,) * len(self.columns)
        if not isinstance(precision, Sequence) or len(precision) != len(self.columns):
            raise ValueError(
                f"Expected precision to be an int or {len(self.columns)} ints (one per column) "
                f"but got {self.precision!r}"
            )
        for p in precision:
            if isinstance(p, bool) or not isinstance(p, numbers.Integral) or p < 0:
                raise ValueError(f"Expected precisions to be integers >= 0 but got {p!r}")
        groups = None
        if self.column_groups is not None:
            groups = tuple((str(name), int(span)) for name, span in self.column_groups)
            if any(span < 1 for _, span in groups):
                raise ValueError("Expected every column group to span at least 1 column")
            total = sum(span for _, span in groups)
            if total != len(self.columns):
                raise ValueError(
                    f"Expected column_groups spans to add up to {len(self.columns)} columns "
                    f"but they add up to {total}"
                )
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(rows))
        object.__setattr__(self, "column_groups", groups)
        object.__setattr__(self, "precision", tuple(int(p) for p in precision))


@dataclass(frozen=True)
class Figure:
    """A PNG figure of the report (e.g. the bytes a ``*_figure`` function returns).

    Attributes:
        png: the PNG file's bytes.
        caption: a caption shown below the image.
        alt: the image's alternative text (default: the caption).
    """

    png: bytes
    caption: str | None = None
    alt: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.png, bytes | bytearray):
            raise TypeError(f"Expected png to be bytes but got {type(self.png).__name__}")
        if not bytes(self.png[:8]) == PNG_MAGIC:
            raise ValueError("Expected png to hold a PNG file but it lacks the PNG signature")
        object.__setattr__(self, "png", bytes(self.png))


@dataclass(frozen=True)
class PaperClaim:
    """A sentence or number of the paper, shown as the paper's: "Paper (source): text".

    Attributes:
        source: where the paper says it, e.g. ``"App. J.3.1"`` or ``"Table 2"``.
        text: what it says, in its words.
    """

    source: str
    text: str

    def __post_init__(self) -> None:
        for name in ("source", "text"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"Expected {name} to be a non-empty string but got {value!r}")

    @property
    def label(self) -> str:
        """``"Paper (App. J.3.1):"``, the label the report sets before the text."""
        return f"Paper ({self.source}):"

    def __str__(self) -> str:
        return f"{self.label} {self.text}"


@dataclass(frozen=True)
class Section:
    """A section of the report: a heading, then text, tables, the paper's claims and
    figures in that order (ours first).

    Attributes:
        heading: the section's heading.
        text: plain text, ours; blank lines separate paragraphs.
        tables: the section's tables.
        figures: the section's figures.
        claims: what the paper says about the section's subject, each labelled as the
            paper's and drawn apart from our numbers, after the tables.
    """

    heading: str
    text: str | None = None
    tables: Sequence[Table] = field(default_factory=tuple)
    figures: Sequence[Figure] = field(default_factory=tuple)
    claims: Sequence[PaperClaim] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not isinstance(self.heading, str):
            raise TypeError(
                f"Expected heading to be a string but got {type(self.heading).__name__}"
            )
        if self.text is not None and not isinstance(self.text, str):
            raise TypeError(f"Expected text to be a string but got {type(self.text).__name__}")
        for name, kind in (("tables", Table), ("figures", Figure), ("claims", PaperClaim)):
            items = getattr(self, name)
            if isinstance(items, kind):
                items = (items,)
            for i, item in enumerate(items):
                if not isinstance(item, kind):
                    raise TypeError(
                        f"Expected {name}[{i}] to be a {kind.__name__} "
                        f"but got {type(item).__name__}"
                    )
            object.__setattr__(self, name, tuple(items))


_CSS = """
body { font-family: -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif;
  color: #1d1d1f; background: #ffffff; max-width: 1150px; margin: 2em auto; padding: 0 1.2em;
  line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #2b5797; padding-bottom: .25em; }
h2 { font-size: 1.3em; margin-top: 2em; color: #2b5797; }
nav ol { columns: 2; font-size: .92em; }
a { color: #2b5797; }
table { border-collapse: collapse; margin: 1em 0 1.5em; font-size: .92em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4em; }
th, td { border: 1px solid #c9ced6; padding: .3em .65em; }
th { background: #eef2f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.paper, th.paper { color: #6b6f76; font-style: italic; background: #f7f7f7; }
tbody tr:nth-child(even) td:not(.paper) { background: #fafbfd; }
.paper-claim { color: #5b5f66; font-style: italic; background: #f7f7f7;
  border-left: 4px solid #b3b8c0; margin: 1em 0; padding: .45em .9em; }
.paper-label { font-style: normal; font-weight: 600; }
.figures { display: flex; flex-wrap: wrap; gap: 0 1.5em; align-items: flex-start; }
figure { margin: 1em 0 1.5em; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #e3e6ea; }
figcaption { font-size: .9em; color: #444; margin-top: .35em; }
footer { margin-top: 3em; border-top: 1px solid #c9ced6; font-size: .85em; color: #555; }
footer dl { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1em; }
footer dt { font-weight: 600; }
footer dd { margin: 0; font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace;
  word-break: break-all; }
"""


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _is_numeric(value: Any) -> bool:
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # numpy scalars
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _render_text(text: str) -> str:
    paragraphs = [p.strip() for p in text.replace("\r\n", "\n").split("\n\n")]
    return "\n".join(
        "<p>" + "<br>".join(_esc(line) for line in p.split("\n")) + "</p>" for p in paragraphs if p
    )


def _render_table(table: Table) -> str:
    paper = [c.strip().lower().startswith("paper") for c in table.columns]
    out = ["<table>"]
    if table.caption:
        out.append(f"<caption>{_esc(table.caption)}</caption>")
    out.append("<thead>")
    if table.column_groups:
        cells = "".join(
            f'<th colspan="{span}">{_esc(name)}</th>' for name, span in table.column_groups
        )
        out.append(f"<tr>{cells}</tr>")
    cells = "".join(
        f'<th{" class=paper" if p else ""} scope="col">{_esc(c)}</th>'
        for c, p in zip(table.columns, paper, strict=True)
    )
    out.append(f"<tr>{cells}</tr></thead><tbody>")
    for row in table.rows:
        cells = []
        for value, p, digits in zip(row, paper, table.precision, strict=True):
            classes = (["num"] if _is_numeric(value) else []) + (["paper"] if p else [])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{_esc(format_value(value, digits))}</td>")
        out.append(f"<tr>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _render_claim(claim: PaperClaim) -> str:
    return (
        f'<p class="paper-claim"><span class="paper-label">{_esc(claim.label)}</span> '
        f"{_esc(claim.text)}</p>"
    )


def _render_figure(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    alt = figure.alt if figure.alt is not None else (figure.caption or "figure")
    caption = f"<figcaption>{_esc(figure.caption)}</figcaption>" if figure.caption else ""
    return f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(alt)}">{caption}</figure>'


def _default_metadata() -> dict[str, str]:
    from idvae import __version__

    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
    return {
        "idvae version": __version__,
        "generated": now.isoformat().replace("+00:00", "Z"),
        "command": shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
    }


def render_html(
    *,
    title: str,
    sections: Sequence[Section],
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """The report as an HTML string (see ``write_html_report``)."""
    if not isinstance(title, str):
        raise TypeError(f"Expected title to be a string but got {type(title).__name__}")
    if isinstance(sections, Section):
        sections = [sections]
    check_list_of(sections, "sections", Section, "a Section", "Section")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise TypeError(f"Expected metadata to be a dict but got {type(metadata).__name__}")
    meta = _default_metadata()
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})

    body = [f"<h1>{_esc(title)}</h1>"]
    if len(sections) > 1:
        items = "".join(
            f'<li><a href="#s{i}">{_esc(s.heading)}</a></li>' for i, s in enumerate(sections, 1)
        )
        body.append(f"<nav><ol>{items}</ol></nav>")
    for i, section in enumerate(sections, 1):
        parts = [f'<section id="s{i}"><h2>{_esc(section.heading)}</h2>']
        if section.text:
            parts.append(_render_text(section.text))
        parts.extend(_render_table(t) for t in section.tables)
        parts.extend(_render_claim(c) for c in section.claims)
        if section.figures:  # small figures (heatmaps) flow side by side
            figures = "\n".join(_render_figure(f) for f in section.figures)
            parts.append(f'<div class="figures">\n{figures}\n</div>')
        parts.append("</section>")
        body.append("\n".join(parts))
    entries = "".join(f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in meta.items())
    body.append(f"<footer><dl>{entries}</dl></footer>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def write_html_report(
    path: str | os.PathLike,
    *,
    title: str,
    sections: Sequence[Section],
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write a self-contained HTML report, atomically.

    Images are inlined as ``data:image/png;base64,`` URIs and the CSS is inline, so the file
    opens in any browser without a server or network. A footer lists the idvae version, the
    time of generation (UTC), the command line, Python and the machine, then ``metadata``
    (which may override these entries).

    Args:
        path: where to write the ``.html`` file; its directory is created if needed.
        title: the report's title.
        sections: the sections, in order.
        metadata: extra footer entries, e.g. ``{"seed": 0, "wall time (s)": 81.2}``.

    Returns:
        The path written.

    Example:
        >>> from idvae.report import Section, Table, write_html_report
        >>> table = Table(["dataset", "weak MCC", "paper"], [["#1", 0.995, 0.99]])
        >>> write_html_report("report.html", title="Table 2",
        ...                   sections=[Section("Table 2", tables=[table])])  # doctest: +SKIP
    """
    text = render_html(title=title, sections=sections, metadata=metadata)
    path = Path(path)
    with atomic_write(path, "w") as fh:
        os.chmod(fh.fileno(), REPORT_MODE)
        fh.write(text)
    return path


def write_png(path: str | os.PathLike, png: bytes) -> Path:
    """Write PNG bytes (as the ``*_figure`` functions return them) to ``path``, atomically."""
    Figure(png)  # validates the signature
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        os.chmod(fh.fileno(), REPORT_MODE)
        fh.write(png)
    return path
