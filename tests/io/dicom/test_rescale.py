"""Stored values become physical values: signedness, rescale, and the type that holds them exactly."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from medseg.io.dicom import read_dicom, scan
from medseg.volume import Volume
from tests import factories

GEOMETRY = factories.oblique_geometry(shape=(17, 13, 5))


def _stored(dtype, lo: int, hi: int, seed: int = 0) -> np.ndarray:
    """Random stored values covering ``lo..hi`` (both ends present)."""
    values = np.random.default_rng(seed).integers(lo, hi + 1, size=GEOMETRY.shape)
    values.flat[0], values.flat[-1] = lo, hi
    return values.astype(dtype)


def test_writer_stores_ct_unsigned_with_intercept_and_reads_int16(tmp_path):
    hu = Volume(_stored(np.int16, -1024, 3071), GEOMETRY)
    paths = factories.write_series(hu, tmp_path)
    ds = pydicom.dcmread(paths[0])
    assert ds.PixelRepresentation == 0 and float(ds.RescaleIntercept) == -1024 and float(ds.RescaleSlope) == 1

    volume = read_dicom(tmp_path)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.channel(0), hu.channel(0))


def test_writer_stores_ct_below_minus_1024_signed(tmp_path):
    """Padding values below -1024 (e.g. -2048 outside the circular field of view) need signed storage."""
    hu = Volume(_stored(np.int16, -2048, 2000), GEOMETRY)
    paths = factories.write_series(hu, tmp_path)
    ds = pydicom.dcmread(paths[0])
    assert ds.PixelRepresentation == 1 and float(ds.RescaleIntercept) == 0
    volume = read_dicom(tmp_path)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.channel(0), hu.channel(0))


@pytest.mark.parametrize(
    ("stored_dtype", "lo", "hi", "intercept", "expected_dtype"),
    [
        (np.uint16, 0, 4095, -1024, np.int16),  # the usual CT
        (np.uint16, 0, 65535, -1024, np.int32),  # -1024..64511 does not fit int16
        (np.int16, -32768, 32767, -1024, np.int32),  # -33792 does not fit int16
        (np.int16, -2000, 2000, 0, np.int16),
        (np.uint8, 0, 255, -10, np.int16),
        (np.uint16, 0, 65535, 0, np.uint16),  # no rescale: stays as stored
    ],
)
def test_integer_rescale_is_exact_in_the_smallest_type(tmp_path, stored_dtype, lo, hi, intercept, expected_dtype):
    stored = _stored(stored_dtype, lo, hi)
    bits = 8 if stored_dtype == np.uint8 else 16
    factories.write_stored_series(
        tmp_path, stored, GEOMETRY, modality="CT", bits_stored=bits, slopes=[1] * 5, intercepts=[intercept] * 5
    )
    volume = read_dicom(tmp_path)
    assert volume.dtype == expected_dtype
    np.testing.assert_array_equal(volume.channel(0).astype(np.int64), stored.astype(np.int64) + intercept)


def test_signed_12_bit_values_are_sign_extended(tmp_path):
    """Signed 12-bit data in 16-bit words whose top four bits are not sign-extended."""
    values = _stored(np.int16, -2048, 2047)
    stored = (values.astype(np.int32) & 0x0FFF).astype(np.uint16)  # two's complement in the low 12 bits only
    signed = [{"PixelRepresentation": 1}] * 5
    factories.write_stored_series(tmp_path, stored, GEOMETRY, bits_stored=12, per_slice=signed)
    volume = read_dicom(tmp_path)
    np.testing.assert_array_equal(volume.channel(0), values)


def test_non_integer_slope_gives_float32(tmp_path):
    stored = _stored(np.uint16, 0, 4095)
    factories.write_stored_series(tmp_path, stored, GEOMETRY, slopes=[0.5] * 5, intercepts=[-1024.25] * 5)
    volume = read_dicom(tmp_path)
    assert volume.dtype == np.float32
    # Quarter steps below 2048 are exact in float32.
    np.testing.assert_array_equal(volume.channel(0), stored * 0.5 - 1024.25)


def test_realistic_mr_slope(tmp_path):
    stored = _stored(np.uint16, 0, 4095)
    factories.write_stored_series(tmp_path, stored, GEOMETRY, slopes=[3.774114] * 5, intercepts=[0.000061] * 5)
    volume = read_dicom(tmp_path)
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume.channel(0), stored * 3.774114 + 0.000061, rtol=1e-6)


def test_per_slice_integer_rescale(tmp_path):
    stored = _stored(np.uint16, 0, 4095)
    intercepts = [-1024, -1000, -2048, 0, -1024]
    factories.write_stored_series(
        tmp_path, stored, GEOMETRY, modality="CT", slopes=[1, 1, 1, 2, 1], intercepts=intercepts
    )
    (series,) = scan(tmp_path).series
    assert "varying_rescale" in series.layout.problem_codes
    volume = read_dicom(tmp_path)
    assert np.issubdtype(volume.dtype, np.signedinteger)
    expected = stored.astype(np.int64) + np.array(intercepts)
    expected[:, :, 3] = stored[:, :, 3].astype(np.int64) * 2
    np.testing.assert_array_equal(volume.channel(0), expected)


def test_per_slice_float_rescale(tmp_path):
    stored = _stored(np.uint16, 0, 4095)
    slopes = [0.25, 0.5, 1.0, 1.5, 2.0]
    intercepts = [-512.5, -100.0, 0.0, 7.75, -3.0]
    factories.write_stored_series(tmp_path, stored, GEOMETRY, slopes=slopes, intercepts=intercepts)
    volume = read_dicom(tmp_path)
    assert volume.dtype == np.float32
    np.testing.assert_array_equal(volume.channel(0), stored * np.array(slopes) + np.array(intercepts))
