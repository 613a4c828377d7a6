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
    assert main(["-q", "info", str(tmp_path)]) == 2
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


def test_a_tree_of_image_files_is_listed_with_folders_and_headings(tmp_path, capsys):
    """NIfTI, NRRD and MHA files are rows too, beside the DICOM series, each with its folder."""
    image, labels = factories.phantom_pair(factories.oblique_geometry())
    factories.write_series(image, tmp_path / "dicom" / "ct", series_number=2, series_description="CT")
    write_image(image, tmp_path / "nifti" / "case_0000.nii.gz")
    write_image(labels, tmp_path / "nifti" / "labels" / "case.nrrd")
    ramp = factories.ramp_volume()
    write_image(ramp, tmp_path / "ramp.mha")
    (tmp_path / "ramp.json").write_text(json.dumps({"modality": "MR"}))  # a sidecar as `medseg convert` writes
    (tmp_path / "nifti" / "broken.nii.gz").write_bytes(b"not a nifti")

    assert main(["info", str(tmp_path), "--json", "--all"]) == 0
    entries = {e["description"]: e for e in json.loads(capsys.readouterr().out)}
    assert set(entries) == {"CT", "case_0000.nii.gz", "case.nrrd", "ramp.mha"}
    assert all(REQUIRED <= set(e) for e in entries.values())
    assert entries["CT"]["kind"] == "dicom series" and entries["CT"]["folder"] == "dicom/ct"
    assert entries["CT"]["modality"] == "CT" and entries["CT"]["series_number"] == 2
    nifti, nrrd, mha = entries["case_0000.nii.gz"], entries["case.nrrd"], entries["ramp.mha"]
    assert {e["kind"] for e in (nifti, nrrd, mha)} == {"image file"}
    assert (nifti["folder"], nrrd["folder"], mha["folder"]) == ("nifti", "nifti/labels", ".")
    assert (nifti["format"], nrrd["format"]) == ("nifti", "itk")
    for entry, volume in ((nifti, image), (nrrd, labels), (mha, ramp)):
        assert entry["size"] == list(volume.spatial_shape) and entry["dtype"] == str(volume.dtype)
        np.testing.assert_allclose(entry["spacing"], volume.geometry.spacing, atol=1e-5)
        np.testing.assert_allclose(entry["origin"], volume.geometry.origin, atol=1e-4)
        np.testing.assert_allclose(np.reshape(entry["direction"], (3, 3)), volume.geometry.direction, atol=1e-5)
        assert entry["orientation"] == volume.geometry.orientation_code
    assert (mha["modality"], nifti["modality"]) == ("MR", None)

    assert main(["info", str(tmp_path), "--all"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["folder", "series", "or", "file", "modality", "slices", "size", "spacing", "mm",
                                "orientation"]
    row = next(line for line in lines if "case.nrrd" in line).split()
    assert row[1] == "nifti/labels" and row[3:5] == ["-", str(labels.spatial_shape[2])]
    assert next(line for line in lines if "#2 CT" in line).split()[1] == "dicom/ct"
    assert "MR" in next(line for line in lines if "ramp.mha" in line)
    # The unreadable file is skipped, with why; the image files are not counted as skipped.
    assert "broken.nii.gz: not a readable NIfTI file" in out
    assert "2 file(s) skipped" in out  # broken.nii.gz and ramp.json


def test_image_files_are_described_from_their_headers(tmp_path, capsys):
    """A tree of big scans lists quickly: only headers are read. These headers promise 150 MB the files lack,
    so reading their voxels fails, but info lists them."""
    import nibabel as nib

    from medseg.errors import InputError
    from medseg.io import read_image

    header = nib.Nifti1Header()
    header.set_data_shape((512, 512, 300))
    header.set_data_dtype(np.int16)
    affine = np.diag([-0.8, -0.8, 2.0, 1.0])  # RAS: LPS with spacing 0.8 x 0.8 x 2
    header.set_sform(affine, code=1)
    header.set_qform(affine, code=1)
    (tmp_path / "big.nii").write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    (tmp_path / "big.mha").write_bytes(
        b"ObjectType = Image\nNDims = 3\nDimSize = 512 512 300\nElementSpacing = 0.8 0.8 2\n"
        b"ElementType = MET_SHORT\nElementDataFile = LOCAL\n" + b"\0" * 64
    )
    for name in ("big.nii", "big.mha"):
        try:
            read_image(tmp_path / name)
        except InputError:
            pass
        else:
            raise AssertionError(f"{name} has its voxels: the test would not show that info skips them")
    assert main(["info", str(tmp_path), "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["description"] for e in entries] == ["big.mha", "big.nii"]
    for entry in entries:
        assert entry["size"] == [512, 512, 300] and entry["spacing"] == [0.8, 0.8, 2.0] and entry["dtype"] == "int16"
        assert entry["orientation"] == "LPS" and entry["kind"] == "image file"
