#!/usr/bin/env python
"""Benchmark ``medseg listen`` under load: senders at once, a dropped association, a SIGKILL and restart.

A throw-away Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) receives the SEGs. The scenario is
the one ``tests/pacs/test_listener_load.py`` asserts (``tests/pacs/load.py``): ``--senders`` pynetdicom
senders share ``--series`` CT series of ``--slices`` 48 x 48 instances; one drops its association
half-way through a series and comes back; the listener (the bundled model, ``--workers`` processes)
is SIGKILLed once half of the instances are acknowledged and restarted. Printed: instances received
per second (the restart's pause included), series segmented and sent per minute (from the first
instance to the last SEG in Orthanc), and the listener's peak resident memory (its process and
workers, VmHWM summed).

Example::

    .venv/bin/python benchmarks/listener_load.py [--series 20 --slices 100 --senders 4 --workers 2]
"""

from __future__ import annotations

import argparse
import io
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pydicom  # noqa: E402

from medseg.models.bundled import bundled_model_path  # noqa: E402
from tests.pacs.conftest import start_orthanc, stop_orthanc  # noqa: E402
from tests.pacs.load import run_load  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--slices", type=int, default=100)
    parser.add_argument("--senders", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--quiet-time", type=float, default=10.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="medseg-listener-load-"))
    orthanc = start_orthanc(work / "orthanc")
    try:
        run = run_load(
            bundled_model_path(),
            work,
            orthanc,
            series=args.series,
            slices=args.slices,
            senders=args.senders,
            workers=args.workers,
            quiet_time=args.quiet_time,
        )
        try:
            deadline = time.monotonic() + 1800
            while time.monotonic() < deadline:
                segs = set()
                for series in orthanc.series_of("SEG"):
                    for instance in series["Instances"]:
                        ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)), stop_before_pixels=True)
                        segs.add(str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID))
                if len(segs) >= args.series:
                    break
                time.sleep(0.5)
            done = time.monotonic()
        finally:
            run.stop()
        minutes = (done - run.started_at) / 60
        print(
            f"{args.senders} senders, {args.series} series x {args.slices} instances, {args.workers} worker(s), "
            f"quiet time {args.quiet_time:g} s, 1 dropped association, {run.kills} SIGKILL + restart"
        )
        print(f"instances acknowledged        {len(run.acknowledged)} of {run.instances}")
        print(
            f"received                      {run.instances_per_second:7.1f} instances/s "
            f"({run.received_at - run.started_at:.1f} s)"
        )
        print(
            f"segmented and sent            {len(segs) / minutes:7.1f} series/min ({len(segs)} SEGs in Orthanc, "
            f"{minutes * 60:.1f} s from the first instance)"
        )
        print(f"listener peak memory          {run.peak_rss_mb:7.0f} MB (process and workers, VmHWM)")
    finally:
        stop_orthanc(orthanc)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
