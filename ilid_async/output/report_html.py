"""The stats report on disk: word-frequency bar charts (PNG, log count axis, rules §7) and one
HTML page that shows the numbers, the charts and a sample grid of images with their labels.

Every string from the dataset came from a web page or the model, so each one is HTML-escaped,
and image paths go through dataset.safe_join: nothing crawled can inject markup or point the
report outside the images folder. matplotlib is imported here only, when a report is written.
"""

from __future__ import annotations

import html
import os
import pathlib
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from ilid_async.atomic import write_atomic
from ilid_async.output.dataset import safe_join
from ilid_async.fields import DATASET_ORDER
from ilid_async.output.stats import TOP_WORDS, UNIQUE_FIELDS, WORD_FIELDS, DatasetStats, folder_of, printable

__all__ = ["chart_name", "write_chart", "write_report", "sample_entries"]

SAMPLE_FIELDS = (*DATASET_ORDER, "source")
# The page runs no script and loads nothing but local images, even if escaping were ever missed.
_CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'"
_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table.numbers td, table.numbers th { padding: 2px 12px; text-align: right; }
table.numbers td:first-child, table.numbers th:first-child { text-align: left; }
.charts img { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1em; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
.grid figure { margin: 0; border: 1px solid #ddd; padding: 6px; font-size: 12px; overflow-wrap: anywhere; }
.grid img { width: 100%; height: auto; }
.grid dt { font-weight: bold; }
.grid dd { margin: 0 0 4px 0; }
"""


def chart_name(field: str) -> str:
    return f"word_frequencies_{field}.png"


def write_chart(path: pathlib.Path, field: str, top: Sequence[tuple[str, int]]) -> None:
    """A bar chart of (word, count) with a logarithmic count axis, as the ILID README's."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in containers
    from matplotlib.figure import Figure

    # Figure() instead of pyplot: no global figure registry to leak or to lock across threads.
    fig = Figure(figsize=(max(6.0, 0.3 * len(top) + 2), 4.5), dpi=100)
    ax = fig.add_subplot()
    if top:
        from matplotlib.ticker import FuncFormatter, NullFormatter

        # Crawled words: shortened and without control characters; parse_math=False so that a
        # "$" in a word is text, not a TeX formula matplotlib would try (and fail) to render.
        labels = [printable(w, 30) for w, _ in top]
        bars = ax.bar(range(len(top)), [n for _, n in top], color="#4477aa")
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)  # a count of 1 sits at log 0: give its bar a visible height
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else ""))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.bar_label(bars, fontsize=6)  # exact counts: a log axis is hard to read off
        ax.set_xticks(range(len(top)), labels, rotation=90, fontsize=8, parse_math=False)
        ax.set_xlim(-0.6, len(top) - 0.4)
    else:
        ax.text(0.5, 0.5, "no values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_ylabel("count (log)")
    ax.set_title(f"Top-{len(top)} word frequencies: {field}", parse_math=False)
    fig.tight_layout()
    write_atomic(path, lambda f: fig.savefig(f, format="png"))


def sample_entries(entries: Sequence[dict[str, Any]], images_dir: pathlib.Path,
                   count: int) -> list[tuple[dict[str, Any], pathlib.Path]]:
    """Up to `count` entries whose image is on disk, spread evenly over the dataset (the same
    ones on every run). Entries whose image path would leave `images_dir` are never shown."""
    if count <= 0:
        return []
    found = []
    for entry in entries:
        try:
            path = safe_join(images_dir, entry.get("image"))  # type: ignore[arg-type]
        except ValueError:
            continue
        if path.is_file():
            found.append((entry, path))
    if len(found) <= count:
        return found
    step = len(found) / count
    return [found[int(i * step)] for i in range(count)]


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _numbers_table(stats: DatasetStats) -> str:
    rows = [f"<tr><td>{f}</td><td>{stats.unique[f]}</td><td>{stats.missing[f]}</td></tr>"
            for f in UNIQUE_FIELDS]
    rows.append(f"<tr><td>folder</td><td>{stats.folders}</td><td></td></tr>")
    rows.append(f"<tr><td>source</td><td>{len(stats.per_source)}</td><td></td></tr>")
    return ('<table class="numbers"><tr><th>field</th><th>unique</th><th>missing</th></tr>'
            + "".join(rows) + "</table>")


def _sources_table(stats: DatasetStats) -> str:
    rows = "".join(f"<tr><td>{_esc(s) or '(none)'}</td><td>{n}</td></tr>" for s, n in stats.per_source)
    return f'<table class="numbers"><tr><th>source</th><th>records</th></tr>{rows}</table>'


def _figure(entry: dict[str, Any], image: pathlib.Path, report_dir: pathlib.Path) -> str:
    # A relative link, so the report works when the run folder is moved or served as is.
    src = quote(pathlib.Path(os.path.relpath(image, report_dir)).as_posix())
    items = "".join(f"<dt>{name}</dt><dd>{_esc(entry.get(name))}</dd>" for name in SAMPLE_FIELDS)
    alt = _esc(entry.get("label_short"))
    return f'<figure><img src="{_esc(src)}" alt="{alt}" loading="lazy"><dl>{items}</dl></figure>'


def write_report(
    report_dir: pathlib.Path,
    stats: DatasetStats,
    entries: Sequence[dict[str, Any]],
    *,
    dataset_path: pathlib.Path,
    images_dir: pathlib.Path,
    sample: int = 24,
) -> pathlib.Path:
    """Write the charts and ``index.html`` into `report_dir`; return the HTML file's path."""
    report_dir.mkdir(parents=True, exist_ok=True)
    for name in WORD_FIELDS:
        write_chart(report_dir / chart_name(name), name, stats.top_words[name])
    shown = sample_entries(entries, images_dir, sample)
    with_image = sum(1 for e in entries if folder_of(e) is not None)
    charts = "".join(f'<h3>{name}</h3><img src="{chart_name(name)}" alt="word frequencies of {name}">'
                     for name in WORD_FIELDS)
    figures = "".join(_figure(entry, image, report_dir) for entry, image in shown)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Dataset report: {_esc(dataset_path.name)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>Dataset report</h1>
<p>Dataset: <code>{_esc(dataset_path)}</code><br>Images: <code>{_esc(images_dir)}</code></p>
<h2>Numbers</h2>
<p>Records: <b>{stats.records}</b></p>
{_numbers_table(stats)}
<h2>Records per source</h2>
{_sources_table(stats)}
<h2>Top-{TOP_WORDS} word frequencies</h2>
<div class="charts">{charts}</div>
<h2>Sample</h2>
<p>{len(shown)} of the {with_image} entries with an image path (only images found on disk are shown).</p>
<div class="grid">{figures}</div>
</body></html>
"""
    index = report_dir / "index.html"
    write_atomic(index, lambda f: f.write(page.encode("utf-8")))
    return index
