#!/usr/bin/env python
"""Benchmark reading a CT DICOM series: medseg vs SimpleITK vs a plain pydicom loop.

The script writes a 512x512xN CT series itself (one file per slice, shuffled
extension-less names, full CT headers) with medseg's own writer, then times in
one run, for each transfer syntax asked for:

* medseg    ``medseg.io.dicom.scan(folder)`` + ``read_series(series)``: discovery,
            decode and rescale, as ``medseg convert`` does;
* SimpleITK ``ImageSeriesReader.GetGDCMSeriesFileNames(folder)`` + ``Execute()``
            (MetaDataDictionaryArrayUpdate off, the default) + an array view;
* pydicom   ``dcmread`` every file, sort by ImagePositionPatient z, stack
            ``pixel_array`` and apply RescaleSlope/Intercept.

"cold" is the first read after the files were evicted from the page cache with
``posix_fadvise(DONTNEED)`` (best effort: no root needed, but a file another
process holds mapped may stay cached); "warm" is the best of ``--repeats`` reads
with the files cached. The three results (and the volume written) are compared
voxel for voxel; the script exits 1 on any mismatch, never because of speed.

Ratios above 1 mean medseg is faster: ``SimpleITK / medseg`` and
``pydicom loop / medseg``.

Example::

    .venv/bin/python benchmarks/read_dicom_series.py --slices 300 --syntax all
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SYNTAXES = {
    "explicit": ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    "jpeg2000": ("1.2.840.10008.1.2.4.90", "JPEG 2000 Lossless"),
    "rle": ("1.2.840.10008.1.2.5", "RLE Lossless"),
    "jpegls": ("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless"),
}
SPACING = (0.7, 0.7, 1.0)
SLAB = 32  # slices per make_phantom call: keeps memory small for tall volumes
SEED = 20240601


# -- the series ---------------------------------------------------------------------------


def make_volume(size: int, slices: int):  # -> medseg.volume.Volume
    """A CT-like int16 HU volume on a (size, size, slices) grid of 0.7x0.7x1 mm.

    ``make_phantom`` is called slab by slab (the anatomy lives in patient space,
    so the slabs join seamlessly); its own noise is switched off and replaced by
    noise drawn per slab, so slabs do not repeat the same noise pattern.
    """
    from medseg.geometry import Geometry
    from medseg.synthetic import PhantomSpec, make_phantom
    from medseg.volume import Volume, VolumeKind

    # Centre the field of view on the patient-space origin the phantom is built around.
    origin = (-(size - 1) * SPACING[0] / 2, -(size - 1) * SPACING[1] / 2, -(slices - 1) * SPACING[2] / 2)
    full = Geometry.from_spacing((size, size, slices), SPACING, origin)
    hu = np.empty(full.shape, dtype=np.int16)
    rng = np.random.default_rng(SEED)
    spec = PhantomSpec(noise_hu=0.0)
    for start in range(0, slices, SLAB):
        count = min(SLAB, slices - start)
        slab_origin = (origin[0], origin[1], origin[2] + start * SPACING[2])
        geometry = Geometry.from_spacing((size, size, count), SPACING, slab_origin)
        image, _ = make_phantom(SEED, spec, geometry)
        values = image.channel(0).astype(np.float32)
        body = values > -500
        values += rng.normal(0.0, 12.0, values.shape).astype(np.float32) * body
        hu[:, :, start : start + count] = np.clip(np.rint(values), -1024, 3071).astype(np.int16)
    return Volume(hu, full, kind=VolumeKind.IMAGE)


def shuffled_names(count: int, seed: int = SEED) -> list[str]:
    """Extension-less names whose sorted order has nothing to do with slice order."""
    rng = random.Random(seed)
    numbers = rng.sample(range(10**7, 10**8), count)
    return [f"IM{n}" for n in numbers]


def ensure_series(workdir: Path, key: str, size: int, slices: int, get_volume: Callable[[], object]) -> tuple[Path, float]:
    """The series folder for ``key``, written unless an earlier run left a complete one.

    Returns the folder and the seconds spent writing (0 when reused).
    """
    from medseg.io.dicom.writer import write_dicom_series

    uid, _ = SYNTAXES[key]
    folder = workdir / f"{key}-{size}x{size}x{slices}"
    marker = workdir / f"{folder.name}.complete.json"
    wanted = {"syntax": uid, "size": size, "slices": slices, "seed": SEED}
    if marker.exists() and folder.is_dir():
        try:
            if json.loads(marker.read_text()) == wanted and len(os.listdir(folder)) == slices:
                return folder, 0.0
        except (OSError, ValueError):
            pass
    if folder.exists():
        shutil.rmtree(folder)
    marker.unlink(missing_ok=True)
    start = time.perf_counter()
    write_dicom_series(
        get_volume(),
        folder,
        transfer_syntax=uid,
        series_description=f"benchmark {key}",
        file_names=shuffled_names(slices),
    )
    marker.write_text(json.dumps(wanted))
    return folder, time.perf_counter() - start


# -- the readers ----------------------------------------------------------------------------


@dataclass
class Result:
    """One read: the (i, j, k) array and the seconds spent, split into stages."""

    array: np.ndarray
    stages: dict[str, float]
    cpu: float = 0.0  # CPU seconds, this process and its finished children (decoding pools)

    @property
    def total(self) -> float:
        return sum(self.stages.values())


def read_medseg(folder: Path) -> Result:
    from medseg.io.dicom import read_series, scan

    t0 = time.perf_counter()
    found = scan(folder)
    series = found.volumes()
    t1 = time.perf_counter()
    if len(series) != 1:
        raise RuntimeError(f"medseg found {len(series)} series in {folder}, expected 1")
    volume = read_series(series[0])
    t2 = time.perf_counter()
    return Result(volume.channel(0), {"discover": t1 - t0, "read": t2 - t1})


def read_sitk(folder: Path) -> Result:
    import SimpleITK as sitk

    t0 = time.perf_counter()
    reader = sitk.ImageSeriesReader()
    names = reader.GetGDCMSeriesFileNames(str(folder))
    t1 = time.perf_counter()
    reader.SetFileNames(names)
    image = reader.Execute()
    array = sitk.GetArrayViewFromImage(image)  # (k, j, i), no copy
    t2 = time.perf_counter()
    # Keep the image alive as long as the view (the view does not own its buffer).
    result = Result(array.transpose(2, 1, 0), {"discover": t1 - t0, "read": t2 - t1})
    result.owner = image  # type: ignore[attr-defined]
    return result


def read_pydicom(folder: Path) -> Result:
    import pydicom

    t0 = time.perf_counter()
    datasets = [pydicom.dcmread(os.path.join(folder, name)) for name in os.listdir(folder)]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    t1 = time.perf_counter()
    stored = np.stack([ds.pixel_array for ds in datasets])
    slopes = np.array([float(ds.get("RescaleSlope", 1)) for ds in datasets])
    intercepts = np.array([float(ds.get("RescaleIntercept", 0)) for ds in datasets])
    if np.all(slopes == np.round(slopes)) and np.all(intercepts == np.round(intercepts)):
        values = stored.astype(np.int32) * slopes.astype(np.int32)[:, None, None] + intercepts.astype(np.int32)[:, None, None]
    else:
        values = stored * slopes[:, None, None].astype(np.float32) + intercepts[:, None, None].astype(np.float32)
    t2 = time.perf_counter()
    return Result(values.transpose(2, 1, 0), {"discover": t1 - t0, "read": t2 - t1})


READERS: dict[str, Callable[[Path], Result]] = {
    "medseg": read_medseg,
    "SimpleITK": read_sitk,
    "pydicom loop": read_pydicom,
}


# -- timing ---------------------------------------------------------------------------------


def evict(folder: Path) -> bool:
    """Ask the kernel to drop the series' files from the page cache; False if it cannot."""
    if not hasattr(os, "posix_fadvise"):
        return False
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return True


@dataclass
class Timings:
    cold: Result | None = None
    warm: list[Result] = field(default_factory=list)

    @property
    def best(self) -> Result:
        return min(self.warm, key=lambda r: r.total)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(reader: Callable[[Path], Result], folder: Path) -> Result:
    start = cpu_seconds()
    result = reader(folder)
    result.cpu = cpu_seconds() - start
    return result


def time_readers(folder: Path, repeats: int) -> dict[str, Timings]:
    timings = {name: Timings() for name in READERS}
    # Cold-ish: each reader's first read, right after the files left the page cache.
    for name, reader in READERS.items():
        evict(folder)
        timings[name].cold = timed(reader, folder)
    # Warm: round-robin, so that no reader always follows the same one.
    for _ in range(repeats):
        for name, reader in READERS.items():
            result = timed(reader, folder)
            timings[name].warm.append(result)
            if len(timings[name].warm) > 1:
                # Keep only the arrays we still need (the first warm one is checked).
                timings[name].warm[-1].array = np.empty(0)
    return timings


def check_values(expected: np.ndarray, timings: dict[str, Timings]) -> list[str]:
    """Mismatch messages (empty when every reader agrees with medseg and the volume written)."""
    problems = []
    reference = timings["medseg"].cold.array  # type: ignore[union-attr]
    print("value check (arrays as (i, j, k); SimpleITK's (k, j, i) array transposed (2, 1, 0)):")
    for name, t in timings.items():
        for label, result in (("cold", t.cold), ("warm", t.warm[0])):
            array = result.array  # type: ignore[union-attr]
            if array.shape != expected.shape:
                ok, detail = False, f"shape {array.shape} != {expected.shape}"
            else:
                ok = bool(np.array_equal(array, reference)) and bool(np.array_equal(array, expected))
                if ok:
                    detail = "identical to medseg and to the volume written"
                else:
                    diff = np.abs(array.astype(np.float64) - expected.astype(np.float64))
                    detail = f"{int(np.count_nonzero(diff))} voxels differ from the volume written (max {diff.max():g})"
            print(f"  {name:<13} {label}: {str(array.dtype):<8} {'OK  ' if ok else 'FAIL'} {detail}")
            if not ok:
                problems.append(f"{name} ({label}): {detail}")
    return problems


# -- report ---------------------------------------------------------------------------------


def versions() -> str:
    import pydicom
    import SimpleITK as sitk

    bits = [
        f"python {platform.python_version()}",
        f"numpy {np.__version__}",
        f"pydicom {pydicom.__version__}",
        f"SimpleITK {sitk.Version_VersionString()}",
    ]
    for dist in ("pylibjpeg", "pylibjpeg-openjpeg", "pylibjpeg-rle", "pylibjpeg-libjpeg", "pyjpegls"):
        try:
            bits.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(bits)


def cpu_line() -> str:
    import SimpleITK as sitk

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"CPUs: {os.cpu_count()} (usable by this process: {usable}); "
        f"SimpleITK global default threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}; "
        f"platform: {platform.platform()}"
    )


def print_table(key: str, slices: int, folder: Path, timings: dict[str, Timings], repeats: int) -> None:
    megabytes = sum(os.path.getsize(folder / n) for n in os.listdir(folder)) / 1e6
    print()
    print(f"== {SYNTAXES[key][1]} ({SYNTAXES[key][0]}): {slices} slices, {megabytes:.1f} MB on disk ==")
    header = f"{'reader':<13} {'cold s':>8} {'warm s':>8} {'slices/s':>9} {'CPU s':>7}   {'warm: discover + read s':<24}"
    print(header)
    print("-" * len(header))
    for name, t in timings.items():
        best = t.best
        stages = " + ".join(f"{v:.3f}" for v in best.stages.values())
        print(
            f"{name:<13} {t.cold.total:>8.3f} {best.total:>8.3f} {slices / best.total:>9.1f} {best.cpu:>7.2f}   "  # type: ignore[union-attr]
            f"{stages:<24}"
        )
    medseg = timings["medseg"]
    for other in ("SimpleITK", "pydicom loop"):
        o = timings[other]
        cold = o.cold.total / medseg.cold.total  # type: ignore[union-attr]
        warm = o.best.total / medseg.best.total
        print(f"ratio {other} / medseg: cold {cold:.2f}x, warm {warm:.2f}x   (> 1: medseg faster)")
    print(
        f"(warm = best of {repeats}; cold = first read after evicting the files from the page cache; "
        "CPU s = CPU time of the warm read, worker processes included: CPU s / warm s ~ cores kept busy)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time reading a synthetic 512x512xN CT DICOM series with medseg, SimpleITK and a plain pydicom loop.",
        epilog="Exit status: 0 when all readers give the same voxels, 1 on any mismatch (never because of speed).",
    )
    parser.add_argument("--slices", type=int, default=300, help="number of slices (default 300)")
    parser.add_argument("--size", type=int, default=512, help="rows and columns per slice (default 512)")
    parser.add_argument("--repeats", type=int, default=3, help="warm reads per reader; the best is reported (default 3)")
    parser.add_argument(
        "--syntax",
        choices=[*SYNTAXES, "all"],
        default="explicit",
        help="transfer syntax of the series written (default explicit VR little endian)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where to write the series (default: a new temporary folder); a complete series left there by "
        "an earlier run with --keep and the same size is reused",
    )
    parser.add_argument("--keep", action="store_true", help="keep the written series instead of deleting them")
    args = parser.parse_args(argv)
    if args.slices < 2 or args.size < 16 or args.repeats < 1:
        parser.error("need --slices >= 2, --size >= 16 and --repeats >= 1")

    keys = list(SYNTAXES) if args.syntax == "all" else [args.syntax]
    created = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="medseg-bench-")) if created else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)

    print(cpu_line())
    print(versions())
    print(f"series: {args.size}x{args.size}x{args.slices}, spacing {SPACING} mm, under {workdir}")

    cache: dict[str, object] = {}

    def get_volume():
        if "volume" not in cache:
            start = time.perf_counter()
            cache["volume"] = make_volume(args.size, args.slices)
            print(f"generated the phantom in {time.perf_counter() - start:.1f} s")
        return cache["volume"]

    problems: list[str] = []
    try:
        for key in keys:
            folder, wrote = ensure_series(workdir, key, args.size, args.slices, get_volume)
            print()
            print(f"{SYNTAXES[key][1]}: " + (f"wrote {folder} in {wrote:.1f} s" if wrote else f"reusing {folder}"))
            expected = get_volume().channel(0)  # type: ignore[attr-defined]
            timings = time_readers(folder, args.repeats)
            found = check_values(expected, timings)
            problems += [f"{SYNTAXES[key][1]}: {p}" for p in found]
            print_table(key, args.slices, folder, timings, args.repeats)
    finally:
        if created and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"\nseries kept under {workdir}")
    if problems:
        print("\nMISMATCH:", *problems, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
