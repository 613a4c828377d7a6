"""Label statistics: counts, volumes from the affine, exact intensity moments, bounded memory."""

from __future__ import annotations

import csv
import json
import tracemalloc

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.metrics import statistics
from medseg.metrics.statistics import label_statistics, write_statistics
from medseg.volume import Segment, Volume, VolumeKind
from tests import factories


def test_counts_volumes_and_intensities_per_label(phantom):
    image, labels = phantom
    stats = label_statistics(labels, image)
    array, values = labels.channel(0), image.channel(0).astype(np.float64)
    assert [s.label for s in stats] == sorted(int(n) for n in np.unique(array) if n)
    voxel_ml = abs(np.linalg.det(labels.geometry.affine[:3, :3])) / 1000
    for s in stats:
        inside = values[array == s.label]
        assert s.voxels == inside.size
        assert s.volume_ml == pytest.approx(inside.size * voxel_ml)
        assert s.mean == pytest.approx(inside.mean(), rel=1e-12)
        assert s.std == pytest.approx(inside.std(), rel=1e-9)
    names = {seg.number: seg.name for seg in labels.segments}
    assert all(s.name == names[s.label] for s in stats)


def test_volume_uses_the_determinant_on_a_sheared_grid():
    geometry = factories.tilted_geometry(degrees=25.0)
    array = np.zeros(geometry.shape, np.uint8)
    array[3:9, 4:8, 2:5] = 1
    (stats,) = label_statistics(Volume(array, geometry, kind=VolumeKind.LABEL))
    # a tilt shears the slices but does not change the volume of a voxel: 1.6 x 1.4 x 3.0 mm
    assert stats.volume_ml == pytest.approx(72 * 1.6 * 1.4 * 3.0 / 1000)
    assert stats.mean is None and stats.std is None


def test_blocks_keep_exact_moments_of_large_offsets(monkeypatch):
    """Values around 3000 with a spread of 0.5, split over many blocks: no cancellation."""
    monkeypatch.setattr(statistics, "_BLOCK_VOXELS", 100)  # every slice its own block
    geometry = Geometry.from_spacing((10, 9, 23), (1.0, 1.0, 1.0))
    rng = np.random.default_rng(3)
    values = 3000.0 + rng.normal(0, 0.5, geometry.shape)
    array = rng.integers(0, 4, geometry.shape).astype(np.uint16)
    stats = label_statistics(Volume(array, geometry, kind=VolumeKind.LABEL), Volume(values, geometry))
    for s in stats:
        assert s.mean == pytest.approx(values[array == s.label].mean(), rel=1e-14)
        assert s.std == pytest.approx(values[array == s.label].std(), rel=1e-9)


def test_segments_without_voxels_are_listed_and_unnamed_labels_get_a_number():
    geometry = Geometry.from_spacing((6, 5, 4), (2.0, 2.0, 2.0))
    array = np.zeros(geometry.shape, np.uint8)
    array[0, 0, 0] = 7
    labels = Volume(array, geometry, kind=VolumeKind.LABEL, segments=(Segment(1, "liver"), Segment(2, "spleen")))
    image = Volume(np.full(geometry.shape, 42, np.int16), geometry)
    stats = label_statistics(labels, image)
    assert [(s.label, s.name, s.voxels, s.mean) for s in stats] == [
        (1, "liver", 0, None),
        (2, "spleen", 0, None),
        (7, "label 7", 1, 42.0),
    ]


def test_memory_stays_bounded_on_a_large_label_map():
    """A 10-million-voxel map with 40 labels: far less than one float64 copy of the image."""
    geometry = Geometry.from_spacing((256, 256, 160), (0.8, 0.8, 1.5))
    array = (np.arange(160, dtype=np.uint8) % 40)[None, None, :].repeat(256, 0).repeat(256, 1)
    labels = Volume(array, geometry, kind=VolumeKind.LABEL)
    image = Volume(np.ones(geometry.shape, np.int16), geometry)
    tracemalloc.start()
    try:
        stats = label_statistics(labels, image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(stats) == 39 and stats[0].voxels == 256 * 256 * 4
    float_copy = array.size * 8
    assert peak < float_copy / 3, f"peak {peak / 1e6:.0f} MB"


def test_refuses_images_off_the_grid_and_non_label_maps():
    geometry = factories.axial_geometry()
    labels = Volume(np.zeros(geometry.shape, np.uint8), geometry, kind=VolumeKind.LABEL)
    other = Volume(np.zeros(geometry.shape, np.int16), Geometry.from_spacing(geometry.shape, (1.0, 1.0, 1.0)))
    with pytest.raises(GeometryError):
        label_statistics(labels, other)
    with pytest.raises(InputError, match="label map"):
        label_statistics(other)


def test_write_statistics_json_and_csv(tmp_path, phantom):
    image, labels = phantom
    stats = label_statistics(labels, image)
    json_path, csv_path = tmp_path / "out" / "case.stats.json", tmp_path / "out" / "case.stats.csv"
    assert write_statistics(stats, json_path, csv_path) == [json_path, csv_path]
    data = json.loads(json_path.read_text())
    assert [row["label"] for row in data["labels"]] == [s.label for s in stats]
    assert data["labels"][0]["volume_ml"] == pytest.approx(stats[0].volume_ml)
    rows = list(csv.DictReader(csv_path.open()))
    assert list(rows[0]) == ["label", "name", "voxels", "volume_ml", "mean", "std"]
    assert float(rows[0]["mean"]) == pytest.approx(stats[0].mean)
    assert sorted(p.name for p in json_path.parent.iterdir()) == ["case.stats.csv", "case.stats.json"]
    empty = label_statistics(labels)
    write_statistics(empty, None, csv_path)
    assert next(csv.DictReader(csv_path.open()))["mean"] == ""
