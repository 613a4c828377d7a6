"""Small volumes and DICOM series for tests.

Grids are deliberately awkward: uneven sizes, anisotropic spacing, an origin
away from zero and oblique or flipped axes, so that any axis mix-up fails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.geometry import Geometry
from medseg.io.dicom.writer import write_dicom_series
from medseg.synthetic import PhantomSpec, make_phantom
from medseg.volume import Volume


def rotation(axis: str, degrees: float) -> np.ndarray:
    """A 3x3 rotation about x, y or z (LPS)."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    a, b = {"x": (1, 2), "y": (0, 2), "z": (0, 1)}[axis]
    r = np.eye(3)
    r[a, a], r[a, b], r[b, a], r[b, b] = c, -s, s, c
    return r


def oblique_geometry(
    shape: tuple[int, int, int] = (23, 17, 9),
    spacing: tuple[float, float, float] = (1.3, 0.9, 2.5),
    origin: tuple[float, float, float] = (-31.7, 12.25, 87.5),
    direction: np.ndarray | None = None,
) -> Geometry:
    """An oblique grid (rotated about two axes) with uneven shape and spacing."""
    if direction is None:
        direction = rotation("z", 17) @ rotation("x", -23)
    return Geometry.from_spacing(shape, spacing, origin, direction, frame_of_reference_uid="1.2.3.4.5")


def axial_geometry(
    shape: tuple[int, int, int] = (40, 32, 12),
    spacing: tuple[float, float, float] = (1.5, 1.2, 3.0),
    origin: tuple[float, float, float] = (-30.0, -19.5, 40.0),
    feet_first: bool = False,
) -> Geometry:
    """A plain axial grid; ``feet_first`` flips x and z as a feet-first scan does."""
    direction = np.diag([-1.0, 1.0, -1.0]) if feet_first else np.eye(3)
    return Geometry.from_spacing(shape, spacing, origin, direction)


def ramp_volume(geometry: Geometry | None = None) -> Volume:
    """Voxel value = 100*i + 10*j + k (distinct per voxel, int32), so transposes show."""
    geometry = geometry or oblique_geometry()
    i, j, k = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    return Volume((100 * i + 10 * j + k).astype(np.int32), geometry)


def stored_as(volume: Volume, axes: tuple[int, int, int], flips: tuple[bool, bool, bool]) -> Volume:
    """The same voxels stored in another order: stored axis ``a`` is ``volume``'s axis ``axes[a]``, maybe reversed."""
    array = np.transpose(volume.array, (0, *(1 + a for a in axes)))
    array = np.flip(array, axis=tuple(1 + a for a, f in enumerate(flips) if f)) if any(flips) else array
    affine = np.eye(4)
    first = [0, 0, 0]
    for a, (source, flip) in enumerate(zip(axes, flips)):
        column = volume.geometry.affine[:3, source]
        affine[:3, a] = -column if flip else column
        first[source] = volume.geometry.shape[source] - 1 if flip else 0
    affine[:3, 3] = volume.geometry.index_to_physical(first)
    geometry = Geometry([volume.geometry.shape[a] for a in axes], affine, volume.geometry.frame_of_reference_uid)
    return volume.replace(array=np.ascontiguousarray(array), geometry=geometry)


def phantom_pair(geometry: Geometry | None = None, seed: int = 7) -> tuple[Volume, Volume]:
    """A CT phantom (int16 HU) and its labels on a small awkward grid."""
    geometry = geometry or Geometry.from_spacing(
        (48, 40, 14), (5.5, 6.0, 8.0), (-132.0, -118.5, -52.0), rotation("z", 8), frame_of_reference_uid="1.2.3.4.6"
    )
    return make_phantom(seed, PhantomSpec(), geometry)


def write_series(volume: Volume, folder: Path, **kwargs) -> list[Path]:
    """Write ``volume`` as a DICOM series (see :func:`medseg.io.dicom.writer.write_dicom_series`)."""
    return write_dicom_series(volume, folder, **kwargs)


# -- DICOM series with injectable defects (tests/io/dicom) ----------------------------------


def tilted_geometry(
    degrees: float = 15.0,
    shape: tuple[int, int, int] = (30, 26, 10),
    spacing: tuple[float, float, float] = (1.6, 1.4, 3.0),
    origin: tuple[float, float, float] = (-23.0, -17.5, 31.0),
    feet_first: bool = False,
) -> Geometry:
    """A gantry-tilted axial stack as acquired: rows and columns stay axial, each slice moves
    ``spacing[2]`` mm along z and ``spacing[2] * tan(degrees)`` mm along y (a sheared grid).
    ``feet_first`` flips x and z as :func:`axial_geometry` does."""
    flip = -1.0 if feet_first else 1.0
    step = spacing[2]
    affine = np.eye(4)
    affine[0, 0], affine[1, 1] = flip * spacing[0], spacing[1]
    affine[:3, 2] = [0.0, step * np.tan(np.deg2rad(degrees)), flip * step]
    affine[:3, 3] = origin
    return Geometry(shape, affine, frame_of_reference_uid="1.2.3.4.7")


def sphere_volume(
    geometry: Geometry,
    center: tuple[float, float, float],
    radius: float,
    *,
    inside: int = 1000,
    outside: int = -1000,
) -> Volume:
    """``inside`` where a voxel centre lies within ``radius`` mm of ``center`` (LPS), else ``outside``."""
    points = geometry.index_to_physical(np.indices(geometry.shape).reshape(3, -1).T)
    distance = np.linalg.norm(points - np.asarray(center, dtype=np.float64), axis=1).reshape(geometry.shape)
    return Volume(np.where(distance <= radius, inside, outside).astype(np.int16), geometry)


def write_stored_series(
    folder: Path,
    stored: np.ndarray,
    geometry: Geometry,
    *,
    modality: str = "MR",
    bits_stored: int = 16,
    slopes: list[float] | None = None,
    intercepts: list[float] | None = None,
    series_instance_uid: str | None = None,
    series_number: int = 1,
    per_slice: list[dict] | None = None,
) -> list[Path]:
    """Write stored pixel values ``(I, J, K)`` as they are (explicit VR LE), one file per slice.

    Unlike :func:`write_series` nothing is converted: the array's dtype (uint8, uint16, int16)
    decides BitsAllocated and PixelRepresentation; ``slopes``/``intercepts`` (one per slice) are
    written as given, and ``per_slice`` adds attributes to each slice's dataset.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    stored = np.asarray(stored)
    if stored.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"stored values must be uint8, uint16 or int16, got {stored.dtype}")
    bits_allocated = stored.dtype.itemsize * 8
    count = geometry.shape[2]
    series_uid = series_instance_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), geometry.frame_of_reference_uid or generate_uid()
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    direction = geometry.direction
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(count):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, series_number, k + 1
        ds.PatientName, ds.PatientID = "Test^Factory", "FACTORY"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in geometry.index_to_physical([0, 0, k])]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [f"{geometry.spacing[1]:.10g}", f"{geometry.spacing[0]:.10g}"]
        ds.SliceThickness = f"{geometry.spacing[2]:.10g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = geometry.shape[1], geometry.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits_allocated, bits_stored, bits_stored - 1
        ds.PixelRepresentation = int(stored.dtype == np.int16)
        if slopes is not None:
            ds.RescaleSlope = f"{slopes[k]:.10g}"
        if intercepts is not None:
            ds.RescaleIntercept = f"{intercepts[k]:.10g}"
        for keyword, value in (per_slice[k] if per_slice else {}).items():
            setattr(ds, keyword, value)
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        path = folder / f"{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def edit_dicom(path: Path, **attributes: object) -> None:
    """Set (or, with ``None``, delete) attributes of a DICOM file in place, keeping its transfer syntax.

    ``file_meta__<Keyword>`` addresses the file meta information.
    """
    import pydicom

    ds = pydicom.dcmread(path)
    for keyword, value in attributes.items():
        target = ds
        if keyword.startswith("file_meta__"):
            target, keyword = ds.file_meta, keyword[len("file_meta__") :]
        if value is None:
            if keyword in target:
                delattr(target, keyword)
        else:
            setattr(target, keyword, value)
    ds.save_as(path)


def move_shuffled(paths: list[Path], folder: Path, seed: int = 0) -> list[Path]:
    """Move files into ``folder`` under random extension-less names, in random order.

    Returns the new paths in the order of ``paths`` (so index ``k`` is still slice ``k``).
    """
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"{rng.integers(1 << 62):016x}" for _ in paths]
    moved: list[Path | None] = [None] * len(paths)
    for index in rng.permutation(len(paths)):
        target = folder / names[index]
        Path(paths[index]).replace(target)
        moved[index] = target
    return moved  # type: ignore[return-value]


def truncate_file(path: Path, fraction: float = 0.5) -> None:
    """Cut a file to ``fraction`` of its length, as an interrupted copy leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * fraction)])


def dcmtk_compress(paths: list[Path], folder: Path, *flags: str) -> list[Path]:
    """Compress files with dcmtk's ``dcmcjpeg`` (e.g. ``+eb``, ``+e1``, ``+el``) into ``folder``."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for path in paths:
        target = folder / Path(path).name
        subprocess.run(["dcmcjpeg", *flags, str(path), str(target)], check=True, capture_output=True)
        out.append(target)
    return out


def aligned_to(volume: Volume, reference: Geometry, *, tolerance_mm: float = 1e-3) -> np.ndarray:
    """``volume``'s first channel re-indexed onto ``reference``'s grid, which must hold the same
    voxel centres with axes permuted or flipped (e.g. a stack read back in the other k order).

    Raises:
        AssertionError: the grids do not hold the same voxel centres.
    """
    mapping = np.linalg.inv(reference.affine) @ volume.geometry.affine  # volume index -> reference index
    linear = np.rint(mapping[:3, :3])
    shift = np.rint(mapping[:3, 3])
    axes = reference.spacing
    error_mm = np.max(np.abs((mapping[:3, :3] - linear) * np.array(axes)[:, None])) + np.max(
        np.abs(mapping[:3, 3] - shift) * np.array(axes)
    )
    is_signed_permutation = np.all(np.sum(np.abs(linear), axis=0) == 1) and np.all(np.sum(np.abs(linear), axis=1) == 1)
    if error_mm > tolerance_mm or not is_signed_permutation:
        raise AssertionError(f"grids differ: {volume.geometry!r} vs {reference!r} (mapping\n{mapping})")
    index = np.indices(volume.geometry.shape).reshape(3, -1)
    target = (linear.astype(int) @ index + shift.astype(int)[:, None]).astype(int)
    outside = np.any(target < 0) or np.any(target >= np.array(reference.shape)[:, None])
    if outside or np.prod(volume.geometry.shape) != np.prod(reference.shape):
        raise AssertionError(f"grids cover different voxels: {volume.geometry!r} vs {reference!r}")
    out = np.empty(reference.shape, dtype=volume.dtype)
    out[tuple(target)] = volume.channel(0).reshape(-1)
    return out
