"""Preview PNGs: radiological orientation whatever the stored axis order, colours, windows."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.inference.preview import PREVIEW_SIZE, write_preview
from medseg.volume import Segment, SourceSeries, Volume, VolumeKind
from tests import factories

SHAPE, SPACING = (40, 36, 24), (1.2, 1.0, 2.5)
CENTRE = np.array([10.0, -5.0, 30.0])  # LPS mm of the middle of the grid
#: the labelled sphere: towards the patient's left (+x), anterior (-y) and head (+z)
SPHERE = CENTRE + [10.0, -8.0, 8.0]


def _grid(direction: np.ndarray, spacing=SPACING, shape=SHAPE) -> Geometry:
    """A grid with the given axes whose middle voxel sits at CENTRE."""
    half = (np.array(shape) - 1) / 2
    origin = CENTRE - (np.asarray(direction) * spacing) @ half
    return Geometry.from_spacing(shape, spacing, origin, direction)


def _scan(geometry: Geometry, radius: float = 6.0) -> tuple[Volume, Volume]:
    """A CT of air but for a soft-tissue ball (40 HU) around the labelled sphere of ``radius`` mm."""
    body = factories.sphere_volume(geometry, tuple(SPHERE), radius + 4, inside=40, outside=-1000)
    image = body.replace(source=SourceSeries(modality="CT"))
    mask = factories.sphere_volume(geometry, tuple(SPHERE), radius, inside=1, outside=0)
    labels = Volume(
        mask.channel(0).astype(np.uint8), geometry, kind=VolumeKind.LABEL, segments=(Segment(1, "lesion", (255, 0, 0)),)
    )
    return image, labels


def _panels(png: np.ndarray) -> list[tuple[np.ndarray, tuple[slice, slice]]]:
    """Per panel (axial, coronal, sagittal): the red-overlay mask and the slices of its black (air) image."""
    rgb = png[..., :3]
    red = (rgb[..., 0] - rgb[..., 1:].max(axis=-1)) > 0.3
    image_pixels = (rgb.max(axis=-1) < 0.05) | red | (np.ptp(rgb, axis=-1) < 0.01) & (rgb[..., 0] > 0.2)
    third = png.shape[1] // 3
    out = []
    for column in range(3):
        cols = slice(column * third, (column + 1) * third)
        black = np.argwhere(rgb[:, cols].max(axis=-1) < 0.05)
        (r0, c0), (r1, c1) = black.min(axis=0), black.max(axis=0)
        extent = (slice(r0, r1 + 1), slice(column * third + c0, column * third + c1 + 1))
        assert image_pixels[extent].mean() > 0.99  # the extent is all image
        out.append((red[extent], extent))
    return out


def _centroid(mask: np.ndarray) -> np.ndarray:
    """Row and column of the mask's centre, as fractions of the panel (0.5: the middle)."""
    return np.argwhere(mask).mean(axis=0) / (np.array(mask.shape) - 1)


GRIDS = {
    "LPS": np.eye(3),
    "feet first": np.diag([-1.0, 1.0, -1.0]),
    "sagittal stack": np.array([[0, 0, -1.0], [1.0, 0, 0], [0, -1.0, 0]]),  # i: posterior, j: feet, k: right
    "oblique": factories.rotation("z", 11) @ factories.rotation("x", -8),
}


@pytest.mark.parametrize("name", GRIDS)
def test_panels_are_radiological_whatever_the_stored_axes(tmp_path, name):
    image, labels = _scan(_grid(GRIDS[name]))
    path = write_preview(image, labels, tmp_path / "preview.png")
    png = imread(path)
    assert png.shape[:2] == (PREVIEW_SIZE[1], PREVIEW_SIZE[0])
    (axial, _), (coronal, _), (sagittal, _) = _panels(png)
    row, col = _centroid(axial)
    assert col > 0.6 and row < 0.4  # patient's left on the screen's right, anterior up
    row, col = _centroid(coronal)
    assert col > 0.6 and row < 0.4  # left on the right, head up
    row, col = _centroid(sagittal)
    assert col < 0.4 and row < 0.4  # anterior on the left, head up


def test_the_same_voxels_stored_in_another_axis_order_give_the_same_picture(tmp_path):
    """A grid and its sagittal re-stacking (same voxel centres) render pixel for pixel alike."""
    plain = _grid(np.eye(3))
    direction = GRIDS["sagittal stack"]  # columns: +y, -z, -x
    restacked = Geometry.from_spacing(
        (SHAPE[1], SHAPE[2], SHAPE[0]),
        (SPACING[1], SPACING[2], SPACING[0]),
        plain.index_to_physical([SHAPE[0] - 1, 0, SHAPE[2] - 1]),
        direction,
    )
    assert sorted(map(tuple, np.round(restacked.corners(), 6))) == sorted(map(tuple, np.round(plain.corners(), 6)))
    a = imread(write_preview(*_scan(plain), tmp_path / "a.png"))
    b = imread(write_preview(*_scan(restacked), tmp_path / "b.png"))
    np.testing.assert_array_equal(a, b)


def test_physical_aspect_ratio(tmp_path):
    """A ball looks round however anisotropic the voxels (3 x 0.75 x 1.5 mm)."""
    geometry = _grid(np.eye(3), spacing=(3.0, 0.75, 1.5), shape=(24, 80, 40))
    image, labels = _scan(geometry, radius=9.0)
    for mask, _ in _panels(imread(write_preview(image, labels, tmp_path / "p.png"))):
        rows, cols = np.ptp(np.argwhere(mask), axis=0) + 1
        assert rows / cols == pytest.approx(1.0, abs=0.25)


def test_ct_window_and_mr_percentiles(tmp_path):
    geometry = _grid(np.eye(3))
    image, labels = _scan(geometry)
    png = imread(write_preview(image, labels, tmp_path / "ct.png"))
    _, (rows, cols) = _panels(png)[0]
    tissue = png[rows, cols, :3]
    grey = tissue[(np.ptp(tissue, axis=-1) < 0.01) & (tissue[..., 0] > 0.2)]
    assert np.median(grey) == pytest.approx((40 + 160) / 400, abs=0.03)  # -160..240 HU
    mr = image.with_array(np.where(image.channel(0) > 0, 100, 0).astype(np.int16)[None]).replace(
        source=SourceSeries(modality="MR")
    )
    png = imread(write_preview(mr, labels, tmp_path / "mr.png"))
    _, (rows, cols) = _panels(png)[0]
    tissue = png[rows, cols, :3]
    grey = tissue[(np.ptp(tissue, axis=-1) < 0.01) & (tissue[..., 0] > 0.2)]
    assert np.median(grey) > 0.95  # 1st..99th percentile: the tissue is white (a CT window gives 0.65)


def test_without_foreground_and_with_unnamed_labels(tmp_path):
    geometry = _grid(np.eye(3))
    image, labels = _scan(geometry)
    empty = labels.with_array(np.zeros(labels.array.shape, np.uint8), segments=())
    assert imread(write_preview(image, empty, tmp_path / "e.png")).shape[:2] == (PREVIEW_SIZE[1], PREVIEW_SIZE[0])
    unnamed = labels.with_array(labels.array * 5, segments=())  # label 5, a palette colour
    png = imread(write_preview(image, unnamed, tmp_path / "u.png"))
    assert png.shape[:2] == (PREVIEW_SIZE[1], PREVIEW_SIZE[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.png", "u.png"]  # no temporary files left


def test_refuses_other_grids_and_non_label_maps(tmp_path):
    image, labels = _scan(_grid(np.eye(3)))
    with pytest.raises(InputError, match="label map"):
        write_preview(image, image, tmp_path / "x.png")
    moved = labels.replace(geometry=_grid(np.eye(3), spacing=(1.0, 1.0, 1.0)))
    with pytest.raises(GeometryError):
        write_preview(image, moved, tmp_path / "x.png")
    assert not any(tmp_path.iterdir())
