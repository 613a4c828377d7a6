"""RT Structure Sets written by another implementation (rt-utils, a test-only reference) read as it reads them.

rt-utils draws each contour through the centres of a mask's boundary pixels (OpenCV's
``findContours``) and fills with OpenCV's ``fillPoly``, boundary included. medseg's reader counts
centres on a contour as inside, so it gets rt-utils' masks back exactly: several ROIs, holes,
islands, on axial, feet-first and oblique series.
"""

from __future__ import annotations

import numpy as np
import pytest

from medseg.geometry import Geometry
from medseg.io.dicom import read_dicom
from medseg.io.labels import LabelTable, read_label
from medseg.io.rtstruct import fill_polygons
from tests import factories

# rt-utils still sets the encoding attributes that pydicom 3 deprecates
pytestmark = pytest.mark.filterwarnings("ignore:'FileDataset.is_:DeprecationWarning")

rt_utils = pytest.importorskip("rt_utils", reason="rt-utils is the test-only reference (scripts/setup.sh installs it)")

# rt-utils takes PixelSpacing[0] as the column step, so it places contours right only on square pixels (see
# the last test), and its reader allocates (Columns, Rows) but fills [row, column], so only square images read whole.
SQUARE = {
    "axial": factories.axial_geometry((42, 42, 9), spacing=(1.1, 1.1, 3.0)),
    "feet-first": factories.axial_geometry((42, 42, 9), spacing=(0.9, 0.9, 2.5), feet_first=True),
    "oblique": factories.oblique_geometry((40, 40, 8), spacing=(1.2, 1.2, 2.5)),
}


def rois(shape: tuple[int, int, int]) -> dict[str, np.ndarray]:
    """Three ROIs in medseg's (i, j, k) order: a ring (a hole), two islands per slice, a blob meeting the ring."""
    i, j, k = np.indices(shape)
    r2 = (i - 20) ** 2 + (j - 17) ** 2
    ring = (r2 < 110) & (r2 >= 16) & (k >= 1) & (k < shape[2] - 1)
    islands = (((i - 5) ** 2 + (j - 5) ** 2 < 10) | ((np.abs(i - 36) < 3) & (np.abs(j - 30) < 5))) & (k % 2 == 0)
    blob = (np.abs(i - 30) + np.abs(j - 12) < 6) & (k >= 2)
    return {"Liver": ring, "lesions": islands, "SPLEEN": blob}


def rt_utils_order(geometry: Geometry) -> np.ndarray:
    """medseg's k for each of rt-utils' slices (rt-utils sorts by position along row x column)."""
    normal = np.cross(geometry.direction[:, 0], geometry.direction[:, 1])
    corners = geometry.index_to_physical(np.array([[0, 0, k] for k in range(geometry.shape[2])], dtype=float))
    return np.argsort(corners @ normal)


def to_rt_utils(mask: np.ndarray, order: np.ndarray) -> np.ndarray:
    """(i, j, k) -> rt-utils' (row, column, slice): rows are j, columns i."""
    return mask.transpose(1, 0, 2)[:, :, order]


@pytest.fixture(params=list(SQUARE))
def written_by_rt_utils(request, tmp_path):
    geometry = SQUARE[request.param]
    factories.write_series(factories.ramp_volume(geometry), tmp_path / "ct")
    image = read_dicom(tmp_path / "ct")
    order = rt_utils_order(image.geometry)
    masks = rois(image.spatial_shape)
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(tmp_path / "ct"))
    for name, mask in masks.items():
        builder.add_roi(mask=to_rt_utils(mask, order), name=name)
    builder.save(str(tmp_path / "rtstruct.dcm"))
    return image, masks, order, tmp_path


def test_rt_utils_files_read_back_voxel_for_voxel(written_by_rt_utils):
    image, masks, order, folder = written_by_rt_utils
    table = LabelTable.build({1: "liver", 2: "lesion", 3: "spleen"}, {"lesion": ["lesion*"]}, priority=["spleen"])
    labels = read_label(folder / "rtstruct.dcm", reference=image.geometry, table=table).volume.channel(0)
    reference = rt_utils.RTStructBuilder.create_from(
        dicom_series_path=str(folder / "ct"), rt_struct_path=str(folder / "rtstruct.dcm")
    )

    theirs = {name: reference.get_roi_mask_by_name(name) for name in masks}
    spleen = theirs["SPLEEN"]
    for number, name in ((1, "Liver"), (2, "lesions"), (3, "SPLEEN")):
        # rt-utils reads each ROI on its own; medseg's label map gives the overlap to the declared priority
        expected = theirs[name] if name == "SPLEEN" else theirs[name] & ~spleen
        np.testing.assert_array_equal(to_rt_utils(labels == number, order), expected, err_msg=name)
        np.testing.assert_array_equal(theirs[name], to_rt_utils(masks[name], order), err_msg=name)
    assert (labels == 3).sum() == masks["SPLEEN"].sum() and (masks["Liver"] & masks["SPLEEN"]).any()


def test_a_centre_on_a_contour_is_inside():
    # A square through the centres of pixels 1..3 (as findContours traces a 3 x 3 block) fills all nine.
    square = np.array([[1.0, 1.0], [3.0, 1.0], [3.0, 3.0], [1.0, 3.0]])
    expected = np.zeros((5, 5), dtype=bool)
    expected[1:4, 1:4] = True
    np.testing.assert_array_equal(fill_polygons([square], (5, 5)), expected)
    # a hole traced through the centres of the ring's inner pixels keeps them
    hole = np.array([[1.0, 1.0], [1.0, 3.0], [3.0, 3.0], [3.0, 1.0]])
    outer = np.array([[0.0, 0.0], [4.0, 0.0], [4.0, 4.0], [0.0, 4.0]])
    filled = fill_polygons([outer, hole], (5, 5))
    assert filled[1, 1] and filled[2, 1] and filled[0, 0] and not filled[2, 2]
    # a diagonal edge through centres, off the grid's axes, and one that passes between them
    assert fill_polygons([np.array([[0.0, 0.0], [4.0, 4.0], [0.0, 4.0]])], (5, 5))[3, 3]
    assert not fill_polygons([np.array([[0.0, 0.5], [3.5, 4.0], [0.0, 4.0]])], (5, 5))[3, 3]


def test_rt_utils_misplaces_contours_on_non_square_pixels(tmp_path):
    """Pinned, so a change in rt-utils shows: it steps columns by PixelSpacing[0] (the row spacing)."""
    geometry = factories.axial_geometry((40, 40, 6), spacing=(1.5, 1.2, 3.0))
    factories.write_series(factories.ramp_volume(geometry), tmp_path / "ct")
    image = read_dicom(tmp_path / "ct")
    i, j, k = np.indices(image.spatial_shape)
    mask = ((i - 20) ** 2 + (j - 15) ** 2 < 100) & (k >= 1) & (k < 5)
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(tmp_path / "ct"))
    builder.add_roi(mask=to_rt_utils(mask, rt_utils_order(image.geometry)), name="disc")
    builder.save(str(tmp_path / "rtstruct.dcm"))

    labels = read_label(tmp_path / "rtstruct.dcm", reference=image.geometry, table=LabelTable.build({1: "disc"}, {}))
    read = labels.volume.channel(0) == 1
    assert not np.array_equal(read, mask)
    # the disc lands squeezed along i (1.2 / 1.5 of its width) and shifted towards the origin
    width = lambda m: int(np.ptp(np.nonzero(m[:, :, 2])[0])) + 1  # noqa: E731
    assert width(read) < width(mask)


def test_rt_utils_contours_of_real_organs_on_a_real_series(shared_data, tmp_path):
    """The real Siemens series (512 x 512, square pixels) with TotalSegmentator's organs contoured by rt-utils.

    Its instances are anonymised down to empty SOP Instance UIDs, so every contour references the same
    (empty) image. rt-utils' reader matches contours to slices by that UID and paints every slice's
    contours on every slice; medseg matches them by position and gets the organs back voxel for voxel.
    """
    from medseg.io.nifti import read_nifti

    folder = shared_data / "ct_abdomen_20slices" / "dicom"
    image = read_dicom(folder)
    reference = read_nifti(shared_data / "ct_abdomen_20slices" / "reference_seg.nii.gz", kind="label")
    organs = factories.aligned_to(reference, image.geometry)  # the reference stores y flipped
    names = {1: "Spleen", 5: "LIVER", 32: "Vertebra_T12", 33: "Vertebra_T11"}
    order = rt_utils_order(image.geometry)
    builder = rt_utils.RTStructBuilder.create_new(dicom_series_path=str(folder))
    for number, name in names.items():
        builder.add_roi(mask=to_rt_utils(organs == number, order), name=name)
    builder.save(str(tmp_path / "rtstruct.dcm"))

    table = LabelTable.build({1: "spleen", 2: "vertebra", 3: "liver"}, {"vertebra": ["vertebra_*"]})
    read = read_label(tmp_path / "rtstruct.dcm", reference=image.geometry, table=table).volume.channel(0)

    np.testing.assert_array_equal(read == 1, organs == 1)
    np.testing.assert_array_equal(read == 2, np.isin(organs, [32, 33]))
    np.testing.assert_array_equal(read == 3, organs == 5)
    assert min((read == n).sum() for n in (1, 2, 3)) > 10_000
    theirs = rt_utils.RTStructBuilder.create_from(
        dicom_series_path=str(folder), rt_struct_path=str(tmp_path / "rtstruct.dcm")
    ).get_roi_mask_by_name("Spleen")
    assert all(np.array_equal(theirs[:, :, 0], theirs[:, :, k]) for k in range(1, 20))  # the same on every slice
