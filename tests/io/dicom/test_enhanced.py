"""Enhanced multi-frame images read as the same volume as their single-frame originals."""

from __future__ import annotations

from copy import deepcopy

import numpy as np
import pydicom
import pytest
from highdicom.legacy import LegacyConvertedEnhancedCTImage
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from medseg.io.dicom import read_dicom, read_series, scan
from tests import factories


@pytest.fixture(scope="module")
def single_frame(tmp_path_factory):
    """A phantom written as single-frame CT files, and what the reader makes of them."""
    folder = tmp_path_factory.mktemp("single")
    image, _ = factories.phantom_pair()
    paths = factories.write_series(image, folder)
    volume = read_dicom(folder)
    np.testing.assert_array_equal(volume.channel(0), image.channel(0))
    return paths, volume


def _legacy_converted(paths, transfer_syntax=ExplicitVRLittleEndian) -> pydicom.Dataset:
    return LegacyConvertedEnhancedCTImage(
        [pydicom.dcmread(p) for p in paths],
        series_instance_uid=generate_uid(),
        series_number=20,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        transfer_syntax_uid=transfer_syntax,
    )


def _assert_same_volume(volume, reference, enhanced: pydicom.Dataset) -> None:
    np.testing.assert_array_equal(volume.channel(0), reference.channel(0))
    assert volume.dtype == reference.dtype
    assert volume.geometry.max_distance_to(reference.geometry) < 1e-3
    assert volume.source.sop_instance_uids == (enhanced.SOPInstanceUID,) * reference.spatial_shape[2]
    assert volume.source.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2.2"  # Legacy Converted Enhanced CT
    # Each slice names the frame it came from: check against the frame's own position.
    frames = enhanced.PerFrameFunctionalGroupsSequence
    assert volume.source.frame_numbers is not None
    for k, number in enumerate(volume.source.frame_numbers):
        position = [float(v) for v in frames[number - 1].PlanePositionSequence[0].ImagePositionPatient]
        np.testing.assert_allclose(position, volume.geometry.index_to_physical([0, 0, k]), atol=1e-3)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, RLELossless, JPEG2000Lossless], ids=lambda u: u.keyword)
def test_legacy_converted_enhanced_ct(tmp_path, single_frame, syntax):
    paths, reference = single_frame
    enhanced = _legacy_converted(paths, syntax)
    enhanced.save_as(tmp_path / "enhanced.dcm")

    found = scan(tmp_path)
    (series,) = found.series
    assert not series.problems and not found.skipped
    assert len(series.frames) == len(paths) and len(series.files) == 1
    _assert_same_volume(read_series(series), reference, enhanced)


def test_enhanced_ct_with_frames_stored_in_shuffled_order(tmp_path, single_frame):
    """Frames stored out of order (as some converters do): per-frame positions decide the slice order."""
    paths, reference = single_frame
    enhanced = _legacy_converted(paths)
    count = int(enhanced.NumberOfFrames)
    frames = enhanced.pixel_array.copy()  # (frame, row, column)
    order = np.random.default_rng(4).permutation(count)
    shuffled = deepcopy(enhanced)
    shuffled.PerFrameFunctionalGroupsSequence = Sequence(
        [deepcopy(enhanced.PerFrameFunctionalGroupsSequence[int(i)]) for i in order]
    )
    shuffled.PixelData = np.ascontiguousarray(frames[order]).tobytes()
    shuffled.SOPInstanceUID = shuffled.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    shuffled.save_as(tmp_path / "shuffled.dcm")

    volume = read_dicom(tmp_path)
    _assert_same_volume(volume, reference, shuffled)
    assert list(volume.source.frame_numbers) != sorted(volume.source.frame_numbers, reverse=True)


def test_enhanced_ct_with_per_frame_rescale(tmp_path, single_frame):
    """Rescale given per frame (PixelValueTransformationSequence in each frame) applies per slice."""
    paths, reference = single_frame
    enhanced = _legacy_converted(paths)
    shared = enhanced.SharedFunctionalGroupsSequence[0]
    transform = shared.PixelValueTransformationSequence[0]
    base = float(transform.RescaleIntercept)
    del shared.PixelValueTransformationSequence
    stored = enhanced.pixel_array.astype(np.int32)
    shifts = np.arange(int(enhanced.NumberOfFrames)) * 7  # stored values stay within uint16
    for index, item in enumerate(enhanced.PerFrameFunctionalGroupsSequence):
        per_frame = deepcopy(transform)
        per_frame.RescaleIntercept = f"{base - shifts[index]:g}"
        item.PixelValueTransformationSequence = Sequence([per_frame])
    enhanced.PixelData = (stored + shifts[:, None, None]).astype(np.uint16).tobytes()
    enhanced.save_as(tmp_path / "rescaled.dcm")

    (series,) = scan(tmp_path).series
    assert series.layout.problem_codes == {"varying_rescale"}
    _assert_same_volume(read_series(series), reference, enhanced)
