"""A quick-look PNG of a segmentation: the mask over three orthogonal slices of the scan.

Panels are shown the way radiologists read them, whatever order the scan's axes
were stored in: the volume is first turned onto the nearest LPS axes (a
transpose and flips, no resampling, so an oblique scan is shown as acquired,
slightly rotated) and every pixel gets its physical aspect ratio.

* axial: patient's left on the screen's right, anterior up;
* coronal: patient's left on the right, head up;
* sagittal: anterior on the left, head up.

The slices pass through the centre of mass of the foreground (snapped to the
nearest slice that holds some), or the volume's centre when it has none.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io.files import atomic_path
from medseg.volume import Volume, VolumeKind

#: Soft-tissue window (HU) used for CT.
CT_WINDOW = (-160.0, 240.0)
#: Size of the PNG in pixels (width, height).
PREVIEW_SIZE = (1200, 480)
_DPI = 100
_ALPHA = 0.45
_BACKGROUND = "#1a1a1a"


def write_preview(
    image: Volume,
    labels: Volume,
    path: str | os.PathLike[str],
    *,
    window: tuple[float, float] | None = None,
) -> Path:
    """Write a PNG of ``labels`` over axial, coronal and sagittal slices of ``image`` (atomically).

    Args:
        image: the scan (its first channel is shown).
        labels: a label map on the image's grid; segment colours and names are used
            where the segments give them.
        path: the PNG to write.
        window: display range of the image; default: -160..240 HU for CT (modality
            CT, or values down to air), the 1st..99th percentile of the shown slices
            otherwise.

    Returns:
        ``path``.

    Raises:
        InputError: ``labels`` is not a label map.
        GeometryError: the two volumes lie on different grids.
    """
    if labels.kind is not VolumeKind.LABEL:
        raise InputError(f"{labels.path or 'labels'}: expected a label map, got a {labels.kind.value} volume")
    image.geometry.require_same_grid(
        labels.geometry, tolerance_mm=0.01, what=f"{image.path or 'the image'} and {labels.path or 'the labels'}"
    )
    order, flips = lps_axes(labels.geometry)
    scan = _reorient(image.channel(0), order, flips)
    mask = _reorient(labels.channel(0), order, flips)
    spacing = [labels.geometry.spacing[a] for a in order]
    centre = _centre(mask)
    slices = {
        "axial": (scan[:, :, centre[2]].T, mask[:, :, centre[2]].T, spacing[1] / spacing[0], "upper", "RLAP"),
        "coronal": (scan[:, centre[1], :].T, mask[:, centre[1], :].T, spacing[2] / spacing[0], "lower", "RLSI"),
        "sagittal": (scan[centre[0], :, :].T, mask[centre[0], :, :].T, spacing[2] / spacing[1], "lower", "APSI"),
    }
    stored = [0, 0, 0]  # the centre voxel's index in the stored array
    for axis, (array_axis, flip) in enumerate(zip(order, flips)):
        stored[array_axis] = labels.spatial_shape[array_axis] - 1 - centre[axis] if flip else centre[axis]
    point = labels.geometry.index_to_physical(stored)
    where = {
        name: f"{letter} = {round(float(point[axis]), 1) + 0.0:.1f} mm"
        for name, letter, axis in (("axial", "z", 2), ("coronal", "y", 1), ("sagittal", "x", 0))
    }
    low, high = window or _window(image, [s[0] for s in slices.values()])
    present = _present(labels.channel(0))
    colours = _colours(labels, present)
    lut = np.zeros((max(colours, default=0) + 1, 4))
    for number, rgb in colours.items():
        lut[number] = (*rgb, _ALPHA)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    figure = Figure(figsize=(PREVIEW_SIZE[0] / _DPI, PREVIEW_SIZE[1] / _DPI), dpi=_DPI, facecolor=_BACKGROUND)
    FigureCanvasAgg(figure)
    for column, (title, (plane, plane_mask, aspect, origin, letters)) in enumerate(slices.items()):
        ax = figure.add_axes((column / 3 + 0.01, 0.13, 1 / 3 - 0.02, 0.78))
        ax.set_axis_off()
        ax.imshow(plane, cmap="gray", vmin=low, vmax=high, aspect=aspect, origin=origin, interpolation="nearest")
        overlay = lut[np.clip(plane_mask, 0, len(lut) - 1)] * (plane_mask < len(lut))[..., None]
        ax.imshow(overlay, aspect=aspect, origin=origin, interpolation="nearest")
        ax.set_title(f"{title}  {where[title]}", color="white", fontsize=10)
        _edge_letters(ax, letters)
    names = {s.number: s.name for s in labels.segments}
    handles = [Patch(color=rgb, label=names.get(n, f"label {n}")) for n, rgb in sorted(colours.items()) if n in present]
    if handles:
        figure.legend(
            handles=handles,
            loc="lower center",
            ncol=min(len(handles), 8),
            frameon=False,
            labelcolor="white",
            fontsize=9,
        )
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=_DPI, facecolor=_BACKGROUND)
    return Path(path)


def lps_axes(geometry: Geometry) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """Which array axis lies nearest each LPS axis (x, y, z), and whether it runs backwards.

    Returns:
        ``order``: the array axis for x, y and z; ``flips``: True where that axis
        points to the patient's right, anterior or feet.
    """
    d = np.abs(geometry.direction)
    order = max(itertools.permutations(range(3)), key=lambda p: sum(d[a, p[a]] for a in range(3)))
    flips = tuple(bool(geometry.direction[a, order[a]] < 0) for a in range(3))
    return order, flips  # type: ignore[return-value]


def _reorient(array: np.ndarray, order: Sequence[int], flips: Sequence[bool]) -> np.ndarray:
    """A view of ``array`` indexed ``[x, y, z]``, each increasing towards left, posterior, head."""
    out = np.transpose(array, order)
    return out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]


def _centre(mask: np.ndarray) -> tuple[int, int, int]:
    """The foreground's centre of mass, each coordinate snapped to a slice with foreground; else the middle."""
    foreground = mask != 0
    centre = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        counts = foreground.sum(axis=others, dtype=np.int64)
        total = counts.sum()
        if not total:
            centre.append(mask.shape[axis] // 2)
            continue
        mean = float(np.dot(np.arange(len(counts)), counts) / total)
        filled = np.flatnonzero(counts)
        centre.append(int(filled[np.argmin(np.abs(filled - mean))]))
    return tuple(centre)  # type: ignore[return-value]


def _window(image: Volume, planes: list[np.ndarray]) -> tuple[float, float]:
    values = np.concatenate([p.ravel() for p in planes]).astype(np.float64)
    values = values[np.isfinite(values)]
    if not values.size:
        return 0.0, 1.0
    looks_like_hu = image.source.modality is None and values.min() <= -500
    if image.source.modality == "CT" or looks_like_hu:
        return CT_WINDOW
    low, high = np.percentile(values, [1, 99])
    return float(low), float(high if high > low else low + 1)


def _colours(labels: Volume, present: set[int]) -> dict[int, tuple[float, float, float]]:
    """Label number -> RGB in 0..1: the segment's colour, else a tab20 colour by number."""
    from matplotlib import colormaps

    palette = colormaps["tab20"].colors
    numbers = present | {s.number for s in labels.segments}
    given = {s.number: s.color for s in labels.segments if s.color}
    colours = {}
    for n in sorted(n for n in numbers if n > 0):
        colour = tuple(c / 255 for c in given[n]) if n in given else tuple(palette[(n - 1) % len(palette)])
        colours[n] = colour
    return colours  # type: ignore[return-value]


def _present(array: np.ndarray) -> set[int]:
    """Non-zero labels in a label array, from one ``find_objects`` pass (no sort, no mask per label)."""
    from scipy import ndimage

    if not array.any():
        return set()
    return {n for n, box in enumerate(ndimage.find_objects(array), 1) if box is not None}


def _edge_letters(ax, letters: str) -> None:
    """Patient directions at the panel's left, right, top and bottom edges."""
    style = {"color": "#e0e0e0", "fontsize": 9, "transform": ax.transAxes}
    ax.text(0.0, 0.5, letters[0], ha="left", va="center", **style)
    ax.text(1.0, 0.5, letters[1], ha="right", va="center", **style)
    ax.text(0.5, 1.0, letters[2], ha="center", va="top", **style)
    ax.text(0.5, 0.0, letters[3], ha="center", va="bottom", **style)
