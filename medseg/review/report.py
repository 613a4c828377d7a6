"""The batch report: one self-contained HTML page that opens from disk, with no server and no network.

:func:`render_report` lays out a :class:`~medseg.review.batch.Batch`: a summary (counts,
time, model, versions), per-label volume distributions as inline SVG with the flagged
cases in red, and the cases as JSON that ``static/report.js`` turns into a sortable,
filterable table with thumbnails (each preview PNG shrunk to a small JPEG data URI) and an
export of the flagged cases as CSV. CSS and JavaScript are inlined from ``static/``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from medseg.review.batch import Batch, BatchCase

logger = logging.getLogger(__name__)

#: Thumbnail width in pixels (previews are three panels side by side, so about 3:1).
THUMBNAIL_WIDTH = 240
#: case -> label name -> metric (``dice``, ``hd95_mm``) -> value (NaN or None: undefined).
Scores = Mapping[str, Mapping[str, Mapping[str, float | None]]]
_LIBRARIES = ("torch", "monai", "numpy", "pydicom", "highdicom", "nibabel", "SimpleITK", "cuda")


def render_report(batch: Batch, *, scores: Scores | None = None, reference: str = "") -> str:
    """The report page of ``batch`` as one HTML string.

    Args:
        batch: the output folder's cases and ``run.json``.
        scores: Dice and HD95 per case and label (from ``medseg evaluate``), shown as table columns.
        reference: what the scores were measured against, for the summary.
    """
    labels = batch.labels
    score_labels = list(dict.fromkeys(label for per_case in (scores or {}).values() for label in per_case))
    data = {
        "labels": labels,
        "scoreLabels": score_labels,
        "cases": [
            _case_data(case, (scores or {}).get(case.name, {}), thumb)
            for case, thumb in zip(batch.cases, _thumbnails([case.preview for case in batch.cases]))
        ],
    }
    # every "<" escaped, so no "</script>" or "<!--" in a case name or flag can end the script early
    payload = json.dumps(data, allow_nan=False, separators=(",", ":")).replace("<", "\\u003c")
    title = f"medseg report: {batch.folder.name or batch.folder}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{html.escape(title)}</title>",
            f"<style>{_static('report.css')}</style>",
            "</head><body>",
            f"<h1>{html.escape(title)}</h1>",
            _summary(batch, reference),
            _distributions(batch),
            '<section id="cases-section"><h2>Cases</h2>',
            '<div class="controls"><input id="filter" type="search" placeholder="filter: case, status, flag, warning"'
            ' aria-label="filter"> <label><input id="flagged-only" type="checkbox"> flagged only</label>'
            ' <button id="export-flagged" type="button">export flagged cases (CSV)</button>'
            ' <span id="shown"></span></div>',
            '<table id="cases"><thead></thead><tbody></tbody></table></section>',
            f'<script type="application/json" id="case-data">{payload}</script>',
            f"<script>{_static('report.js')}</script>",
            "</body></html>",
            "",
        ]
    )


def thumbnail(path: Path | None, *, width: int = THUMBNAIL_WIDTH) -> str:
    """A preview PNG shrunk to ``width`` pixels as a JPEG data URI ("" without a readable preview)."""
    if path is None:
        return ""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.thumbnail((width, width), Image.Resampling.LANCZOS)
            image = image.convert("RGB")
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=70, optimize=True)
    except (OSError, UnidentifiedImageError) as exc:
        logger.warning("%s: no thumbnail: %s", path, exc)
        return ""
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _thumbnails(previews: list[Path | None]) -> list[str]:
    """:func:`thumbnail` of each preview, on a few threads (Pillow decodes and resizes without the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(thumbnail, previews))


def _case_data(case: BatchCase, scores: Mapping[str, Mapping[str, float | None]], thumb: str) -> dict[str, Any]:
    return {
        "case": case.name,
        "status": case.status,
        "flagged": case.flagged,
        "flags": list(case.flags),
        "batchFlags": list(case.batch_flags),
        "confidence": case.confidence,
        "volumes": case.volumes_ml,
        "dice": {label: _finite(s.get("dice")) for label, s in scores.items()},
        "hd95": {label: _finite(s.get("hd95_mm")) for label, s in scores.items()},
        "warnings": list(case.warnings),
        "message": case.message,
        "seconds": case.seconds,
        "input": case.input,
        "thumb": thumb,
    }


def _summary(batch: Batch, reference: str) -> str:
    counts = batch.counts()
    run = batch.run
    model = run.get("model") if isinstance(run.get("model"), dict) else {}
    env = run.get("environment") if isinstance(run.get("environment"), dict) else {}
    sessions = [s for s in run.get("sessions", []) if isinstance(s, dict)]
    seconds = sum(float(s.get("seconds") or 0) for s in sessions) or sum(c.seconds or 0 for c in batch.cases)
    libraries = ", ".join(f"{name} {env[name]}" for name in _LIBRARIES if env.get(name))
    items = [
        ("cases", str(counts["cases"])),
        ("done", str(counts["done"])),
        ("failed", str(counts["failed"])),
        ("flagged", str(counts["flagged"])),
        ("total time", _duration(seconds)),
        ("model", " ".join(str(model[k]) for k in ("name", "version") if model.get(k)) or "unknown"),
        ("device", str(run.get("device") or "unknown")),
        ("medseg", str(env.get("medseg") or "unknown")),
        ("libraries", libraries or "unknown"),
    ]
    if reference:
        items.append(("scored against", reference))
    cells = "".join(
        f'<div class="fact" data-fact="{html.escape(k)}"><span>{html.escape(k)}</span> <b>{html.escape(v)}</b></div>'
        for k, v in items
    )
    return f'<section id="summary"><h2>Summary</h2><div class="facts">{cells}</div></section>'


def _duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {rest:02d} s" if minutes else f"{seconds:.1f} s"


def _distributions(batch: Batch) -> str:
    """One strip plot per label: every case's volume as a dot (flagged ones red, on top) over a box of the quartiles."""
    plots = [_strip(label, batch.cases) for label in batch.labels]
    if not plots:
        return '<section id="distributions"><h2>Volumes</h2><p>No volumes recorded.</p></section>'
    return f'<section id="distributions"><h2>Volumes (mL)</h2>{"".join(plots)}</section>'


def _strip(label: str, cases: tuple[BatchCase, ...], width: int = 720, height: int = 64) -> str:
    points = [(c, c.volumes_ml[label]) for c in cases if label in c.volumes_ml]
    values = np.array([v for _, v in points], dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    span = (high - low) or max(abs(high), 1.0)
    left, right = 130, width - 20

    def x(value: float) -> float:
        return left + (value - low) / span * (right - left)

    q1, median, q3 = (float(q) for q in np.percentile(values, [25, 50, 75]))
    middle = height / 2 - 6
    parts = [
        f'<svg class="strip" data-label="{html.escape(label)}" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{html.escape(label)} volumes">',
        f'<text x="4" y="{middle + 4:.0f}" class="name">{html.escape(label)}</text>',
        f'<rect x="{x(q1):.1f}" y="{middle - 12:.1f}" width="{max(x(q3) - x(q1), 1):.1f}" height="24" class="box"/>',
        f'<line x1="{x(median):.1f}" x2="{x(median):.1f}" y1="{middle - 12:.1f}" y2="{middle + 12:.1f}" class="median"/>',
    ]
    ordered = sorted(enumerate(points), key=lambda item: item[1][0].flagged)  # flagged drawn last, on top
    for index, (case, value) in ordered:
        jitter = (math.sin(index * 12.9898) * 43758.5453) % 1 * 16 - 8
        kind = "flagged" if case.flagged else "ok"
        parts.append(
            f'<circle cx="{x(value):.1f}" cy="{middle + jitter:.1f}" r="{4 if case.flagged else 2.5}" class="{kind}" '
            f'data-case="{html.escape(case.name)}"><title>{html.escape(case.name)}: {value:.1f} mL</title></circle>'
        )
    for value, anchor in ((low, "start"), (median, "middle"), (high, "end")):
        parts.append(
            f'<text x="{x(value):.1f}" y="{height - 4}" text-anchor="{anchor}" class="tick">{value:.0f}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def _static(name: str) -> str:
    return resources.files("medseg.review").joinpath("static", name).read_text(encoding="utf-8")
