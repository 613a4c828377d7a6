"""Decode the pixels of a stack and convert them to physical units.

Decoding goes through pydicom and its plugins (pylibjpeg for JPEG, JPEG-LS,
JPEG 2000 and RLE). Compressed series are decoded by a pool of processes, one
per core; uncompressed ones are read in this process, where pickling arrays
between processes would cost more than it saves.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pydicom
from pydicom.pixels import pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian

from medseg.errors import DicomError
from medseg.io.dicom.headers import Frame

ProgressCallback = Callable[[int, int], None]

# Below this many compressed files, starting processes costs more than it saves.
_MIN_FILES_FOR_POOL = 8


def read_stored_values(
    frames: Sequence[Frame],
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Stored pixel values of ``frames``, in their order, as ``(n, rows, columns)``.

    Raises:
        DicomError: a file cannot be decoded; the message names it.
    """
    by_file: dict[str, list[int]] = defaultdict(list)  # path -> positions in `frames`
    for position, frame in enumerate(frames):
        by_file[frame.path].append(position)
    # Each file's own transfer syntax: an archive may have re-encoded only some files of a series.
    syntaxes = {path: UID(frames[positions[0]].header.transfer_syntax_uid) for path, positions in by_file.items()}
    jobs = [
        (path, [frames[p].frame_index for p in positions], syntaxes[path] == DeflatedExplicitVRLittleEndian)
        for path, positions in by_file.items()
    ]
    workers = workers if workers is not None else (os.cpu_count() or 1)
    compressed = any(uid.is_compressed for uid in syntaxes.values())
    use_pool = compressed and workers > 1 and len(jobs) >= _MIN_FILES_FOR_POOL and sys.platform == "linux"

    out: np.ndarray | None = None
    done = 0

    def place(path: str, arrays: list[np.ndarray]) -> None:
        nonlocal out, done
        for position, array in zip(by_file[path], arrays):
            dtype = array.dtype.newbyteorder("=")  # big-endian files decode to big-endian arrays
            if out is None:
                out = np.empty((len(frames), *array.shape), dtype=dtype)
            elif array.shape != out.shape[1:]:
                raise DicomError(f"{path}: image is {array.shape}, the series' other slices {out.shape[1:]}")
            elif dtype != out.dtype:
                out = out.astype(np.result_type(out.dtype, dtype))
            out[position] = array
        done += 1
        if progress is not None:
            progress(done, len(jobs))

    if use_pool:
        # fork: no re-import of the caller's __main__, so it works from scripts and notebooks.
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            chunk = max(1, len(jobs) // (workers * 8))
            for (path, *_), arrays in zip(jobs, pool.map(_decode_file, jobs, chunksize=chunk)):
                place(path, arrays)
    else:
        for job in jobs:
            place(job[0], _decode_file(job))
    assert out is not None  # frames is never empty
    return out


def _decode_file(job: tuple[str, list[int | None], bool]) -> list[np.ndarray]:
    path, indices, deflated = job
    # pixel_array(path) reads the file raw and cannot see into a deflated data set.
    source = pydicom.dcmread(path) if deflated else path
    try:
        if indices == [None]:
            return [pixel_array(source)]
        frames = pixel_array(source)
        if frames.ndim == 2:
            frames = frames[np.newaxis]
        return [frames[i] for i in indices]  # type: ignore[index]
    except Exception as exc:  # decoders raise many types; name the file whatever it was
        raise DicomError(f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})") from None


def to_physical(stored: np.ndarray, slopes: Sequence[float], intercepts: Sequence[float]) -> np.ndarray:
    """Apply RescaleSlope/Intercept per slice, in the smallest exact type.

    Integer slopes and intercepts keep integers (int16 for ordinary CT, wider
    when the range needs it); anything else gives float32.
    """
    slopes_a = np.asarray(slopes, dtype=np.float64)
    intercepts_a = np.asarray(intercepts, dtype=np.float64)
    if np.all(slopes_a == 1) and np.all(intercepts_a == 0):
        return stored
    integral = np.all(slopes_a == np.round(slopes_a)) and np.all(intercepts_a == np.round(intercepts_a))
    if not integral or not np.issubdtype(stored.dtype, np.integer):
        out = stored.astype(np.float32)
        for k in range(out.shape[0]):
            out[k] = (stored[k] * slopes_a[k] + intercepts_a[k]).astype(np.float32)
        return out
    lo, hi = int(stored.min()), int(stored.max())
    ends = [lo * s + i for s in slopes_a for i in intercepts_a] + [hi * s + i for s in slopes_a for i in intercepts_a]
    dtype = _smallest_signed(min(ends), max(ends)) if min(ends) < 0 else _smallest_unsigned(max(ends))
    out = np.empty(stored.shape, dtype=dtype)
    for k in range(stored.shape[0]):
        slope, intercept = int(slopes_a[k]), int(intercepts_a[k])
        out[k] = stored[k].astype(np.int64) * slope + intercept if slope != 1 else stored[k] + np.int64(intercept)
    return out


def _smallest_signed(lo: float, hi: float) -> np.dtype:
    for dtype in (np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def _smallest_unsigned(hi: float) -> np.dtype:
    for dtype in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)
