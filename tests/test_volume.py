"""Volume: validation when built, immutability, and derivation that keeps geometry and source."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import GeometryError, InputError
from medseg.volume import Segment, SourceSeries, Volume, VolumeKind
from tests.factories import oblique_geometry, ramp_volume

SOURCE = SourceSeries(
    modality="CT",
    study_instance_uid="1.2.3",
    series_instance_uid="1.2.3.4",
    series_description="Abdomen 3mm",
    sop_instance_uids=tuple(f"1.2.3.4.{n}" for n in range(9)),
)


def test_a_3d_array_gets_a_channel_axis():
    g = oblique_geometry()
    data = np.arange(np.prod(g.shape), dtype=np.int16).reshape(g.shape)
    v = Volume(data, g)
    assert v.array.shape == (1, 23, 17, 9)
    assert v.num_channels == 1
    assert v.spatial_shape == (23, 17, 9)
    assert v.dtype == np.int16
    np.testing.assert_array_equal(v.channel(0), data)


def test_a_4d_array_keeps_its_channels():
    g = oblique_geometry()
    data = np.random.default_rng(0).random((3, *g.shape), dtype=np.float32)
    v = Volume(data, g, kind="probabilities")
    assert v.num_channels == 3
    assert v.kind is VolumeKind.PROBABILITIES
    np.testing.assert_array_equal(v.channel(2), data[2])


@pytest.mark.parametrize("shape", [(23, 17, 8), (17, 23, 9), (9, 17, 23), (1, 23, 17)], ids=str)
def test_shape_mismatch_is_a_geometry_error(shape):
    with pytest.raises(GeometryError, match=r"\[23, 17, 9\]"):
        Volume(np.zeros(shape, np.int16), oblique_geometry())


@pytest.mark.parametrize("shape", [(23, 17), (1, 1, 23, 17, 9)], ids=["2d", "5d"])
def test_wrong_number_of_axes_is_a_geometry_error(shape):
    with pytest.raises(GeometryError, match="C, I, J, K"):
        Volume(np.zeros(shape, np.int16), oblique_geometry())


def test_label_of_floats_is_an_input_error():
    g = oblique_geometry()
    with pytest.raises(InputError, match="float32"):
        Volume(np.zeros(g.shape, np.float32), g, kind=VolumeKind.LABEL)
    with pytest.raises(ValueError, match="one channel"):
        Volume(np.zeros((2, *g.shape), np.uint8), g, kind="label")
    assert Volume(np.zeros(g.shape, np.uint16), g, kind="label").kind is VolumeKind.LABEL


def test_unknown_kind_is_rejected():
    g = oblique_geometry()
    with pytest.raises(ValueError):
        Volume(np.zeros(g.shape), g, kind="mask")


def test_array_is_read_only():
    v = ramp_volume()
    assert not v.array.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        v.array[0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match="read-only"):
        v.channel(0)[1, 2, 3] = 5
    with pytest.raises(AttributeError):
        v.geometry = oblique_geometry(shape=(1, 1, 1))  # type: ignore[misc]


def test_building_does_not_make_the_callers_array_read_only():
    g = oblique_geometry()
    data = np.zeros(g.shape, np.int16)
    Volume(data, g)
    data[0, 0, 0] = 1  # still writable for its owner
    assert data[0, 0, 0] == 1


def test_with_array_keeps_geometry_source_path_and_segments():
    g = oblique_geometry()
    segments = (Segment(1, "liver", (221, 130, 101)),)
    labels = Volume(np.zeros(g.shape, np.uint8), g, kind="label", source=SOURCE, segments=segments, path="/x/ct")
    derived = labels.with_array(np.ones(g.shape, np.uint8))
    assert derived.geometry is g
    assert derived.source is SOURCE
    assert derived.path == "/x/ct"
    assert derived.segments == segments
    assert derived.kind is VolumeKind.LABEL
    assert derived.array.sum() == np.prod(g.shape)
    assert labels.array.sum() == 0  # the original is untouched


def test_with_array_changes_kind_and_segments_and_revalidates():
    image = ramp_volume().replace(source=SOURCE)
    g = image.geometry
    probs = image.with_array(np.zeros((2, *g.shape), np.float32), kind="probabilities")
    assert probs.kind is VolumeKind.PROBABILITIES and probs.num_channels == 2
    assert probs.source is SOURCE and probs.geometry is g
    labels = image.with_array(np.zeros(g.shape, np.uint8), kind=VolumeKind.LABEL, segments=[Segment(2, "spleen")])
    assert labels.segments == (Segment(2, "spleen"),)
    with pytest.raises(GeometryError):
        image.with_array(np.zeros((2, 2, 2), np.int32))
    with pytest.raises(InputError):
        labels.with_array(np.zeros(g.shape, np.float32))


def test_replace_validates_again():
    v = ramp_volume()
    with pytest.raises(GeometryError):
        v.replace(geometry=oblique_geometry(shape=(23, 17, 10)))
    moved = oblique_geometry(origin=(0.0, 0.0, 0.0))
    assert v.replace(geometry=moved).geometry is moved


def test_repr_names_kind_channels_dtype_geometry_and_series():
    v = ramp_volume().replace(source=SOURCE)
    text = repr(v)
    assert text.startswith("Volume(image, channels=1, dtype=int32, Geometry(shape=[23, 17, 9]")
    assert text.endswith("'Abdomen 3mm')")
    assert repr(ramp_volume()).endswith("orientation='LPS'))")
    assert repr(ramp_volume().replace(path="/data/ct.nii.gz")).endswith("'/data/ct.nii.gz')")
