#!/usr/bin/env python
"""Benchmark what the quality signals add to ``medseg predict``: the confidence map and ``assess_case``.

One large CT phantom (512 x 512 x 200 at 0.8 x 0.8 x 1.5 mm by default) is segmented by the
bundled phantom model, alternately with :meth:`Segmenter.segment` (labels only, as before the
quality signals) and :meth:`Segmenter.segment_with_confidence` followed by
:func:`medseg.inference.quality.assess_case` (what ``medseg predict`` now runs), ``--repeats``
times each, in one process. The bundled network is tiny (0.7 M parameters) and the scan is
resampled to 3.25 mm, so inference itself is short: this is the worst case for the relative
cost, which lies in resampling-time softmax on the scan's grid and one pass over the labels.

Example::

    .venv/bin/python benchmarks/quality_overhead.py [--size 512 --slices 200 --repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.geometry import Geometry  # noqa: E402
from medseg.inference.engine import Segmenter  # noqa: E402
from medseg.inference.quality import assess_case  # noqa: E402
from medseg.models.bundled import bundled_model_path  # noqa: E402
from medseg.synthetic import make_phantom  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    spacing = (300.0 / args.size, 300.0 / args.size, 1.5)
    origin = (-150.0, -150.0, -0.75 * args.slices)
    image, _ = make_phantom(7, geometry=Geometry.from_spacing((args.size, args.size, args.slices), spacing, origin))
    segmenter = Segmenter.from_folder(bundled_model_path(), device="cpu")
    segmenter.segment(image)  # warm up
    plain, quality = [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        segmenter.segment(image)
        plain.append(time.perf_counter() - started)
        started = time.perf_counter()
        labels, confidence = segmenter.segment_with_confidence(image)
        middle = time.perf_counter()
        found = assess_case(labels, confidence, fingerprint=segmenter.fingerprint)
        quality.append((middle - started, time.perf_counter() - middle))
    base = float(np.median(plain))
    with_map = float(np.median([q[0] for q in quality]))
    assess = float(np.median([q[1] for q in quality]))
    voxels = int(np.prod(image.spatial_shape))
    print(f"scan {image.spatial_shape} ({voxels / 1e6:.1f} M voxels), bundled model, CPU, median of {args.repeats}")
    print(f"segment (labels only)            {base:6.2f} s")
    print(f"segment_with_confidence          {with_map:6.2f} s  ({with_map / base:.2f}x)")
    print(f"assess_case                      {assess:6.2f} s")
    print(
        f"quality signals in all           {with_map + assess - base:6.2f} s  (+{(with_map + assess) / base - 1:.0%})"
    )
    print(f"confidence map                   {confidence.nbytes / 2**20:6.1f} MiB (uint8, as the labels)")
    print(f"flags on this good scan          {list(found.flags)}")


if __name__ == "__main__":
    main()
