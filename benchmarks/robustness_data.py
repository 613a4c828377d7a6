"""Synthetic datasets built to break automatic planners (used by ``planner_robustness.py``).

Seven generators, each seeded and deterministic, each writing an nnU-Net v2 raw
dataset (``imagesTr/<case>_0000.nii.gz`` per channel, ``labelsTr``, ``imagesTs``,
``labelsTs`` with the test cases' ground truth, ``dataset.json``). They are
written from scratch with numpy/scipy and share nothing with ``medseg.synthetic``;
nothing in them is tuned to medseg. Every case has its own grid (size and voxel
spacing jittered), its own anatomy (size, position, shape) and its own noise level.

=========  ======================================================================================
context    CT abdomen, ~168 x 168 x 68 at ~2 x 2 x 3 mm: "liver" and "spleen" have the *same*
           intensity, size and shape distribution and differ only by side of the body midline;
           "kidney" (both sides) is brighter. Noise 12-40 HU.
small      CT chest crop, ~128 x 128 x 96 at ~1 x 1 x 1.5 mm, inside the body (no air): a large
           "heart", small round "nodule"s (8-20 mm) and one contrast-filled "vessel" tube, among
           thin unlabelled vessels of nodule-like density.
aniso      CT, ~256 x 256 x 28 at ~0.7 x 0.7 x 5 mm: a "vessel" that bifurcates, a "muscle" whose
           elliptical section turns and swells along z, and a C-shaped "wall" whose opening turns.
large      CT abdomen, 300-352 x 300-352 x 150-180 at ~1 x 1 x 2.5 mm (12 + 4 cases by default):
           "liver", "kidney", "aorta".
mr         MR, two channels (T1, T2) in float32, multiplicative bias field, Rician noise and a
           global scale (0.3-5x) and offset per scan and channel: "cyst" (T1 dark, T2 bright),
           "scar" (T1 dark, T2 normal), "edema" (T1 normal, T2 bright): T1 alone confuses cyst
           with scar, T2 alone cyst with edema.
slices2d   CT, ~256 x 256 x 16-20 at ~0.8 x 0.8 x 6-8 mm: "ring", "disc" and "cross" shapes of one
           density, each confined to one slice and placed independently in every slice.
touching   CT abdomen, ~180 x 180 x 80 at ~1.75 x 1.75 x 2.5-3 mm: ten structures sharing boundaries,
           0.002-12% of the voxels: "liver" (wrapping the "ivc" and a "cyst"), "kidney"s in fat
           "capsule"s with an "adrenal" on each, "aorta" with renal arteries, "psoas" against
           "quadratus" (one muscle density), and a 2-4 mm "ureter" running down ~2/3 of the slices.
=========  ======================================================================================

Every generator works on an LPS-ordered grid (voxel i toward the patient's left, j
posterior, k superior; the patient's right is -x in LPS: the liver sits at x < 0), with
the origin well away from zero. About 70% of the cases are stored that way (a RAS affine
``diag(-sx, -sy, sz)``, as dcm2niix writes a head-first supine CT); the rest, drawn per
case, in another voxel order (``STORED_ORDERS``: "RAS", "LPI" feet-first, "RAI", "RPS"
mirrored), the array reversed along those axes and the affine changed with it, so
every voxel keeps its position in the patient. Images and labels of a case share one
order, recorded per case (``"stored"`` in ``robustness.json``). CT is int16 HU, MR
float32, labels uint8.

Run as a script to write one dataset and print its label fractions::

    .venv/bin/python benchmarks/robustness_data.py context /tmp/robust --train-cases 24 --test-cases 10
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Bumped whenever a generator changes what it writes: datasets of another version are regenerated.
GENERATOR_VERSION = 2
#: The file, written last into a dataset folder, that records how the dataset was made.
PARAMS_FILE = "robustness.json"
SEED = 0

Coords = tuple[np.ndarray, np.ndarray, np.ndarray]


# -- grids and files ------------------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A scan's voxel grid: LPS axes, ``origin`` the LPS position (mm) of voxel (0, 0, 0)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    @property
    def extent(self) -> np.ndarray:
        """Field of view per axis (mm)."""
        return np.asarray(self.shape) * np.asarray(self.spacing)

    def axes(self, centre: Sequence[float] = (0.0, 0.0, 0.0)) -> Coords:
        """Broadcastable voxel-centre coordinates (mm, float32) relative to ``centre`` (mm from the FOV's centre)."""
        out = []
        for axis, (n, s, c) in enumerate(zip(self.shape, self.spacing, centre)):
            values = ((np.arange(n) - (n - 1) / 2) * s - c).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = n
            out.append(values.reshape(shape))
        return out[0], out[1], out[2]

    def ras_affine(self, order: str = "LPS") -> np.ndarray:
        """The NIfTI (RAS) affine of the array stored in voxel ``order`` (see :func:`reversed_axes`).

        LPS x and y flipped; each reversed axis's column negated and the origin moved to that
        axis's last voxel, so every voxel keeps its position in the patient.
        """
        affine = np.diag([-self.spacing[0], -self.spacing[1], self.spacing[2], 1.0])
        affine[:3, 3] = [-self.origin[0], -self.origin[1], self.origin[2]]
        for axis in reversed_axes(order):
            affine[:3, 3] += affine[:3, axis] * (self.shape[axis] - 1)
            affine[:3, axis] *= -1
        return affine


#: The voxel orders a case is stored in, with their shares: the patient direction each voxel axis
#: points to (``nibabel.aff2axcodes`` of the written RAS affine). "LPS" is the grid's own order
#: (as dcm2niix writes a head-first supine CT), "RAS" a NIfTI written in RAS order, "LPI" a
#: feet-first scan, "RAI" both, "RPS" a left-right mirrored store.
STORED_ORDERS = {"LPS": 0.7, "RAS": 0.075, "LPI": 0.075, "RAI": 0.075, "RPS": 0.075}


def reversed_axes(order: str) -> tuple[int, ...]:
    """The voxel axes of an LPS-ordered array reversed to store it in ``order`` ("RAS": 0 and 1)."""
    if len(order) != 3 or any(code not in (same, other) for code, same, other in zip(order, "LPS", "RAI")):
        raise ValueError(f"voxel order {order!r}: expected three letters, each that of LPS or its opposite (RAI)")
    return tuple(axis for axis, (code, same) in enumerate(zip(order, "LPS")) if code != same)


def stored_order(rng: np.random.Generator) -> str:
    """A voxel order drawn with the shares of :data:`STORED_ORDERS`."""
    orders = list(STORED_ORDERS)
    return orders[int(rng.choice(len(orders), p=list(STORED_ORDERS.values())))]


def jittered_grid(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing: Sequence[float],
    *,
    jitter: float,
    slices: tuple[int, int] | None = None,
    slice_mm: tuple[float, float] | None = None,
) -> Grid:
    """A grid around ``shape`` and ``spacing``, each axis scaled by 1 +- ``jitter`` (square pixels in-plane).

    ``slices`` and ``slice_mm`` replace the z jitter by uniform ranges. The origin puts the
    field of view's centre up to 40 mm off the table axis, 300-700 mm along it.
    """
    in_plane = spacing[0] * rng.uniform(1 - jitter, 1 + jitter)
    z_mm = rng.uniform(*slice_mm) if slice_mm else spacing[2] * rng.uniform(1 - jitter, 1 + jitter)
    size = [int(round(n * rng.uniform(1 - jitter, 1 + jitter))) for n in shape[:2]]
    nz = (
        int(rng.integers(slices[0], slices[1] + 1))
        if slices
        else int(round(shape[2] * rng.uniform(1 - jitter, 1 + jitter)))
    )
    grid_shape = (size[0], size[1], nz)
    grid_spacing = (float(in_plane), float(in_plane), float(z_mm))
    centre = np.array([rng.uniform(-40, 40), rng.uniform(-40, 40), -rng.uniform(300, 700)])
    origin = centre - (np.asarray(grid_shape) - 1) / 2 * np.asarray(grid_spacing)
    return Grid(grid_shape, grid_spacing, tuple(float(v) for v in origin))  # type: ignore[arg-type]


def write_nifti(array: np.ndarray, grid: Grid, path: Path, *, order: str = "LPS") -> None:
    """``array`` (on ``grid``) stored in voxel ``order`` as compressed NIfTI-1, qform = sform, mm units."""
    import nibabel as nib

    affine = grid.ras_affine(order)
    image = nib.Nifti1Image(np.ascontiguousarray(np.flip(array, reversed_axes(order))), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(path))


# -- shapes ---------------------------------------------------------------------------------


def smooth_field(rng: np.random.Generator, shape: Sequence[int], cells: Sequence[int]) -> np.ndarray:
    """A smooth random field of unit standard deviation, varying over about ``cells`` lumps per axis.

    Gaussian bumps on a coarse lattice, summed separably (three matrix products), so a
    16-million-voxel field takes a fraction of a second.
    """
    coarse = rng.standard_normal(tuple(c + 2 for c in cells)).astype(np.float32)
    weights = []
    for n, c in zip(shape, cells):
        t = np.linspace(0.0, c, n, dtype=np.float32)[:, None]
        centres = np.arange(-1, c + 1, dtype=np.float32)[None, :]
        weights.append(np.exp(-0.5 * ((t - centres) / 0.7) ** 2))
    field = np.tensordot(weights[0], coarse, axes=1)  # (nx, cy, cz)
    field = np.einsum("jb,ibc->ijc", weights[1], field)  # (nx, ny, cz)
    nx, ny, cz = field.shape
    field = (field.reshape(-1, cz) @ weights[2].T).reshape(nx, ny, len(weights[2]))
    field -= field.mean()
    return field / max(float(field.std()), 1e-6)


def smooth_curve(rng: np.random.Generator, n: int, lumps: int = 3) -> np.ndarray:
    """``n`` samples of a smooth random 1-D function with unit standard deviation."""
    return smooth_field(rng, (n, 1, 1), (lumps, 1, 1))[:, 0, 0]


def _index_range(axis: np.ndarray, low: float, high: float) -> slice:
    values = axis.ravel()
    return slice(int(np.searchsorted(values, low)), int(np.searchsorted(values, high, side="right")))


def rotation(rng: np.random.Generator, yaw_deg: float, tilt_deg: float) -> np.ndarray:
    """A rotation about z by up to ``yaw_deg`` after tilts about x and y by up to ``tilt_deg``."""
    a, b, c = np.deg2rad(rng.uniform(-1, 1, 3) * [yaw_deg, tilt_deg, tilt_deg])
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    ry = np.array([[np.cos(c), 0, np.sin(c)], [0, 1, 0], [-np.sin(c), 0, np.cos(c)]])
    return rz @ rx @ ry


def blob(
    coords: Coords,
    centre: Sequence[float],
    radii: Sequence[float],
    rng: np.random.Generator,
    *,
    roughness: float = 0.2,
    yaw_deg: float = 30.0,
    tilt_deg: float = 10.0,
) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """A lumpy ellipsoid: ``|u| <= 1 + roughness * noise(u)`` in the rotated, radius-scaled frame ``u``.

    Returns the bounding box (index slices into the grid) and the mask inside it; the box
    may be empty or cut by the grid's edge.
    """
    reach = max(radii) * (1 + 2.5 * roughness)
    box = tuple(_index_range(axis, c - reach, c + reach) for axis, c in zip(coords, centre))
    local = [coords[0][box[0]] - centre[0], coords[1][:, box[1]] - centre[1], coords[2][:, :, box[2]] - centre[2]]
    r = rotation(rng, yaw_deg, tilt_deg).T
    u = [(r[i, 0] * local[0] + r[i, 1] * local[1] + r[i, 2] * local[2]) / radii[i] for i in range(3)]
    lumps = smooth_field(rng, (12, 12, 12), (3, 3, 3))
    index = [np.clip((ui + 1.6) / 3.2 * 11, 0, 11) for ui in u]
    noise = ndimage.map_coordinates(lumps, np.stack(np.broadcast_arrays(*index)), order=1)
    radius = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
    return box, radius <= 1 + roughness * noise  # type: ignore[return-value]


def paint(
    labels: np.ndarray,
    image: np.ndarray,
    box: tuple[slice, ...],
    mask: np.ndarray,
    *,
    label: int,
    value: float | np.ndarray,
    within: np.ndarray | None = None,
) -> int:
    """Give ``label`` and ``value`` to the masked voxels still unlabelled (and inside ``within``); returns how many.

    ``within`` and an array ``value`` have the whole grid's shape (broadcast views are fine).
    """
    region = labels[box]
    mask = mask & (region == 0)
    if within is not None:
        mask &= within[box]
    region[mask] = label
    target = image[box]
    target[mask] = value if np.isscalar(value) else value[box][mask]
    return int(mask.sum())


def paint_slice(labels: np.ndarray, image: np.ndarray, k: int, mask: np.ndarray, *, label: int, value: float) -> int:
    """:func:`paint` for a 2-D ``mask`` in slice ``k``."""
    box = (slice(None), slice(None), slice(k, k + 1))
    return paint(labels, image, box, mask[:, :, None], label=label, value=value)


def random_curve(
    rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float, *, bend: float = 0.3
) -> np.ndarray:
    """Points 0.5 mm apart along a smoothly bending path (mm) from ``start``; ``bend`` scales how much it turns."""
    steps = max(int(length / 0.5), 2)
    turns = np.stack([smooth_curve(rng, steps, lumps=max(2, int(length / 40))) for _ in range(3)], axis=1)
    directions = direction / np.linalg.norm(direction) + np.cumsum(turns, axis=0) * bend * 0.5 / 10 / math.sqrt(steps)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return start + np.cumsum(directions * 0.5, axis=0)


def tube(
    grid: Grid, coords: Coords, points: np.ndarray, radii: np.ndarray | float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Voxels within ``radii`` (mm, per point or one) of a polyline ``points`` (mm, N x 3): box and mask."""
    radii = np.broadcast_to(np.asarray(radii, dtype=np.float32), (len(points),))
    reach = float(radii.max()) + max(grid.spacing)
    box = tuple(
        _index_range(axis, float(points[:, i].min()) - reach, float(points[:, i].max()) + reach)
        for i, axis in enumerate(coords)
    )
    shape = tuple(s.stop - s.start for s in box)
    if min(shape) <= 0:
        return box, np.zeros(shape, dtype=bool)  # type: ignore[return-value]
    starts = np.array([float(axis.ravel()[s.start]) for axis, s in zip(coords, box)])
    index = np.rint((points - starts) / np.asarray(grid.spacing)).astype(int)
    inside = np.all((index >= 0) & (index < shape), axis=1)
    if not inside.any():
        return box, np.zeros(shape, dtype=bool)  # type: ignore[return-value]
    seeds = np.ones(shape, dtype=bool)
    seeds[tuple(index[inside].T)] = False
    radius_at = np.zeros(shape, dtype=np.float32)
    radius_at[tuple(index[inside].T)] = radii[inside]
    distance, nearest = ndimage.distance_transform_edt(seeds, sampling=grid.spacing, return_indices=True)
    return box, distance <= radius_at[tuple(nearest)]  # type: ignore[return-value]


def grown(grid: Grid, box: tuple[slice, ...], mask: np.ndarray, mm: float) -> tuple[tuple[slice, ...], np.ndarray]:
    """``mask`` (in ``box``) grown by ``mm``: a larger box and the voxels within ``mm`` of the mask."""
    pad = [math.ceil(mm / s) + 1 for s in grid.spacing]
    big = tuple(slice(max(b.start - p, 0), min(b.stop + p, n)) for b, p, n in zip(box, pad, grid.shape))
    inner = np.zeros(tuple(b.stop - b.start for b in big), dtype=bool)
    inner[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, big))] = mask
    if not inner.any():
        return big, inner
    return big, ndimage.distance_transform_edt(~inner, sampling=grid.spacing) <= mm


def deep_point(
    rng: np.random.Generator, grid: Grid, coords: Coords, box: tuple[slice, ...], mask: np.ndarray, depth: float
) -> np.ndarray:
    """A random point (mm) of ``mask`` (in ``box``) at least ``depth`` mm inside it, else one of its deepest."""
    distance = ndimage.distance_transform_edt(mask, sampling=grid.spacing)
    candidates = np.argwhere(distance >= depth)
    if len(candidates) == 0:
        candidates = np.argwhere(distance == distance.max())
    index = candidates[rng.integers(len(candidates))] + [b.start for b in box]
    return np.array([float(axis.ravel()[i]) for axis, i in zip(coords, index)])


@dataclass(frozen=True)
class Sections:
    """An axis-aligned ellipse per slice: centres and semi-axes (mm, slices x 2), and the slices it is in."""

    centres: np.ndarray
    axes: np.ndarray
    present: np.ndarray

    def mask(self, coords: Coords) -> np.ndarray:
        """The voxels inside the ellipse of their slice."""
        x, y, _ = coords
        (cx, cy), (ax, ay) = ([v[:, i].reshape(1, 1, -1) for i in range(2)] for v in (self.centres, self.axes))
        return (((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1) & self.present.reshape(1, 1, -1)

    def at(self, zs: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Centres and semi-axes interpolated to heights ``z`` (mm), the slices being at ``zs``."""
        pick = [np.interp(z, zs, v[:, i]) for v in (self.centres, self.axes) for i in range(2)]
        return np.stack(pick[:2], axis=1), np.stack(pick[2:], axis=1)


# -- intensities ----------------------------------------------------------------------------


def finish_ct(rng: np.random.Generator, hu: np.ndarray, noise_hu: float, *, in_plane_only: bool = False) -> np.ndarray:
    """Partial-volume blur, correlated noise of ``noise_hu`` standard deviation, int16 HU."""
    sigma = (0.6, 0.6, 0.0) if in_plane_only else (0.6, 0.6, 0.4)
    image = ndimage.gaussian_filter(hu, sigma)
    noise = ndimage.gaussian_filter(rng.standard_normal(hu.shape, dtype=np.float32), (0.7, 0.7, 0.0))
    image += noise * (noise_hu / max(float(noise.std()), 1e-6))
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


@dataclass
class Body:
    """An abdomen: HU so far, the inside of the fat layer, coordinates about the body centre, and its size."""

    hu: np.ndarray
    interior: np.ndarray
    coords: Coords
    scale: float  # body size relative to a 150 mm lateral half-width
    half_width: float  # mm
    half_depth: float  # mm
    soft_hu: float  # the soft tissue's mean density
    spine_y: float  # the vertebral column's centre (mm, at x = 0)
    spine_r: float  # its radius (mm)


def abdomen(
    rng: np.random.Generator, grid: Grid, *, fill: tuple[float, float] = (0.8, 0.92), aorta: bool = True
) -> Body:
    """Air around an elliptical body (fat layer, soft tissue with texture and fat, spine, an aorta), in HU.

    The body's half-width is ``fill`` of the field of view's (patients and FOVs vary together); its
    centre is off the FOV's centre by up to 5% of the FOV. ``aorta=False`` leaves the aorta out
    (for a generator that draws a labelled one).
    """
    extent = grid.extent
    offset = rng.uniform(-0.05, 0.05, 3) * extent * [1, 1, 0]
    x, y, z = grid.axes(offset)
    a = extent[0] / 2 * rng.uniform(*fill)
    b = a * rng.uniform(0.68, 0.8)
    b = min(b, extent[1] / 2 * 0.95)
    wobble = 1 + 0.04 * smooth_curve(rng, grid.shape[2]).reshape(1, 1, -1)
    body = (x / (a * wobble)) ** 2 + (y / (b * wobble)) ** 2 <= 1
    fat = rng.uniform(8, 25) * a / 150
    interior = (x / (a * wobble - fat)) ** 2 + (y / (b * wobble - fat)) ** 2 <= 1
    texture = smooth_field(rng, grid.shape, (6, 6, 4))
    hu = np.full(grid.shape, -1000.0, dtype=np.float32)
    hu[body] = -100 + 12 * texture[body]
    soft = rng.uniform(25, 45)
    hu[interior] = soft + 8 * texture[interior]
    fat_lumps = interior & (smooth_field(rng, grid.shape, (10, 10, 6)) > 1.1)  # fat between the organs
    hu[fat_lumps] = -90 + 10 * texture[fat_lumps]
    s = a / 150
    spine_y, spine_r = 0.62 * b, rng.uniform(14, 19) * s
    disc = (np.cos(2 * np.pi * (z - rng.uniform(0, 30)) / rng.uniform(28, 34)) > 0.85).astype(np.float32)
    ring = x**2 + (y - spine_y) ** 2
    hu = np.where((ring <= spine_r**2) & interior, 250 + 40 * texture - 170 * disc, hu)
    hu = np.where((ring > (spine_r - 2.5) ** 2) & (ring <= spine_r**2) & interior, 650 - 500 * disc, hu)
    if aorta:
        vessel = (x - 0.1 * a) ** 2 + (y - spine_y + spine_r + 14 * s) ** 2 <= (rng.uniform(9, 12) * s) ** 2
        hu = np.where(vessel & interior, rng.uniform(140, 220), hu)
    return Body(
        hu.astype(np.float32), np.broadcast_to(interior, grid.shape), (x, y, z), s, a, b, soft, spine_y, spine_r
    )


def label_fractions(labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Share of the voxels each label holds."""
    counts = np.bincount(labels.ravel(), minlength=len(names) + 1)
    return {name: float(counts[n]) / labels.size for n, name in enumerate(names, start=1)}


@dataclass
class Scan:
    """One generated case: channel images (int16 HU or float32), a uint8 label map, their grid."""

    grid: Grid
    channels: list[np.ndarray]
    labels: np.ndarray


# -- the generators -------------------------------------------------------------------------


def make_context(rng: np.random.Generator) -> Scan:
    """CT abdomen: liver and spleen alike but for their side of the midline; kidneys brighter."""
    grid = jittered_grid(rng, (168, 168, 68), (2.0, 2.0, 3.0), jitter=0.15)
    body = abdomen(rng, grid)
    hu, s, a, b = body.hu, body.scale, body.half_width, body.half_depth
    labels = np.zeros(grid.shape, dtype=np.uint8)
    texture = smooth_field(rng, grid.shape, (8, 8, 5))
    kidney_hu = rng.uniform(150, 200)
    z_mid = grid.extent[2] * rng.uniform(-0.15, 0.15)
    for side in (-1, 1):
        centre = (side * a * rng.uniform(0.36, 0.46), b * rng.uniform(0.22, 0.36), z_mid + rng.uniform(-40, 0))
        radii = np.array([22, 28, 48]) * s * rng.uniform(0.85, 1.15, 3)
        box, mask = blob(body.coords, centre, radii, rng, roughness=0.1, yaw_deg=20 * side)
        paint(labels, hu, box, mask, label=3, value=kidney_hu + 10 * texture, within=body.interior)
    organ_hu = body.soft_hu + rng.uniform(20, 40)  # liver and spleen: one density per scan
    for label, side in ((1, -1), (2, 1)):  # LPS: the patient's right is -x
        centre = (side * a * rng.uniform(0.3, 0.48), b * rng.uniform(-0.3, 0.05), z_mid + rng.uniform(0, 50))
        radii = np.array([rng.uniform(34, 52), rng.uniform(30, 46), rng.uniform(38, 58)]) * s
        box, mask = blob(body.coords, centre, radii, rng, roughness=0.22)
        paint(labels, hu, box, mask, label=label, value=organ_hu + 8 * texture, within=body.interior)
    image = finish_ct(rng, hu, rng.uniform(12, 40))
    return Scan(grid, [image], labels)


def make_small(rng: np.random.Generator) -> Scan:
    """CT chest crop: a large heart, small nodules and one contrast-filled vessel among thin unlabelled vessels."""
    grid = jittered_grid(rng, (128, 128, 96), (1.0, 1.0, 1.5), jitter=0.1)
    coords = grid.axes()
    x, y, z = coords
    extent = grid.extent
    texture = smooth_field(rng, grid.shape, (5, 5, 4))
    hu = (-850 + 35 * texture).astype(np.float32)
    wall_side = rng.choice([-1, 1])  # chest wall along one lateral edge of the crop
    wall = wall_side * x >= extent[0] / 2 - rng.uniform(12, 28) + 4 * smooth_curve(rng, grid.shape[1]).reshape(1, -1, 1)
    hu = np.where(wall, np.where(wall_side * x >= extent[0] / 2 - 6, -100, 40) + 8 * texture, hu).astype(np.float32)
    lung = ~np.broadcast_to(wall, grid.shape)
    labels = np.zeros(grid.shape, dtype=np.uint8)
    centre = (-wall_side * extent[0] * rng.uniform(0.35, 0.5), rng.uniform(-0.2, 0.2) * extent[1], rng.uniform(-20, 20))
    radii = np.array([rng.uniform(40, 55), rng.uniform(38, 50), rng.uniform(45, 60)])
    box, mask = blob(coords, centre, radii, rng, roughness=0.12)
    paint(labels, hu, box, mask, label=1, value=rng.uniform(30, 55) + 6 * texture)
    for _ in range(int(rng.integers(3, 7))):  # thin unlabelled vessels, as dense as nodules
        start = rng.uniform(-0.5, 0.5, 3) * extent
        direction = rng.standard_normal(3)
        points = random_curve(rng, start - direction / np.linalg.norm(direction) * 80, direction, 180, bend=0.4)
        box, mask = tube(grid, coords, points, rng.uniform(0.9, 1.8))
        region = hu[box]
        region[mask & lung[box] & (labels[box] == 0)] = rng.uniform(0, 50)
    start = np.array([rng.uniform(-0.25, 0.25) * extent[0], -extent[1] / 2 - 5, rng.uniform(-0.3, 0.3) * extent[2]])
    direction = np.array([rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.6, 0.6)])
    points = random_curve(rng, start, direction, 1.5 * extent[1], bend=0.5)
    box, mask = tube(grid, coords, points, np.linspace(rng.uniform(3, 4.5), rng.uniform(2, 3), len(points)))
    paint(labels, hu, box, mask, label=3, value=rng.uniform(160, 260), within=lung)
    placed, attempts = 0, 0
    wanted = int(rng.integers(1, 4))
    while placed < wanted and attempts < 40:
        attempts += 1
        centre = rng.uniform(-0.4, 0.4, 3) * extent
        radius = rng.uniform(4, 10)
        box, mask = blob(coords, centre, [radius] * 3, rng, roughness=0.15)
        if mask.size == 0 or not np.all(lung[box][mask]) or np.any(labels[box][mask]):
            continue
        paint(labels, hu, box, mask, label=2, value=rng.uniform(0, 60))
        placed += 1
    image = finish_ct(rng, hu, rng.uniform(15, 35))
    return Scan(grid, [image], labels)


def make_aniso(rng: np.random.Generator) -> Scan:
    """CT, 5 mm slices: a bifurcating vessel, a turning and swelling muscle, a C-shaped wall whose gap turns."""
    grid = jittered_grid(rng, (256, 256, 28), (0.7, 0.7, 5.0), jitter=0.1, slices=(24, 32))
    body = abdomen(rng, grid, fill=(0.85, 0.95))
    hu, (x, y, z) = body.hu, body.coords
    a, b = body.half_width, body.half_depth
    labels = np.zeros(grid.shape, dtype=np.uint8)
    zs = z.ravel()
    texture = smooth_field(rng, grid.shape, (6, 6, 3))
    # 1: a vessel running along z that splits into two at a random level
    split = rng.uniform(0.3, 0.7) * (zs[-1] - zs[0]) + zs[0]
    root = np.array([rng.uniform(-0.3, 0.3) * a, rng.uniform(-0.5, -0.1) * b])
    spread = rng.uniform(0.6, 1.2) * np.array([1.0, rng.uniform(-0.3, 0.3)])
    r_trunk = rng.uniform(5, 8)
    vessel_hu = rng.uniform(150, 230)
    drift = root + 3 * np.stack([smooth_curve(rng, len(zs)), smooth_curve(rng, len(zs))], axis=1)
    for k, zk in enumerate(zs):
        centres = [drift[k]] if zk < split else [drift[k] + spread * (zk - split), drift[k] - spread * (zk - split)]
        radius = r_trunk if zk < split else r_trunk * 0.75
        for cx, cy in centres:
            mask = (x[:, :, 0] - cx) ** 2 + (y[:, :, 0] - cy) ** 2 <= radius**2
            paint_slice(labels, hu, k, mask, label=1, value=vessel_hu)
    # 2: a muscle whose elliptical section turns by 60-150 degrees and swells and shrinks along z
    centre = np.array([rng.uniform(0.2, 0.45) * a * rng.choice([-1, 1]), rng.uniform(0.0, 0.3) * b])
    turn = np.deg2rad(rng.uniform(60, 150)) * rng.choice([-1, 1])
    swell = 1 + 0.35 * smooth_curve(rng, len(zs), lumps=2)
    axes = np.array([rng.uniform(20, 32), rng.uniform(8, 13)])
    muscle_hu = rng.uniform(55, 75)
    for k in range(len(zs)):
        t = k / max(len(zs) - 1, 1)
        angle = turn * t
        u = (x[:, :, 0] - centre[0]) * np.cos(angle) + (y[:, :, 0] - centre[1]) * np.sin(angle)
        v = -(x[:, :, 0] - centre[0]) * np.sin(angle) + (y[:, :, 0] - centre[1]) * np.cos(angle)
        mask = (u / (axes[0] * swell[k])) ** 2 + (v / (axes[1] * swell[k])) ** 2 <= 1
        paint_slice(labels, hu, k, mask, label=2, value=muscle_hu)
    # 3: a C-shaped wall (annulus with a gap) whose gap turns round along z and whose wall thickens
    centre = np.array([-np.sign(centre[0]) * rng.uniform(0.25, 0.45) * a, rng.uniform(-0.1, 0.25) * b])
    radius, gap = rng.uniform(15, 24), np.deg2rad(rng.uniform(50, 100))
    start, turn = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(120, 300)) * rng.choice([-1, 1])
    thickness = np.linspace(rng.uniform(2.5, 4), rng.uniform(5, 8), len(zs))
    wall_hu = rng.uniform(85, 120)
    for k in range(len(zs)):
        dx, dy = x[:, :, 0] - centre[0], y[:, :, 0] - centre[1]
        r = np.sqrt(dx**2 + dy**2)
        phase = np.angle(np.exp(1j * (np.arctan2(dy, dx) - start - turn * k / max(len(zs) - 1, 1))))
        mask = (np.abs(r - radius) <= thickness[k] / 2) & (np.abs(phase) > gap / 2)
        paint_slice(labels, hu, k, mask, label=3, value=wall_hu)
    labels[~body.interior] = 0
    hu += 6 * texture * (labels > 0)
    image = finish_ct(rng, hu, rng.uniform(12, 30), in_plane_only=True)
    return Scan(grid, [image], labels)


def make_large(rng: np.random.Generator) -> Scan:
    """CT abdomen on a large grid (300-352 x 300-352 x 150-180): liver, kidneys, aorta."""
    grid = jittered_grid(rng, (326, 326, 165), (1.0, 1.0, 2.5), jitter=0.08)
    grid = Grid(
        (max(grid.shape[0], 300), max(grid.shape[1], 300), int(rng.integers(150, 181))), grid.spacing, grid.origin
    )
    body = abdomen(rng, grid, aorta=False)
    hu, s, a, b = body.hu, body.scale, body.half_width, body.half_depth
    z = body.coords[2]
    labels = np.zeros(grid.shape, dtype=np.uint8)
    z_mid = grid.extent[2] * rng.uniform(-0.1, 0.1)
    # 3: the aorta, a tube along z in front of the spine that wanders a little
    zs = z.ravel()
    path = np.stack(
        [
            0.1 * a + 6 * s * smooth_curve(rng, len(zs)),
            0.62 * b - rng.uniform(26, 34) * s + 5 * s * smooth_curve(rng, len(zs)),
            zs,
        ],
        axis=1,
    )
    dense = np.stack(
        [np.interp(np.linspace(0, len(zs) - 1, len(zs) * 6), np.arange(len(zs)), path[:, i]) for i in range(3)], 1
    )
    box, mask = tube(grid, body.coords, dense, rng.uniform(10, 13) * s)
    paint(labels, hu, box, mask, label=3, value=rng.uniform(150, 240), within=body.interior)
    texture = smooth_field(rng, grid.shape, (8, 8, 6))
    kidney_hu = rng.uniform(140, 190)
    for side in (-1, 1):
        centre = (side * a * rng.uniform(0.36, 0.46), b * rng.uniform(0.22, 0.36), z_mid + rng.uniform(-60, -10))
        radii = np.array([24, 30, 52]) * s * rng.uniform(0.85, 1.15, 3)
        box, mask = blob(body.coords, centre, radii, rng, roughness=0.1, yaw_deg=20 * side)
        paint(labels, hu, box, mask, label=2, value=kidney_hu + 8 * texture, within=body.interior)
    centre = (-a * rng.uniform(0.3, 0.45), b * rng.uniform(-0.3, 0.0), z_mid + rng.uniform(20, 70))
    radii = np.array([rng.uniform(70, 95), rng.uniform(55, 75), rng.uniform(65, 90)]) * s
    box, mask = blob(body.coords, centre, radii, rng, roughness=0.2)
    paint(labels, hu, box, mask, label=1, value=body.soft_hu + rng.uniform(20, 40) + 8 * texture, within=body.interior)
    image = finish_ct(rng, hu, rng.uniform(12, 35))
    return Scan(grid, [image], labels)


#: Relative (T1, T2) signal of each MR tissue: cyst needs both channels, scar and edema each share one with it.
MR_TISSUES = {
    "air": (0.0, 0.0),
    "fat": (1.7, 1.3),
    "tissue": (1.0, 1.0),
    "cyst": (0.45, 1.9),
    "scar": (0.45, 1.0),
    "edema": (1.0, 1.9),
}


def make_mr(rng: np.random.Generator) -> Scan:
    """MR, T1 + T2: lesions told apart only by both channels; bias fields, Rician noise, arbitrary scales."""
    grid = jittered_grid(rng, (160, 160, 80), (1.2, 1.2, 2.5), jitter=0.1)
    extent = grid.extent
    coords = grid.axes(rng.uniform(-0.05, 0.05, 3) * extent)
    x, y, z = coords
    radii = extent / 2 * rng.uniform(0.8, 0.92, 3) * [1, rng.uniform(0.8, 0.95), 1.1]
    shell = (x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2
    body = shell <= 1
    inner_radii = radii - rng.uniform(5, 10)
    inner = (x / inner_radii[0]) ** 2 + (y / inner_radii[1]) ** 2 + (z / inner_radii[2]) ** 2 <= 1
    tissue = np.zeros(grid.shape, dtype=np.uint8)  # 0 air, 1 fat, 2 tissue, 3.. lesions
    tissue[body] = 1
    tissue[inner] = 2
    labels = np.zeros(grid.shape, dtype=np.uint8)
    lesions = ("cyst", "scar", "edema")
    for number, _ in enumerate(lesions, start=1):
        for _ in range(int(rng.integers(1, 4))):
            centre = rng.uniform(-0.55, 0.55, 3) * inner_radii
            size = rng.uniform(8, 20)
            box, mask = blob(
                coords, centre, size * rng.uniform(0.8, 1.2, 3), rng, roughness=0.2, yaw_deg=180, tilt_deg=45
            )
            mask &= np.broadcast_to(inner, grid.shape)[box]
            region = labels[box]
            region[mask & (region == 0)] = number
    texture = smooth_field(rng, grid.shape, (6, 6, 4))
    shared_bias = smooth_field(rng, grid.shape, (2, 2, 2))
    channels = []
    for c in range(2):
        signal = np.zeros(grid.shape, dtype=np.float32)
        signal[tissue == 1] = MR_TISSUES["fat"][c]
        signal[tissue == 2] = MR_TISSUES["tissue"][c]
        for number, name in enumerate(lesions, start=1):
            signal[labels == number] = MR_TISSUES[name][c]
        signal *= 1 + 0.05 * texture
        signal = ndimage.gaussian_filter(signal, (0.6, 0.6, 0.4))
        bias = np.exp(0.25 * shared_bias + 0.1 * smooth_field(rng, grid.shape, (2, 2, 2)))
        sigma = rng.uniform(0.02, 0.06)
        real = signal * bias + sigma * rng.standard_normal(grid.shape, dtype=np.float32)
        imaginary = sigma * rng.standard_normal(grid.shape, dtype=np.float32)
        magnitude = np.sqrt(real**2 + imaginary**2)  # Rician
        scale = 1000 * math.exp(rng.uniform(math.log(0.3), math.log(5)))
        channels.append((magnitude * scale + scale * rng.uniform(0, 0.3)).astype(np.float32))
    return Scan(grid, channels, labels)


def make_slices2d(rng: np.random.Generator) -> Scan:
    """CT, 6-8 mm slices: rings, discs and crosses of one density, independent from slice to slice."""
    grid = jittered_grid(rng, (256, 256, 18), (0.8, 0.8, 7.0), jitter=0.1, slices=(16, 20), slice_mm=(6.0, 8.0))
    body = abdomen(rng, grid, fill=(0.85, 0.95))
    hu, (x, y, _) = body.hu, body.coords
    a, b = body.half_width, body.half_depth
    labels = np.zeros(grid.shape, dtype=np.uint8)
    density = rng.uniform(80, 110)
    x2, y2 = x[:, :, 0], y[:, :, 0]
    for k in range(grid.shape[2]):
        for _ in range(int(rng.integers(1, 5))):
            kind = int(rng.integers(1, 4))
            cx, cy = rng.uniform(-0.6, 0.6) * a, rng.uniform(-0.5, 0.4) * b
            size = rng.uniform(9, 20)
            angle = rng.uniform(0, np.pi)
            u = (x2 - cx) * np.cos(angle) + (y2 - cy) * np.sin(angle)
            v = -(x2 - cx) * np.sin(angle) + (y2 - cy) * np.cos(angle)
            squash = rng.uniform(0.7, 1.0)
            r = np.sqrt(u**2 + (v / squash) ** 2)
            if kind == 1:  # ring: a wall 2.5-4.5 mm thick, hollow inside
                mask = np.abs(r - size) <= rng.uniform(1.25, 2.25)
            elif kind == 2:  # disc
                mask = r <= size * 0.8
            else:  # cross: two bars
                arm = rng.uniform(2.5, 4.0)
                mask = ((np.abs(u) <= size) & (np.abs(v) <= arm)) | ((np.abs(v) <= size) & (np.abs(u) <= arm))
            mask &= body.interior[:, :, k]
            if not mask.any() or labels[:, :, k][mask].any():
                continue  # overlapping an earlier shape or outside the body: leave it out
            labels[:, :, k][mask] = kind
            hu[:, :, k][mask] = density
    image = finish_ct(rng, hu, rng.uniform(12, 30), in_plane_only=True)
    return Scan(grid, [image], labels)


#: The structures of ``touching``, in label order.
TOUCHING_LABELS = ("liver", "kidney", "capsule", "cyst", "adrenal", "aorta", "ivc", "psoas", "quadratus", "ureter")


def along_z(rng: np.random.Generator, zs: np.ndarray, x: float, y: float, wander: float) -> np.ndarray:
    """A path (mm, N x 3) through every slice height ``zs`` near (``x``, ``y``), wandering by ``wander`` mm."""
    fine = np.linspace(zs[0], zs[-1], len(zs) * 6)
    return np.stack(
        [x + wander * smooth_curve(rng, len(fine)), y + wander * smooth_curve(rng, len(fine)), fine], axis=1
    )


def psoas_sections(rng: np.random.Generator, body: Body, zs: np.ndarray, side: int, top: float) -> Sections:
    """A psoas beside the vertebral column on ``side`` (-1 right, 1 left) from ``top`` down, widening downwards."""
    s = body.scale
    t = np.clip((top - zs) / max(top - zs[0], 1.0), 0, 1)
    swell = 1 + 0.08 * smooth_curve(rng, len(zs))
    axes = np.stack([(6 + 14 * t) * s * swell, (6 + 12 * t) * s * swell], axis=1)
    centres = np.stack(
        [side * (0.8 * body.spine_r + 0.9 * axes[:, 0]), body.spine_y - 0.35 * body.spine_r - 0.2 * axes[:, 1]], axis=1
    )
    return Sections(centres, axes, zs <= top)


def quadratus_sections(rng: np.random.Generator, body: Body, psoas: Sections, side: int, top: float) -> Sections:
    """A flat muscle lateral to and behind ``psoas``, overlapping it, from ``top`` down."""
    s, zs = body.scale, body.coords[2].ravel()
    swell = 1 + 0.05 * smooth_curve(rng, len(zs))
    axes = np.stack([rng.uniform(13, 18) * s * swell, rng.uniform(6, 9) * s * swell], axis=1)
    x = np.abs(psoas.centres[:, 0]) + 0.8 * psoas.axes[:, 0] + 0.8 * axes[:, 0]
    centres = np.stack([side * x, body.spine_y - 0.1 * body.spine_r + 0.3 * axes[:, 1]], axis=1)
    return Sections(centres, axes, zs <= top)


def ureter_path(rng: np.random.Generator, hilum: np.ndarray, psoas: Sections, zs: np.ndarray, side: int) -> np.ndarray:
    """From ``hilum`` (mm) down onto the front of ``psoas`` within 30-45 mm, then along it past the last slice."""
    z = np.arange(hilum[2], zs[0] - 10, -0.5)
    centres, axes = psoas.at(zs, z)
    front = np.stack([centres[:, 0] + side * 0.4 * axes[:, 0], centres[:, 1] - 0.9 * axes[:, 1]], axis=1)
    t = np.clip((hilum[2] - z) / rng.uniform(30, 45), 0, 1)
    weight = (t * t * (3 - 2 * t))[:, None]  # smoothstep
    xy = (1 - weight) * hilum[:2] + weight * front
    xy += 1.5 * np.stack([smooth_curve(rng, len(z)), smooth_curve(rng, len(z))], axis=1) * weight
    return np.column_stack([xy, z])


def vessel_paths(
    rng: np.random.Generator, body: Body, zs: np.ndarray, hila: dict[int, np.ndarray]
) -> tuple[list[tuple[np.ndarray, float]], tuple[np.ndarray, float]]:
    """Centrelines (mm) and radii of the aorta in front of the column and a renal artery to each hilum; the IVC's."""
    s = body.scale
    r_aorta, r_ivc = rng.uniform(9, 12) * s, rng.uniform(9, 13) * s
    x, y = 0.3 * body.spine_r, body.spine_y - body.spine_r - r_aorta - rng.uniform(1, 4) * s
    arteries = [(along_z(rng, zs, x, y, 3 * s), r_aorta)]
    for hilum in hila.values():
        start, end = np.array([x, y, hilum[2] + rng.uniform(5, 12)]), hilum + [0, 0, rng.uniform(4, 8)]
        points = np.linspace(start, end, int(np.linalg.norm(end - start) / 0.5) + 2)
        arteries.append((points, rng.uniform(2.5, 3.5)))
    ivc = along_z(rng, zs, x - r_aorta - r_ivc - rng.uniform(1, 4) * s, y + rng.uniform(-4, 2) * s, 3 * s)
    return arteries, (ivc, r_ivc)


def make_touching(rng: np.random.Generator) -> Scan:
    """CT abdomen: ten structures sharing boundaries, from a 2-4 mm ureter to the liver; some neighbours alike.

    Painted in order, each taking only voxels still free, so overlapping shapes come out
    touching: ureter, aorta with renal arteries, IVC, adrenals, psoas, quadratus, kidneys,
    their fat capsules, a cyst inside the liver, the liver (which wraps round the IVC and
    abuts the right kidney). Alike: kidney, arteries and ureter (contrast), psoas and
    quadratus (muscle), capsule and the unlabelled fat, liver and adrenal.
    """
    grid = jittered_grid(rng, (180, 180, 80), (1.75, 1.75, 2.75), jitter=0.08, slice_mm=(2.5, 3.0))
    body = abdomen(rng, grid, aorta=False)
    hu, s, a, b, coords = body.hu, body.scale, body.half_width, body.half_depth, body.coords
    x, y, z = coords
    zs = z.ravel()
    free = body.interior & ~(x**2 + (y - body.spine_y) ** 2 <= body.spine_r**2)  # not the vertebral column
    labels = np.zeros(grid.shape, dtype=np.uint8)
    texture = smooth_field(rng, grid.shape, (8, 8, 5))
    label = {name: n for n, name in enumerate(TOUCHING_LABELS, start=1)}
    z_kidney = grid.extent[2] / 2 * rng.uniform(0.35, 0.5)
    kidneys, hila, psoas = {}, {}, {}
    for side in (-1, 1):  # LPS: the patient's right is -x; the right kidney sits lower
        centre = np.array([side * a * rng.uniform(0.3, 0.38), b * rng.uniform(0.25, 0.35), z_kidney])
        centre[2] -= rng.uniform(5, 15) if side < 0 else 0
        radii = np.array([22, 27, 46]) * s * rng.uniform(0.88, 1.12, 3)
        kidneys[side] = (centre, radii, blob(coords, centre, radii, rng, roughness=0.08, yaw_deg=20))
        hila[side] = centre + radii * [-side * 0.6, -0.2, -0.1]
        psoas[side] = psoas_sections(rng, body, zs, side, centre[2] + 0.3 * radii[2])
    # 10: the right ureter (urine with excreted contrast), from the hilum down the front of the psoas
    points = ureter_path(rng, hila[-1], psoas[-1], zs, -1)
    box, mask = tube(grid, coords, points, rng.uniform(1.0, 2.0))
    paint(labels, hu, box, mask, label=label["ureter"], value=rng.uniform(100, 300), within=free)
    # 6: the aorta with a renal artery to each hilum (one density); 7: the IVC to its right
    arteries, (ivc, r_ivc) = vessel_paths(rng, body, zs, hila)
    aorta_hu = rng.uniform(150, 230)
    for points, radius in arteries:
        box, mask = tube(grid, coords, points, radius)
        paint(labels, hu, box, mask, label=label["aorta"], value=aorta_hu, within=free)
    box, mask = tube(grid, coords, ivc, r_ivc)
    paint(labels, hu, box, mask, label=label["ivc"], value=rng.uniform(90, 150), within=free)
    # 5: an adrenal on the upper pole of each kidney, toward the midline
    for side, (centre, radii, _) in kidneys.items():
        gland = np.array([rng.uniform(3, 5), rng.uniform(9, 13), rng.uniform(11, 16)]) * s
        where = centre + [-side * 0.25 * radii[0], -0.05 * radii[1], 0.8 * radii[2] + 0.7 * gland[2]]
        box, mask = blob(coords, where, gland, rng, roughness=0.15, yaw_deg=40, tilt_deg=15)
        paint(labels, hu, box, mask, label=label["adrenal"], value=body.soft_hu + rng.uniform(5, 20), within=free)
    # 8, 9: psoas and quadratus (one muscle density), each side
    muscle_hu = rng.uniform(45, 65) + 6 * texture
    everywhere = (slice(None),) * 3
    for sections in psoas.values():
        paint(labels, hu, everywhere, sections.mask(coords), label=label["psoas"], value=muscle_hu, within=free)
    for side, sections in psoas.items():
        quadratus = quadratus_sections(rng, body, sections, side, kidneys[side][0][2])
        paint(labels, hu, everywhere, quadratus.mask(coords), label=label["quadratus"], value=muscle_hu, within=free)
    # 2: the kidneys; 3: their fat capsules, 3-6 mm of fat round them
    kidney_hu = rng.uniform(150, 200) + 8 * texture
    for _, _, (box, mask) in kidneys.values():
        paint(labels, hu, box, mask, label=label["kidney"], value=kidney_hu, within=free)
    fat_hu = rng.uniform(-100, -75) + 8 * texture
    for _, _, (box, mask) in kidneys.values():
        box, mask = grown(grid, box, mask, rng.uniform(3, 6))
        paint(labels, hu, box, mask, label=label["capsule"], value=fat_hu, within=free)
    # 1: the liver, right and high (its dome above the field of view by at most 3/4 of its half-height),
    # and 4: a cyst deep inside it
    radii = np.array([rng.uniform(95, 110), rng.uniform(75, 90), rng.uniform(85, 100)]) * s
    height = min(kidneys[-1][0][2] + rng.uniform(5, 25), zs[-1] - 0.25 * radii[2])
    centre = (-a * rng.uniform(0.3, 0.4), b * rng.uniform(-0.15, 0.1), height)
    liver_box, liver = blob(coords, centre, radii, rng, roughness=0.12)
    near_aorta = (x - 0.5 * body.spine_r) ** 2 + (y - body.spine_y) ** 2 <= (2.7 * body.spine_r) ** 2
    liver &= (labels[liver_box] == 0) & free[liver_box] & ~np.broadcast_to(near_aorta, grid.shape)[liver_box]
    in_liver = np.zeros(grid.shape, dtype=bool)
    in_liver[liver_box] = liver
    radius = rng.uniform(7, 16)
    box, mask = blob(coords, deep_point(rng, grid, coords, liver_box, liver, radius + 3), [radius] * 3, rng)
    paint(labels, hu, box, mask, label=label["cyst"], value=rng.uniform(0, 20), within=in_liver)
    liver_hu = body.soft_hu + rng.uniform(25, 45) + 8 * texture
    paint(labels, hu, liver_box, liver, label=label["liver"], value=liver_hu)
    image = finish_ct(rng, hu, rng.uniform(10, 35))
    return Scan(grid, [image], labels)


# -- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One dataset: its generator, folder, channels, labels and default case counts."""

    name: str
    folder: str
    make: Callable[[np.random.Generator], Scan]
    channels: tuple[str, ...]
    labels: tuple[str, ...]
    train_cases: int = 24
    test_cases: int = 10

    @property
    def modality(self) -> str:
        return "CT" if self.channels == ("CT",) else "MR"


SPECS = {
    spec.name: spec
    for spec in (
        Spec("context", "Dataset801_Context", make_context, ("CT",), ("liver", "spleen", "kidney")),
        Spec("small", "Dataset802_Small", make_small, ("CT",), ("heart", "nodule", "vessel")),
        Spec("aniso", "Dataset803_Aniso", make_aniso, ("CT",), ("vessel", "muscle", "wall")),
        Spec("large", "Dataset804_Large", make_large, ("CT",), ("liver", "kidney", "aorta"), 12, 4),
        Spec("mr", "Dataset805_MR", make_mr, ("T1", "T2"), ("cyst", "scar", "edema")),
        Spec("slices2d", "Dataset806_Slices2D", make_slices2d, ("CT",), ("ring", "disc", "cross")),
        Spec("touching", "Dataset807_Touching", make_touching, ("CT",), TOUCHING_LABELS),
    )
}


def dataset_params(name: str, *, train_cases: int, test_cases: int, seed: int = SEED) -> dict:
    """What decides a dataset's content: reusing a folder needs exactly these."""
    return {
        "dataset": name,
        "version": GENERATOR_VERSION,
        "seed": seed,
        "train_cases": train_cases,
        "test_cases": test_cases,
    }


def case_rng(spec: Spec, seed: int, number: int) -> np.random.Generator:
    """Case ``number``'s generator: independent of the case counts, so case 3 is the same in every split."""
    return np.random.default_rng([seed, list(SPECS).index(spec.name), number])


def write_dataset(
    name: str,
    folder: Path,
    *,
    train_cases: int,
    test_cases: int,
    seed: int = SEED,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Write dataset ``name`` into ``folder`` (created; must be absent or empty); returns what was recorded.

    The record (``PARAMS_FILE``, written last) holds the parameters, and per case the voxel
    order it is stored in (drawn after its anatomy), the grid (shape and spacing in the LPS
    order it was made in), label fractions and generation seconds.
    """
    spec = SPECS[name]
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder}: not empty; write a dataset into a new or empty folder")
    started = time.monotonic()
    cases = []
    for number in range(1, train_cases + test_cases + 1):
        case_started = time.monotonic()
        rng = case_rng(spec, seed, number)
        scan = spec.make(rng)
        order = stored_order(rng)
        case_id = f"{name}_{number:03d}"
        images, labels = ("imagesTr", "labelsTr") if number <= train_cases else ("imagesTs", "labelsTs")
        for channel, array in enumerate(scan.channels):
            write_nifti(array, scan.grid, folder / images / f"{case_id}_{channel:04d}.nii.gz", order=order)
        write_nifti(scan.labels, scan.grid, folder / labels / f"{case_id}.nii.gz", order=order)
        record = {
            "case": case_id,
            "split": "train" if number <= train_cases else "test",
            "stored": order,
            "shape": list(scan.grid.shape),
            "spacing": [round(v, 4) for v in scan.grid.spacing],
            "label_fractions": {k: round(v, 6) for k, v in label_fractions(scan.labels, spec.labels).items()},
            "seconds": round(time.monotonic() - case_started, 2),
        }
        cases.append(record)
        if log:
            fractions = ", ".join(f"{k} {v:.3%}" for k, v in record["label_fractions"].items())
            log(
                f"{case_id} ({record['split']}, stored {order}): {record['shape']} at {record['spacing']} mm; "
                f"{fractions}; {record['seconds']} s"
            )
    manifest = {
        "name": spec.folder.split("_", 1)[1],
        "description": f"planner robustness dataset {name!r} "
        f"(benchmarks/robustness_data.py, version {GENERATOR_VERSION}, seed {seed})",
        "channel_names": {str(i): c for i, c in enumerate(spec.channels)},
        "labels": {"background": 0, **{label: n for n, label in enumerate(spec.labels, start=1)}},
        "numTraining": train_cases,
        "file_ending": ".nii.gz",
    }
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    record = {
        **dataset_params(name, train_cases=train_cases, test_cases=test_cases, seed=seed),
        "seconds": round(time.monotonic() - started, 1),
        "cases": cases,
    }
    (folder / PARAMS_FILE).write_text(json.dumps(record, indent=1) + "\n")
    return record


def ensure_dataset(
    name: str, root: Path, *, train_cases: int, test_cases: int, seed: int = SEED, log: Callable[[str], None] = print
) -> tuple[Path, dict]:
    """``root/<folder>`` holding dataset ``name`` with these parameters: reused when its record matches, else written.

    A folder whose record is missing (an interrupted write) or differs is deleted first.
    """
    folder = root / SPECS[name].folder
    wanted = dataset_params(name, train_cases=train_cases, test_cases=test_cases, seed=seed)
    params = folder / PARAMS_FILE
    if params.is_file():
        record = json.loads(params.read_text())
        if {k: record.get(k) for k in wanted} == wanted:
            log(f"reusing {folder} (written in {record.get('seconds')} s)")
            return folder, record
        log(f"{folder} was written with other parameters; writing it again")
    if folder.exists():
        shutil.rmtree(folder)
    log(f"writing {name!r}: {train_cases} training + {test_cases} test case(s) into {folder}")
    record = write_dataset(name, folder, train_cases=train_cases, test_cases=test_cases, seed=seed, log=log)
    log(f"wrote {name!r} in {record['seconds']} s")
    return folder, record


def summarise(record: dict) -> str:
    """Shape, spacing and label-fraction ranges over a dataset's cases."""
    cases = record["cases"]
    shapes, spacings = np.array([c["shape"] for c in cases]), np.array([c["spacing"] for c in cases])
    lines = [
        f"shape   min {shapes.min(0).tolist()} median {np.median(shapes, 0).tolist()} max {shapes.max(0).tolist()}",
        f"spacing min {spacings.min(0).round(3).tolist()} median {np.median(spacings, 0).round(3).tolist()} "
        f"max {spacings.max(0).round(3).tolist()} mm",
    ]
    orders = [c["stored"] for c in cases if "stored" in c]
    if orders:
        lines.append("stored  " + ", ".join(f"{o} {orders.count(o)}" for o in STORED_ORDERS if o in orders))
    width = max(8, *(len(label) for label in cases[0]["label_fractions"]))
    for label in cases[0]["label_fractions"]:
        values = np.array([c["label_fractions"][label] for c in cases])
        lines.append(
            f"{label:<{width}} {values.min():.3%} .. {values.max():.3%} of voxels (median {np.median(values):.3%}; "
            f"absent in {int((values == 0).sum())} case(s))"
        )
    lines.append(f"{len(cases)} cases in {record['seconds']} s ({record['seconds'] / len(cases):.1f} s per case)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write one planner-robustness dataset (nnU-Net v2 layout).")
    parser.add_argument("dataset", choices=sorted(SPECS), help="which generator")
    parser.add_argument("root", type=Path, help="the folder to write Dataset8NN_<Name>/ into")
    parser.add_argument("--train-cases", type=int, default=None, help="default: 24 (large: 12)")
    parser.add_argument("--test-cases", type=int, default=None, help="default: 10 (large: 4)")
    parser.add_argument("--seed", type=int, default=SEED, help=f"default {SEED}")
    args = parser.parse_args(argv)
    spec = SPECS[args.dataset]
    _, record = ensure_dataset(
        args.dataset,
        args.root,
        train_cases=args.train_cases if args.train_cases is not None else spec.train_cases,
        test_cases=args.test_cases if args.test_cases is not None else spec.test_cases,
        seed=args.seed,
    )
    print(summarise(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
