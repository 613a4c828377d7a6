"""The fingerprint: statistics against numpy on the same voxels, determinism, JSON, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.geometry import Geometry
from medseg.planning import Fingerprint, compute_fingerprint
from medseg.planning import fingerprint as fingerprint_module
from medseg.synthetic import PhantomSpec, make_phantom
from medseg.volume import Volume, VolumeKind
from tests import factories

LABELS = {1: "liver", 2: "spleen", 3: "kidney"}


@pytest.fixture(scope="module")
def phantoms() -> list[tuple[Volume, Volume]]:
    """Three phantoms on different grids: oblique, anisotropic and plain."""
    return [
        factories.phantom_pair(seed=3),
        make_phantom(4, PhantomSpec(shape=(60, 50, 12), spacing=(4.8, 5.5, 13.0))),
        make_phantom(5, PhantomSpec(shape=(64, 56, 30), spacing=(4.5, 4.5, 5.5))),
    ]


def _fingerprint(cases, **options) -> Fingerprint:
    return compute_fingerprint(cases, modality="CT", channel_names=["CT"], labels=LABELS, **options)


def test_statistics_of_all_foreground_voxels_match_numpy(phantoms):
    fp = _fingerprint(phantoms, samples_per_case=10**9)
    values = np.concatenate([image.array[0][labels.array[0] > 0] for image, labels in phantoms]).astype(np.float64)
    (stats,) = fp.channels
    assert stats.name == "CT"
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-12)
    assert (stats.median, stats.min, stats.max) == (np.median(values), values.min(), values.max())
    assert stats.percentile_00_5 == pytest.approx(np.percentile(values, 0.5))
    assert stats.percentile_99_5 == pytest.approx(np.percentile(values, 99.5))
    assert stats.percentile_00_5 < stats.median < stats.percentile_99_5
    assert fp.num_cases == 3 and fp.modality == "CT" and fp.labels == LABELS
    assert fp.shapes == tuple(image.spatial_shape for image, _ in phantoms)
    assert fp.spacings == tuple(image.geometry.spacing for image, _ in phantoms)
    for number in LABELS:
        per_case = [int(np.count_nonzero(labels.array == number)) for _, labels in phantoms]
        assert fp.label_voxels[number] == sum(per_case)
        assert fp.label_cases[number] == sum(n > 0 for n in per_case) == 3


def test_sampled_statistics_are_those_of_the_seeded_sample(phantoms, monkeypatch):
    """Sampling picks foreground voxels by rank in raster order, with a generator seeded by (seed, case)."""
    monkeypatch.setattr(fingerprint_module, "_SLAB_VOXELS", 999)  # many slabs, odd boundaries
    fp = _fingerprint(phantoms, samples_per_case=700, seed=11)
    taken = []
    for index, (image, labels) in enumerate(phantoms):
        foreground = image.array[0][labels.array[0] > 0]
        ranks = np.sort(np.random.default_rng((11, index)).choice(foreground.size, 700, replace=False))
        taken.append(foreground[ranks].astype(np.float64))
    values = np.concatenate(taken)
    (stats,) = fp.channels
    assert stats.mean == pytest.approx(values.mean(), rel=1e-12)
    assert stats.std == pytest.approx(values.std(), rel=1e-12)
    assert (stats.median, stats.min, stats.max) == (np.median(values), values.min(), values.max())
    assert stats.percentile_99_5 == pytest.approx(np.percentile(values, 99.5))
    full = _fingerprint(phantoms, samples_per_case=10**9).channels[0]
    assert abs(stats.mean - full.mean) < 0.1 * full.std  # a sample, but a representative one


def test_same_input_same_fingerprint_and_the_seed_matters(phantoms):
    first = _fingerprint(phantoms, samples_per_case=500)
    assert _fingerprint(list(phantoms), samples_per_case=500) == first
    assert _fingerprint(iter(phantoms), samples_per_case=500) == first
    assert _fingerprint(phantoms, samples_per_case=500, seed=1).channels != first.channels


def test_progress_reports_each_case_with_the_total_when_known(phantoms):
    calls = []
    _fingerprint(phantoms, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    calls.clear()
    _fingerprint(iter(phantoms), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, None), (2, None), (3, None)]


def test_channels_are_measured_separately():
    geometry = Geometry.from_spacing((20, 16, 6), (0.9, 0.9, 3.0))
    rng = np.random.default_rng(0)
    t1 = rng.normal(200.0, 10.0, geometry.shape)
    t2 = rng.normal(-50.0, 3.0, geometry.shape)
    labels = np.zeros(geometry.shape, dtype=np.uint8)
    labels[5:15, 4:12, 1:5] = 1
    image = Volume(np.stack([t1, t2]).astype(np.float32), geometry)
    fp = compute_fingerprint(
        [(image, Volume(labels, geometry, kind=VolumeKind.LABEL))],
        modality="MR",
        channel_names=["T1", "T2"],
        labels={1: "lesion"},
    )
    assert [c.name for c in fp.channels] == ["T1", "T2"]
    for stats, array in zip(fp.channels, (t1, t2)):
        expected = array.astype(np.float32)[labels > 0].astype(np.float64)
        assert stats.mean == pytest.approx(expected.mean(), rel=1e-9)
        assert stats.max == expected.max()
    assert fp.label_voxels == {1: 10 * 8 * 4} and fp.label_cases == {1: 1}


def test_median_spacing_and_shape():
    geometries = [((100, 100, 50), (1.0, 1.0, 2.0)), ((80, 120, 40), (1.5, 1.0, 2.0)), ((50, 50, 10), (2.0, 2.0, 5.0))]
    cases = []
    for shape, spacing in geometries:
        geometry = Geometry.from_spacing(shape, spacing)
        labels = np.zeros(shape, dtype=np.uint8)
        labels[0, 0, 0] = 1
        cases.append((Volume(np.ones(shape, np.int16), geometry), Volume(labels, geometry, kind=VolumeKind.LABEL)))
    fp = compute_fingerprint(cases, modality="CT", channel_names=["CT"], labels={1: "dot"})
    assert fp.median_spacing == (1.5, 1.0, 2.0)
    # At 1.5 x 1 x 2 mm the cases measure 67 x 100 x 50, 80 x 120 x 40 and 67 x 100 x 25 voxels.
    assert fp.shapes_at(fp.median_spacing) == ((67, 100, 50), (80, 120, 40), (67, 100, 25))
    assert fp.median_shape == (67, 100, 40)


def _body_case(label_at: tuple[int, int, int]) -> tuple[Volume, Volume]:
    geometry = Geometry.from_spacing((40, 30, 20), (1.0, 1.0, 2.0))
    image = np.full((40, 30, 20), -1000, dtype=np.int16)
    image[5:35, 4:24, 2:18] = 50  # the body: 30 x 20 x 16 voxels
    labels = np.zeros((40, 30, 20), dtype=np.uint8)
    labels[10:20, 10:20, 5:10] = 1
    labels[label_at] = 1
    return Volume(image, geometry), Volume(labels, geometry, kind=VolumeKind.LABEL)


def test_ct_cases_record_their_body_box_and_whether_it_holds_the_labels():
    inside, outside = _body_case((6, 6, 3)), _body_case((1, 1, 1))  # the second has a label voxel in the air
    fp = compute_fingerprint([inside, outside, inside], modality="CT", channel_names=["CT"], labels={1: "organ"})
    assert fp.body_shapes == ((30, 20, 16),) * 3
    assert fp.labels_outside_body == (1,) and not fp.body_crop_safe
    fp = compute_fingerprint([inside, inside], modality="CT", channel_names=["CT"], labels={1: "organ"})
    assert fp.body_crop_safe and fp.cropped_to_body().median_shape_at((1.0, 1.0, 2.0)) == (30, 20, 16)
    assert Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict()))) == fp
    mr = compute_fingerprint([inside], modality="MR", channel_names=["T2"], labels={1: "organ"})
    assert mr.body_shapes == () and not mr.body_crop_safe
    old = fp.to_dict()
    del old["body_shapes"], old["labels_outside_body"]  # written before the body was measured
    assert not Fingerprint.from_dict(old).body_crop_safe


def test_each_labels_volume_and_pieces_per_case(phantoms):
    fp = _fingerprint(phantoms)
    for number in (1, 2, 3):
        expected = [round(float((labels.array[0] == number).sum()) * labels.geometry.voxel_volume_ml, 3)
                    for _, labels in phantoms if (labels.array[0] == number).any()]
        assert list(fp.label_volumes_ml[number]) == pytest.approx(expected) and len(expected) == 3
    # a liver and a spleen each in one piece; two kidneys under one label: two pieces
    assert fp.label_pieces == {1: (1, 1, 1), 2: (1, 1, 1), 3: (2, 2, 2)}


def test_round_trips_through_json(phantoms):
    fp = _fingerprint(phantoms)
    data = json.loads(json.dumps(fp.to_dict()))
    assert data["format"] == "medseg-fingerprint" and data["labels"] == {"1": "liver", "2": "spleen", "3": "kidney"}
    assert Fingerprint.from_dict(data) == fp


def test_from_dict_names_what_is_wrong(phantoms):
    data = _fingerprint(phantoms).to_dict()
    with pytest.raises(InputError, match="not a medseg fingerprint"):
        Fingerprint.from_dict({"modality": "CT"})
    with pytest.raises(InputError, match="version 9"):
        Fingerprint.from_dict({**data, "version": 9})
    with pytest.raises(InputError, match="'spacings'"):
        Fingerprint.from_dict({k: v for k, v in data.items() if k != "spacings"})


def test_bad_cases_are_refused_with_the_case_named(phantoms):
    image, labels = phantoms[0]
    with pytest.raises(InputError, match=r"case 0: the image has 1 channel\(s\), expected 2"):
        compute_fingerprint([(image, labels)], modality="MR", channel_names=["T1", "T2"], labels=LABELS)
    no_kidney = labels.with_array(np.where(labels.array == 3, 0, labels.array).astype(np.uint8))
    with pytest.raises(InputError, match=r"case 1: .* values \[3\] that are not declared labels \[1, 2\]"):
        compute_fingerprint(
            [(image, no_kidney), phantoms[1]], modality="CT", channel_names=["CT"], labels={1: "liver", 2: "spleen"}
        )
    with pytest.raises(InputError, match="must be a label map"):
        _fingerprint([(image, image)])
    other, _ = phantoms[2]
    with pytest.raises(GeometryError, match="case 0: image and label map grids"):
        _fingerprint([(other, labels)])
    empty = labels.with_array(np.zeros_like(labels.array))
    with pytest.raises(InputError, match="none of the 1 label maps has a foreground voxel"):
        _fingerprint([(image, empty)])
    with pytest.raises(InputError, match="no cases"):
        _fingerprint([])
    with pytest.raises(InputError, match="label numbers >= 1"):
        compute_fingerprint(phantoms, modality="CT", channel_names=["CT"], labels={0: "background", 1: "liver"})


def test_one_large_case_is_fast_and_light():
    """A 512 x 512 x 200 case: counting and sampling slab by slab, not a copy of the volume per step."""
    import time
    import tracemalloc

    shape = (512, 512, 200)
    geometry = Geometry.from_spacing(shape, (0.8, 0.8, 1.5))
    image = Volume(np.full(shape, 40, dtype=np.int16), geometry)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[100:400, 120:380, 30:170] = 2
    label_map = Volume(labels, geometry, kind=VolumeKind.LABEL)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fp = compute_fingerprint([(image, label_map)], modality="CT", channel_names=["CT"], labels={2: "organ"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert fp.label_voxels == {2: 300 * 260 * 140}
    assert fp.channels[0].mean == 40.0
    assert peak < labels.nbytes / 4  # the label map alone is 52 MB; a small fraction is allocated on top
    assert time.perf_counter() - start < 5.0


def test_label_positions_are_centroids_as_fractions_of_the_extent():
    shape = (40, 30, 20)
    geometry = Geometry.from_spacing(shape, (1.0, 1.0, 2.0))
    image = Volume(np.zeros(shape, dtype=np.int16), geometry)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[0:10, 0:30, 0:20] = 1  # centroid at i = 5 of 40 voxels: (4.5 + 0.5) / 40
    labels[30:40, 12:18, 15:20] = 2
    label_map = Volume(labels, geometry, kind=VolumeKind.LABEL)
    fp = compute_fingerprint([(image, label_map)] * 2, modality="CT", channel_names=["CT"], labels={1: "a", 2: "b", 3: "c"})
    assert fp.label_positions[1] == ((0.125, 0.5, 0.5),) * 2
    assert fp.label_positions[2] == ((0.875, 0.5, 0.875),) * 2
    assert 3 not in fp.label_positions
    back = Fingerprint.from_dict(json.loads(json.dumps(fp.to_dict())))
    assert back == fp
    old = {k: v for k, v in fp.to_dict().items() if k != "label_positions"}  # written before positions
    assert Fingerprint.from_dict(old).label_positions == {}
