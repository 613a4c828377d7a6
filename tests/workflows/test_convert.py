"""``workflows.convert``: DICOM series to image files and back, as a notebook converts a study."""

from __future__ import annotations

import numpy as np

from medseg.io import read_image
from medseg.workflows.convert import ConvertOptions, convert
from tests import factories


def test_a_study_becomes_image_files_on_the_series_grids_and_a_rerun_keeps_them(tmp_path):
    image, _ = factories.phantom_pair()
    factories.write_series(image, tmp_path / "in" / "ct", series_number=3, series_description="abdomen")
    tilted = factories.phantom_pair(factories.oblique_geometry())[0]
    factories.write_series(tilted, tmp_path / "in" / "oblique", series_number=4)
    seen = []
    report = convert(
        tmp_path / "in", tmp_path / "out", options=ConvertOptions(format="nrrd"), progress=lambda *a: seen.append(a)
    )
    assert [r.status for r in report.results] == ["converted", "converted"] and not report.failed
    by_shape = {image.geometry.shape: image, tilted.geometry.shape: tilted}
    assert len(by_shape) == 2
    for result in report.results:
        written = read_image(result.output)
        source = by_shape[written.geometry.shape]
        assert result.output.endswith(".nrrd")
        np.testing.assert_allclose(written.geometry.affine, source.geometry.affine, atol=1e-4)
        np.testing.assert_array_equal(written.array, source.array)
    assert seen
    again = convert(tmp_path / "in", tmp_path / "out", options=ConvertOptions(format="nrrd"))
    assert [r.status for r in again.results] == ["exists", "exists"]
