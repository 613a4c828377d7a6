"""Files nobody here wrote: a real Siemens CT series and pydicom's test files."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from medseg.io.dicom import read_dicom, read_series, scan


@pytest.fixture(scope="module")
def real_ct_folder(shared_data):
    folder = shared_data / "ct_abdomen_20slices" / "dicom"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    return folder


@pytest.fixture(scope="module")
def real_ct(real_ct_folder):
    found = scan(real_ct_folder)
    assert not found.skipped
    (series,) = found.series
    return series, read_series(series)


@pytest.fixture(scope="module")
def sitk_ct(real_ct_folder):
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(real_ct_folder)))
    return reader.Execute()


@pytest.mark.integration
def test_real_ct_header_facts(real_ct, real_ct_folder):
    series, _ = real_ct
    assert all("." not in path.rsplit("/", 1)[-1][-4:] for path in series.files)  # no .dcm extension
    assert series.header.transfer_syntax_uid == pydicom.uid.JPEG2000Lossless
    assert series.series_uid is None  # anonymised
    assert [p.code for p in series.problems] == ["missing_series_uid"]
    assert series.header.modality == "CT" and not series.is_localizer
    assert len(series.frames) == 20


@pytest.mark.integration
def test_real_ct_geometry_equals_simpleitk(real_ct, sitk_ct):
    _, volume = real_ct
    geometry = volume.geometry
    assert sitk_ct.GetSize() == geometry.shape == (512, 512, 20)
    np.testing.assert_allclose(sitk_ct.GetOrigin(), geometry.origin, atol=1e-4)
    np.testing.assert_allclose(sitk_ct.GetSpacing(), geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(np.reshape(sitk_ct.GetDirection(), (3, 3)), geometry.direction, atol=1e-6)
    np.testing.assert_allclose(geometry.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-6)


@pytest.mark.integration
def test_real_ct_voxels_equal_simpleitk(real_ct, sitk_ct):
    _, volume = real_ct
    expected = sitk.GetArrayFromImage(sitk_ct).transpose(2, 1, 0)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.channel(0), expected)
    assert volume.channel(0).min() == -1024  # air outside the field of view, in HU
    assert 1000 < volume.channel(0).max() < 3100  # bone, no wrap-around
    body = volume.channel(0)[200:300, 200:300, :]  # centre of the abdomen: soft tissue
    assert -200 < float(np.median(body)) < 200
    assert volume.source.units == "HU"


@pytest.mark.integration
def test_real_ct_slices_follow_positions_not_instance_numbers(real_ct):
    series, volume = real_ct
    z = [f.position[2] for f in series.frames]
    assert z == sorted(z)
    numbers = [f.instance_number for f in series.frames]
    assert numbers == sorted(numbers, reverse=True)  # this scanner numbers from head to feet
    assert len(set(volume.source.sop_instance_uids)) == 20 and None not in volume.source.sop_instance_uids


# -- pydicom's test files ---------------------------------------------------------------------


@pytest.mark.integration
def test_real_ct_takes_seg_and_rtstruct_of_its_reference_organs(real_ct, shared_data, tmp_path):
    """Its export blanked SOP Class/Instance UIDs (the file meta keeps them): SEG and RTSTRUCT still reference
    each slice, and read back onto the series voxel for voxel."""
    from medseg.io.dicom_outputs import AlgorithmIdentity
    from medseg.io.nifti import read_nifti
    from medseg.io.rtstruct import read_rtstruct, write_rtstruct
    from medseg.io.seg import read_seg, write_seg
    from medseg.volume import Segment
    from tests import factories

    _, image = real_ct
    reference = read_nifti(shared_data / "ct_abdomen_20slices" / "reference_seg.nii.gz", kind="label")
    organs = factories.aligned_to(reference, image.geometry)  # the reference stores y flipped
    array = np.select([organs == 1, organs == 5, organs == 52], [1, 2, 3], 0).astype(np.uint8)
    labels = image.with_array(
        array, kind="label", segments=(Segment(1, "spleen"), Segment(2, "liver"), Segment(3, "aorta"))
    )
    algorithm = AlgorithmIdentity("reference", "1")

    seg = write_seg(labels, tmp_path / "organs.seg.dcm", algorithm=algorithm)
    rtstruct = write_rtstruct(labels, tmp_path / "organs.rtstruct.dcm", algorithm=algorithm)

    np.testing.assert_array_equal(read_seg(seg, reference=image.geometry).channel(0), array)
    np.testing.assert_array_equal(read_rtstruct(rtstruct, reference=image.geometry).channel(0), array)
    frames = pydicom.dcmread(seg).PerFrameFunctionalGroupsSequence
    referenced = {f.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID for f in frames}
    assert referenced <= set(image.source.sop_instance_uids) and len(referenced) == 20


def _testdata(name: str) -> str:
    from pydicom.data import get_testdata_file

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed (pip install pydicom-data)")
    return path


@pytest.mark.parametrize(
    ("original", "variant"),
    [
        ("MR_small.dcm", "MR_small_implicit.dcm"),
        ("MR_small.dcm", "MR_small_bigendian.dcm"),
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
        ("MR2_UNCR.dcm", "MR2_J2KR.dcm"),
    ],
)
def test_pydicom_compressed_variants_decode_like_their_originals(original, variant):
    reference = read_dicom(_testdata(original))
    volume = read_dicom(_testdata(variant))
    np.testing.assert_array_equal(volume.channel(0), reference.channel(0))
    assert volume.dtype == reference.dtype
    assert volume.geometry.max_distance_to(reference.geometry) < 1e-6
    # And both agree with pydicom's own decoding of the uncompressed file, with rescale applied.
    ds = pydicom.dcmread(_testdata(original))
    expected = ds.pixel_array * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    np.testing.assert_allclose(volume.channel(0)[:, :, 0], expected.T, rtol=1e-6)


def test_pydicom_mr_small_is_signed(tmp_path):
    volume = read_dicom(_testdata("MR_small.dcm"))
    ds = pydicom.dcmread(_testdata("MR_small.dcm"))
    assert ds.PixelRepresentation == 1 and volume.dtype == np.int16
    assert volume.spatial_shape == (64, 64, 1)
    np.testing.assert_allclose(volume.geometry.origin, [float(v) for v in ds.ImagePositionPatient])


def test_pydicom_ct_small_geometry_equals_simpleitk():
    path = _testdata("CT_small.dcm")
    volume = read_dicom(path)
    image = sitk.ReadImage(path)
    np.testing.assert_allclose(image.GetOrigin(), volume.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing()[:2], volume.geometry.spacing[:2], atol=1e-6)
    direction = np.reshape(image.GetDirection(), (3, 3))
    np.testing.assert_allclose(direction[:, :2], volume.geometry.direction[:, :2], atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image)[0].T, volume.channel(0)[:, :, 0])
    assert volume.source.units == "HU" and volume.dtype == np.int16


def test_pydicom_enhanced_without_functional_groups_is_skipped_with_reason():
    found = scan(_testdata("emri_small.dcm"))
    assert found.series == ()
    (skipped,) = found.skipped
    assert "multi-frame" in skipped.reason
