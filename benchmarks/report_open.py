#!/usr/bin/env python
"""Benchmark the batch report on a large batch: building it, its size, and opening it in Chromium.

The script writes a synthetic ``medseg predict`` output folder of ``--cases`` cases
(1,000 by default) without running a model: ``manifest.csv`` with the quality columns
(about 2% of cases flagged by themselves, 2% by the batch, 1% failed), ``run.json`` and a
1200 x 480 preview PNG per finished case, as ``--preview`` writes them (grey body, coloured
organs, a coarse grain; about 130 kB each). Then it times:

* build   ``medseg.workflows.report.write_report(OUT)``: reading the folder, shrinking every
          preview to a JPEG thumbnail, plotting, writing ``report.html``; best of ``--repeats``.
* open    headless Chromium (selenium, Debian's ``chromium``/``chromedriver``) loading the file
          from disk until the table is rendered (``document.body.dataset.ready``), best and
          median of ``--repeats`` fresh loads; the page's own ``performance.now()`` at that
          point is reported beside the wall time.
* sort / filter   clicking a volume column's header, typing into the filter and ticking
          "flagged only": milliseconds from the event to the rows being rebuilt.

Example::

    .venv/bin/python benchmarks/report_open.py
    .venv/bin/python benchmarks/report_open.py --cases 200 --repeats 5 --workdir /tmp/rb --keep
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests.browser: the same Chromium set-up as the tests

LABELS = {"liver": 1500.0, "spleen": 200.0, "kidney": 160.0}
COLOURS = {"liver": (230, 25, 75), "spleen": (60, 180, 75), "kidney": (0, 130, 200)}


def write_batch(out: Path, cases: int, seed: int = 0) -> None:
    """A synthetic prediction output folder: manifest with quality columns, run.json, previews."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows, facts = [], {}
    texture = np.kron(rng.normal(0, 10, (120, 300)), np.ones((4, 4))).astype(np.int16)  # coarse, as CT grain looks
    for index in range(cases):
        name = f"case{index:05d}"
        failed = rng.random() < 0.01
        volumes = {label: max(0.0, rng.normal(mean, mean * 0.15)) for label, mean in LABELS.items()}
        flags, batch_flags = [], []
        if rng.random() < 0.02:
            flags.append(f"spleen: {rng.integers(2, 5)} pieces, largest {rng.integers(55, 90)}%")
        if rng.random() < 0.02:
            volumes["liver"] *= 2.3
            batch_flags.append(f"liver: {volumes['liver']:.0f} mL, far above this batch (median 1500 mL)")
        row = {
            "case": name,
            "input": f"/data/scans/{name}.nii.gz",
            "series_uid": "",
            "status": "failed" if failed else "done",
            "outputs": "" if failed else f"{out / name}.nii.gz;{out / name}.preview.png",
            "seconds": f"{rng.uniform(20, 90):.2f}",
            "seg_check": "",
            "warnings": "spacing 5.0 mm between slices; the model saw 0.8-2.5 mm" if rng.random() < 0.03 else "",
            "message": f"/data/scans/{name}.nii.gz: not a readable NIfTI file" if failed else "",
            "flags": "" if failed else ";".join(flags),
            "batch_flags": "" if failed else ";".join(batch_flags),
            "confidence": "" if failed else f"{rng.uniform(0.75, 0.98):.2f}",
            "volumes_ml": "" if failed else ";".join(f"{k}={v:.1f}" for k, v in volumes.items()),
        }
        rows.append(row)
        facts[name] = {"input": row["input"], "status": row["status"], "seconds": float(row["seconds"])}
        if failed:
            continue
        canvas = np.full((480, 1200), 0, np.int16)
        image = Image.fromarray(np.clip(canvas + 20, 0, 255).astype(np.uint8)).convert("RGB")
        draw = ImageDraw.Draw(image)
        for panel in range(3):
            x0 = 400 * panel
            draw.ellipse((x0 + 40, 60, x0 + 360, 420), fill=(110, 110, 110))
            for label, (dx, dy, r) in zip(COLOURS, ((-60, -20, 70), (80, 30, 35), (20, 110, 25))):
                r = r * (volumes[label] / LABELS[label]) ** (1 / 3)
                cx, cy = x0 + 200 + dx + rng.integers(-10, 10), 240 + dy
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[label])
        shift = rng.integers(0, 4)
        pixels = np.clip(np.asarray(image, np.int16) + np.roll(texture, shift, 1)[..., None], 0, 255)
        pixels = pixels.astype(np.uint8)
        Image.fromarray(pixels).save(out / f"{name}.preview.png", optimize=False)
    with open(out / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    run = {
        "environment": {"medseg": "0.1.0", "python": platform.python_version(), "torch": "2.13.0", "monai": "1.6.1"},
        "device": "cuda:0",
        "model": {"name": "benchmark-abdomen", "version": "1.0.0+sha256:00000000"},
        "sessions": [{"key": "s1", "seconds": sum(float(r["seconds"]) for r in rows)}],
        "cases": facts,
    }
    (out / "run.json").write_text(json.dumps(run, indent=1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="where the folder goes (default: a temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the folder, and reuse one of the same size")
    args = parser.parse_args()

    from medseg.workflows.report import write_report
    from tests import browser

    work = args.workdir or Path(tempfile.mkdtemp(prefix="medseg-report-bench-"))
    out = work / f"out-{args.cases}"
    try:
        if not (args.keep and (out / "manifest.csv").is_file()):
            shutil.rmtree(out, ignore_errors=True)
            started = time.perf_counter()
            write_batch(out, args.cases)
            print(f"wrote {args.cases} cases in {time.perf_counter() - started:.1f} s: {out}")
        previews = sum(p.stat().st_size for p in out.glob("*.preview.png"))
        builds = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            result = write_report(out)
            builds.append(time.perf_counter() - started)
        size = result.path.stat().st_size
        why = browser.missing()
        opens, page_ms, actions = [], [], {}
        if why:
            print(f"open: not measured: {why}")
        else:
            driver = browser.start(work)
            try:
                for _ in range(args.repeats):
                    driver.get("about:blank")
                    started = time.perf_counter()
                    driver.get(result.path.as_uri())
                    while not driver.execute_script("return document.body && document.body.dataset.ready === '1'"):
                        time.sleep(0.005)
                    opens.append(time.perf_counter() - started)
                    page_ms.append(driver.execute_script("return performance.now()"))
                rows = driver.execute_script("return document.querySelectorAll('#cases tbody tr').length")
                assert rows == args.cases, f"{rows} rows for {args.cases} cases"
                actions = driver.execute_script("""
                    const time = (f) => { const t = performance.now(); f(); return performance.now() - t; };
                    const filter = document.getElementById('filter');
                    return {
                      'sort by liver volume': time(() => document.querySelector('th[data-key="vol:liver"]').click()),
                      'sort again (descending)': time(() => document.querySelector('th[data-key="vol:liver"]').click()),
                      'filter "pieces"': time(() => { filter.value = 'pieces'; filter.dispatchEvent(new Event('input')); }),
                      'flagged only': time(() => { filter.value = ''; document.getElementById('flagged-only').click(); }),
                    };""")
                assert not browser.console_errors(driver)
            finally:
                driver.quit()
        print(
            f"\n== report of {args.cases} cases ({sum(1 for _ in out.glob('*.preview.png'))} previews, "
            f"{previews / 1e6:.1f} MB of PNG) =="
        )
        print(f"build (write_report)   best {min(builds):.2f} s   (runs: {', '.join(f'{b:.2f}' for b in builds)})")
        print(f"report.html            {size / 1e6:.2f} MB ({size / args.cases / 1e3:.1f} kB per case)")
        if opens:
            print(
                f"open to table rendered best {min(opens):.2f} s, median {statistics.median(opens):.2f} s "
                f"(page's performance.now(): {min(page_ms):.0f} ms best)"
            )
            for name in ("sort by liver volume", "sort again (descending)", 'filter "pieces"', "flagged only"):
                print(f"  {name:<26} {actions[name]:.0f} ms")
        import PIL

        print(
            f"\npython {platform.python_version()}, Pillow {PIL.__version__}, "
            f"{'Chromium ' + driver.capabilities.get('browserVersion', '?') if opens else 'no browser'}, "
            f"CPUs: {__import__('os').cpu_count()}"
        )
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)
            if args.workdir is None:
                shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
