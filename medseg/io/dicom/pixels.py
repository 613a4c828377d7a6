"""Decode the pixels of a stack and convert them to physical units.

Three paths, fastest first:

* uncompressed little-endian data is read straight from the file into the
  output array at the offset the header scan recorded (no second parse);
* compressed data is decoded by pydicom and its plugins (pylibjpeg, pyjpegls,
  openjpeg) in one process per core, each writing into a shared output array,
  so no decoded pixels are pickled between processes;
* anything else (deflated, big-endian, odd bit depths) goes through pydicom
  in this process.

Every path returns what pydicom's ``pixel_array`` would: stored values with
BitsStored masking and sign extension applied, in native byte order.
"""

from __future__ import annotations

import mmap
from collections import defaultdict
from collections.abc import Callable, Sequence

import numpy as np
import pydicom
from pydicom.pixels import get_decoder, pixel_array
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, JPEGLSLossless, JPEGLSNearLossless

from medseg.errors import DicomError
from medseg.io.dicom.headers import Frame, PixelEncoding
from medseg.parallel import default_workers, ordered_map, worth_a_pool

ProgressCallback = Callable[[int, int], None]

# Below this many compressed files, starting processes costs more than it saves.
_MIN_FILES_FOR_POOL = 8
# CharLS (pyjpegls) decodes JPEG-LS about 3x faster than libjpeg; pydicom tries libjpeg first.
_PREFERRED_PLUGINS = {JPEGLSLossless: "pyjpegls", JPEGLSNearLossless: "pyjpegls"}
# The output array being filled; forked workers inherit it (shared memory when pooled).
_shared_out: np.ndarray | None = None

_Job = tuple[str, list[int], list[int | None], str]  # path, positions in the output, frame indices, syntax


def read_stored_values(
    frames: Sequence[Frame],
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """Stored pixel values of ``frames``, in their order, as ``(n, rows, columns)``.

    Raises:
        DicomError: a file cannot be read or decoded; the message names it.
    """
    first = frames[0]
    dtype = np.result_type(*{f.encoding.dtype for f in frames})
    by_file: dict[str, list[int]] = defaultdict(list)
    for position, frame in enumerate(frames):
        by_file[frame.path].append(position)
    raw: list[_Job] = []
    decoded: list[_Job] = []
    for path, positions in by_file.items():
        frame = frames[positions[0]]
        job = (path, positions, [frames[p].frame_index for p in positions], frame.header.transfer_syntax_uid)
        (raw if frame.encoding.raw_offset is not None else decoded).append(job)

    workers = workers if workers is not None else default_workers()
    pooled = worth_a_pool(len(decoded), workers, _MIN_FILES_FOR_POOL)
    nbytes = len(frames) * first.rows * first.columns * dtype.itemsize
    # Anonymous shared memory when processes will write into it; plain memory otherwise.
    buffer = mmap.mmap(-1, max(nbytes, 1)) if pooled else bytearray(nbytes)
    out = np.frombuffer(buffer, dtype=dtype, count=len(frames) * first.rows * first.columns)
    out = out.reshape(len(frames), first.rows, first.columns)
    done = 0
    total = len(raw) + len(decoded)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    for path, positions, indices, _ in raw:
        _read_raw(path, [frames[p] for p in positions], out, positions, indices)
        tick()
    global _shared_out
    _shared_out = out  # forked workers write their frames straight into it
    try:
        for _ in ordered_map(_decode_into_shared, decoded, workers=workers, min_items=_MIN_FILES_FOR_POOL):
            tick()
    finally:
        _shared_out = None
    return out


def _read_raw(path: str, frames: list[Frame], out: np.ndarray, positions: list[int], indices: list[int | None]) -> None:
    """Read uncompressed little-endian frames straight into ``out``."""
    encoding = frames[0].encoding
    frame_bytes = out.shape[1] * out.shape[2] * encoding.bits_allocated // 8
    stored_dtype = np.dtype(f"<{encoding.dtype.str[1:]}")
    try:
        with open(path, "rb") as f:
            for position, index in zip(positions, indices):
                f.seek(encoding.raw_offset + (index or 0) * frame_bytes)  # type: ignore[operator]
                data = f.read(frame_bytes)
                if len(data) != frame_bytes:
                    raise DicomError(f"{path}: pixel data ends early (file changed since it was scanned?)")
                out[position] = _fix_bits(np.frombuffer(data, stored_dtype).reshape(out.shape[1:]), encoding)
    except OSError as exc:
        raise DicomError(f"{path}: cannot read pixel data ({exc.strerror or exc})") from exc


def _fix_bits(stored: np.ndarray, encoding: PixelEncoding) -> np.ndarray:
    """Mask unused high bits, or sign-extend signed values, as pydicom does."""
    unused = encoding.bits_allocated - encoding.bits_stored
    if unused <= 0:
        return stored
    if encoding.signed:
        return (stored << unused) >> unused
    return stored & ((1 << encoding.bits_stored) - 1)


def _decode_into_shared(job: _Job) -> None:
    assert _shared_out is not None  # set by read_stored_values before any work starts
    _decode_into(_shared_out, job)


def _decode_into(out: np.ndarray, job: _Job) -> None:
    path, positions, indices, syntax = job
    try:
        # pixel_array(path) reads the file raw and cannot see into a deflated data set.
        source = pydicom.dcmread(path) if syntax == DeflatedExplicitVRLittleEndian else path
        plugin = _plugin(syntax)
        if indices == [None]:
            arrays = pixel_array(source, decoding_plugin=plugin)[np.newaxis]
        else:
            everything = pixel_array(source, decoding_plugin=plugin)
            arrays = (everything if everything.ndim == 3 else everything[np.newaxis])[indices]
    except Exception as exc:  # decoders raise many types; name the file whatever it was
        raise DicomError(f"{path}: cannot decode pixel data ({type(exc).__name__}: {exc})") from exc
    if arrays.shape[1:] != out.shape[1:]:
        raise DicomError(f"{path}: image is {arrays.shape[1:]}, the series' other slices {out.shape[1:]}")
    out[positions] = arrays


def _plugin(syntax: str) -> str:
    preferred = _PREFERRED_PLUGINS.get(UID(syntax))
    if preferred and preferred in get_decoder(syntax).available_plugins:
        return preferred
    return ""


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
        out = np.empty(stored.shape, dtype=np.float32)
        for k in range(stored.shape[0]):
            out[k] = stored[k] * slopes_a[k] + intercepts_a[k]
        return out
    lo, hi = int(stored.min()), int(stored.max())
    ends = [v * s + i for v in (lo, hi) for s, i in zip(slopes_a, intercepts_a)]
    dtype = _smallest_signed(min(ends), max(ends)) if min(ends) < 0 else _smallest_unsigned(max(ends))
    out = np.empty(stored.shape, dtype=dtype)
    if np.all(slopes_a == 1) and np.all(intercepts_a == intercepts_a[0]):
        # The usual CT case, in one pass. Wrap-around in the narrow type is exact:
        # the range check above guarantees every true result fits it.
        intercept = np.array(int(intercepts_a[0]), dtype=np.int64).astype(dtype)  # modulo the type's range
        np.add(stored, intercept, out=out, dtype=dtype, casting="unsafe")
        return out
    for k in range(stored.shape[0]):
        out[k] = stored[k].astype(np.int64) * int(slopes_a[k]) + int(intercepts_a[k])
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
