"""The pixel paths agree with pydicom: raw reads at the scanned offset, pooled and serial decoding."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.pixels import pixel_array
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from medseg.io.dicom import scan
from medseg.io.dicom.pixels import read_stored_values, to_physical
from tests import factories


def _frames(folder):
    (series,) = scan(folder, workers=1).series
    return series.frames


@pytest.mark.parametrize("dtype, bits", [(np.uint16, 12), (np.int16, 12), (np.uint8, 8), (np.uint16, 16)])
def test_raw_read_masks_and_sign_extends_as_pydicom_does(tmp_path, dtype, bits):
    geometry = factories.axial_geometry(shape=(19, 13, 5))
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    # Values over the whole allocated range: high bits beyond BitsStored hold garbage.
    stored = rng.integers(info.min, info.max, geometry.shape, endpoint=True).astype(dtype)
    factories.write_stored_series(tmp_path, stored, geometry, bits_stored=bits)
    frames = _frames(tmp_path)
    assert all(f.encoding.raw_offset is not None for f in frames)  # the fast path is taken
    ours = read_stored_values(frames, workers=1)
    theirs = np.stack([pixel_array(f.path) for f in frames])
    assert ours.dtype == theirs.dtype
    np.testing.assert_array_equal(ours, theirs)
    if bits < np.dtype(dtype).itemsize * 8:
        assert not np.array_equal(ours, np.stack([stored[:, :, k].T for k in range(stored.shape[2])]))


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_raw_offset_points_at_the_pixel_data(tmp_path, phantom, syntax):
    image, _ = phantom
    factories.write_series(image, tmp_path, transfer_syntax=syntax)
    frame = _frames(tmp_path)[3]
    ds = pydicom.dcmread(frame.path)
    with open(frame.path, "rb") as f:
        f.seek(frame.encoding.raw_offset)
        assert f.read(64) == ds.PixelData[:64]


def test_pooled_decoding_equals_serial(tmp_path, phantom):
    image, _ = phantom  # 14 slices: enough compressed files for a pool of two
    factories.write_series(image, tmp_path, transfer_syntax=RLELossless)
    frames = _frames(tmp_path)
    pooled = read_stored_values(frames, workers=2)
    serial = read_stored_values(frames, workers=1)
    np.testing.assert_array_equal(pooled, serial)
    assert np.any(serial != serial[0, 0, 0])  # not trivially equal


def test_a_corrupt_compressed_file_names_itself(tmp_path, phantom):
    image, _ = phantom
    paths = factories.write_series(image, tmp_path, transfer_syntax=RLELossless)
    frames = _frames(tmp_path)
    ds = pydicom.dcmread(paths[5])
    ds.PixelData = ds.PixelData[:200] + b"\x00" * (len(ds.PixelData) - 200)  # garbage, same length
    ds.save_as(paths[5])
    from medseg.errors import DicomError

    with pytest.raises(DicomError, match=paths[5].name):
        read_stored_values(frames, workers=2)


@pytest.mark.parametrize(
    "stored_dtype, lo, hi, intercept, expected",
    [
        (np.uint16, 0, 4095, -1024, np.int16),  # ordinary CT
        (np.uint16, 1024, 1279, -1024, np.uint8),  # wraps in uint8 and is still exact
        (np.uint16, 0, 65535, -1024, np.int32),
        (np.int16, -2000, 3000, 0, np.int16),
    ],
)
def test_rescale_with_one_intercept_is_exact_in_the_narrowest_type(stored_dtype, lo, hi, intercept, expected):
    stored = np.random.default_rng(0).integers(lo, hi, (4, 7, 5), endpoint=True).astype(stored_dtype)
    stored.flat[0], stored.flat[1] = lo, hi
    out = to_physical(stored, [1] * 4, [intercept] * 4)
    assert out.dtype == expected
    np.testing.assert_array_equal(out.astype(np.int64), stored.astype(np.int64) + intercept)
