"""`medseg info`: what a folder holds, as text and JSON."""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from medseg.cli import main
from medseg.geometry import Geometry
from medseg.io import write_image
from tests import factories

REQUIRED = {"series_uid", "modality", "size", "spacing", "origin", "direction", "is_localizer", "problems"}


def _folder_with_localizer(tmp_path):
    image, _ = factories.phantom_pair()
    factories.write_series(image, tmp_path / "ct", series_number=2, series_description="CT")
    scout_geometry = Geometry.from_spacing((40, 30, 1), (4.0, 4.0, 1.0), (-80, 0, -60), factories.rotation("x", 90))
    scout, _ = factories.phantom_pair(scout_geometry)
    for path in factories.write_series(scout, tmp_path / "scout", series_number=1, series_description="Scout"):
        factories.edit_dicom(path, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    (tmp_path / "junk.txt").write_text("x")
    return image


def test_json_reports_series_and_flags_localizer(tmp_path, capsys):
    image = _folder_with_localizer(tmp_path)
    assert main(["-q", "info", "--json", str(tmp_path)]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) == 2 and all(REQUIRED <= set(e) for e in entries)
    scout, ct = entries  # sorted by series number
    assert scout["is_localizer"] is True and ct["is_localizer"] is False
    assert ct["modality"] == "CT" and ct["size"] == list(image.spatial_shape)
    np.testing.assert_allclose(ct["spacing"], image.geometry.spacing, atol=1e-5)
    np.testing.assert_allclose(ct["origin"], image.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(np.reshape(ct["direction"], (3, 3)), image.geometry.direction, atol=1e-5)
    assert ct["problems"] == [] and ct["orientation"] == "LPS"
    # The same numbers, in the same order, as SimpleITK gives for the series.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "ct")))
    itk = reader.Execute()
    np.testing.assert_allclose(ct["direction"], itk.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(ct["origin"], itk.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ct["spacing"], itk.GetSpacing(), atol=1e-5)


def test_text_lists_problems_and_skipped_files(tmp_path, capsys):
    image, _ = factories.phantom_pair()
    paths = factories.write_series(image, tmp_path / "ct", series_number=9, series_description="gappy")
    paths[3].unlink()
    (tmp_path / "junk.txt").write_text("x")
    assert main(["info", "--all", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "#9 gappy" in out and "1 slice(s) missing" in out
    assert "junk.txt: not a DICOM file" in out


def test_image_file(tmp_path, capsys):
    image = factories.ramp_volume()
    write_image(image, tmp_path / "r.nrrd")
    assert main(["info", "--json", str(tmp_path / "r.nrrd")]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["size"] == list(image.spatial_shape) and entry["dtype"] == "int32"


def test_no_series_is_an_error(tmp_path, capsys):
    (tmp_path / "a.txt").write_text("x")
    assert main(["-q", "info", str(tmp_path)]) == 1
    assert "no image series" in capsys.readouterr().err


def test_global_options_work_after_the_command_as_before(tmp_path, capsys):
    from medseg.cli import build_parser

    parser = build_parser()
    after = parser.parse_args(["info", str(tmp_path), "-q", "--debug", "-vv"])
    assert (after.quiet, after.debug, after.verbose) == (True, True, 2)
    before = parser.parse_args(["-q", "--debug", "info", str(tmp_path)])  # not undone by the command's defaults
    assert (before.quiet, before.debug, before.verbose) == (True, True, 0)
    nested = parser.parse_args(["pacs", "echo", "--pacs", "x.yaml", "-q"])
    assert nested.quiet is True
    # A user error after the command with --debug raises instead of printing one line.
    missing = tmp_path / "missing"
    assert main(["info", str(missing)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    try:
        main(["info", str(missing), "--debug"])
    except FileNotFoundError:
        pass
    else:
        raise AssertionError("--debug after the command did not show the traceback")


def test_a_closed_pipe_ends_quietly(tmp_path):
    """`medseg info DIR --json | head`: the reader goes away; medseg exits 0 without a word."""
    import subprocess
    import sys

    _folder_with_localizer(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "medseg", "info", str(tmp_path), "--json", "--all"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before medseg writes anything: its first write meets a pipe without a reader
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0
    assert "Broken pipe" not in stderr and "Traceback" not in stderr
