"""Every transfer syntax a scanner or archive sends decodes to the values that were written."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from medseg.io.dicom import read_dicom, read_series, scan
from tests import factories

requires_dcmcjpeg = pytest.mark.skipif(
    shutil.which("dcmcjpeg") is None, reason="dcmtk's dcmcjpeg is not on PATH (apt-get install dcmtk)"
)

WRITER_SYNTAXES = [
    ImplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEGLSLossless,
    JPEG2000Lossless,
]


@pytest.fixture(scope="module")
def phantom_image():
    image, _ = factories.phantom_pair()
    return image


def _transfer_syntax(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def _assert_lossless(folder: Path, truth) -> None:
    found = scan(folder)
    assert len(found.series) == 1 and not found.skipped
    volume = read_dicom(folder)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.channel(0), truth.channel(0))
    assert volume.geometry.max_distance_to(truth.geometry) < 1e-3
    assert volume.source.units == "HU"


@pytest.mark.parametrize("syntax", WRITER_SYNTAXES, ids=lambda uid: uid.keyword)
def test_lossless_syntax_gives_written_hu_exactly(tmp_path, phantom_image, syntax):
    paths = factories.write_series(phantom_image, tmp_path, transfer_syntax=syntax)
    assert {_transfer_syntax(p) for p in paths} == {syntax}
    _assert_lossless(tmp_path, phantom_image)


def test_deflated_files_are_really_deflated(tmp_path, phantom_image):
    paths = factories.write_series(phantom_image, tmp_path, transfer_syntax=DeflatedExplicitVRLittleEndian)
    # The patient name is plain text in every other syntax; deflate hides it after the file meta.
    assert b"Phantom^Medseg" not in paths[0].read_bytes()
    _assert_lossless(tmp_path, phantom_image)


@pytest.mark.integration
@requires_dcmcjpeg
@pytest.mark.parametrize(
    ("flags", "syntax"),
    [(("+e1",), JPEGLosslessSV1), (("+el",), JPEGLossless), (("+el", "+sv", "7"), JPEGLossless)],
    ids=["process14-sv1", "process14-sv6", "process14-sv7"],
)
def test_dcmtk_jpeg_lossless_gives_written_hu_exactly(tmp_path, phantom_image, flags, syntax):
    plain = factories.write_series(phantom_image, tmp_path / "plain")
    paths = factories.dcmtk_compress(plain, tmp_path / "jpeg", *flags)
    assert {_transfer_syntax(p) for p in paths} == {syntax}
    _assert_lossless(tmp_path / "jpeg", phantom_image)


def _smooth_8bit(geometry) -> np.ndarray:
    """A smooth 8-bit pattern (JPEG's lossy steps stay small on it) that still differs per slice."""
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float64) for n in geometry.shape), indexing="ij")
    pattern = 120 + 70 * np.sin(i / 6.0) * np.cos(j / 9.0) + 4 * k
    return np.clip(np.rint(pattern), 0, 255).astype(np.uint8)


@pytest.mark.integration
@requires_dcmcjpeg
@pytest.mark.parametrize(
    "scaling",
    [("+sr",), ("+rm",)],
    ids=["identity-range", "rescale-map"],
)
def test_dcmtk_jpeg_baseline_8bit_is_close(tmp_path, scaling):
    """Lossy baseline JPEG: values within JPEG's error. With ``+rm`` dcmtk stretches each slice's
    range and records the shift in RescaleIntercept, which the reader must apply."""
    geometry = factories.oblique_geometry(shape=(40, 32, 6))
    stored = _smooth_8bit(geometry)
    plain = factories.write_stored_series(tmp_path / "plain", stored, geometry, modality="MR", bits_stored=8)
    paths = factories.dcmtk_compress(plain, tmp_path / "jpeg", "+eb", "+q", "90", *scaling)
    assert {_transfer_syntax(p) for p in paths} == {JPEGBaseline8Bit}

    volume = read_dicom(tmp_path / "jpeg")
    assert np.issubdtype(volume.dtype, np.integer)
    assert volume.geometry.max_distance_to(geometry) < 1e-3
    error = np.abs(volume.channel(0).astype(np.int16) - stored.astype(np.int16))
    assert error.max() <= 8, f"JPEG baseline error up to {error.max()}"
    assert error.mean() < 1.5
    # Slices kept their order: the per-slice offset of 4 is visible in the decoded means.
    means = volume.channel(0).mean(axis=(0, 1))
    np.testing.assert_allclose(np.diff(means), 4.0, atol=1.5)


@pytest.mark.integration
@requires_dcmcjpeg
def test_dcmtk_jpeg_lossless_8bit_is_exact(tmp_path):
    geometry = factories.axial_geometry(shape=(33, 27, 5))
    stored = _smooth_8bit(geometry)
    plain = factories.write_stored_series(tmp_path / "plain", stored, geometry, modality="MR", bits_stored=8)
    factories.dcmtk_compress(plain, tmp_path / "jpeg", "+e1")
    volume = read_dicom(tmp_path / "jpeg")
    np.testing.assert_array_equal(volume.channel(0), stored)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian),
        (DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian),
        (JPEG2000Lossless, ImplicitVRLittleEndian),
        (RLELossless, JPEGLSLossless),
    ],
    ids=lambda uid: uid.keyword,
)
def test_series_with_files_in_different_syntaxes(tmp_path, phantom_image, first, second):
    """An archive that re-encoded only some files: each file is decoded by its own transfer syntax."""
    uid = generate_uid()
    paths_a = factories.write_series(phantom_image, tmp_path / "a", transfer_syntax=first, series_instance_uid=uid)
    paths_b = factories.write_series(phantom_image, tmp_path / "b", transfer_syntax=second, series_instance_uid=uid)
    for k in range(phantom_image.spatial_shape[2]):  # even slices from the first syntax, odd from the second
        (paths_b if k % 2 == 0 else paths_a)[k].unlink()

    (series,) = scan(tmp_path).series
    assert set(series.transfer_syntaxes) == {first, second}
    volume = read_series(series)
    np.testing.assert_array_equal(volume.channel(0), phantom_image.channel(0))
