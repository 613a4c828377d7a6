"""`medseg convert`: DICOM trees to NIfTI per series, and image formats into each other."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.geometry import Geometry
from medseg.io import read_image, read_nifti, write_image
from medseg.io.dicom.writer import WRITABLE_TRANSFER_SYNTAXES
from tests import factories

# Every syntax our writer makes (tests/io/dicom covers dcmtk's JPEG ones too).
SYNTAXES = WRITABLE_TRANSFER_SYNTAXES


def _study_folder(tmp_path: Path, syntax: str, geometry: Geometry | None = None):
    """A CT series (oblique) beside a localizer, a text file and a random binary, names shuffled."""
    image, _ = factories.phantom_pair(geometry)
    written = factories.write_series(
        image, tmp_path / "w_ct", transfer_syntax=syntax, series_number=3, series_description="CT abdomen"
    )
    folder = tmp_path / "study"
    factories.move_shuffled(written, folder / "a", seed=1)
    localizer_geometry = Geometry.from_spacing((40, 30, 2), (4.0, 4.0, 50.0), (-80, 0, -60), factories.rotation("x", 90))
    scout, _ = factories.phantom_pair(localizer_geometry)
    for path in factories.write_series(scout, folder / "b", series_number=1, series_description="Topogram"):
        factories.edit_dicom(path, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"])
    (folder / "a" / "notes.txt").write_text("not a scan\n")
    (folder / "b" / "blob.bin").write_bytes(np.random.default_rng(0).bytes(3000))
    return image, folder


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda uid: uid.name.split(" ")[0] + uid.name[-8:])
def test_convert_tree_gives_true_geometry_and_exact_hu(tmp_path, capsys, syntax):
    image, folder = _study_folder(tmp_path, syntax)
    out = tmp_path / "out"
    assert main(["convert", str(folder), str(out)]) == 0
    outputs = sorted(out.glob("*.nii.gz"))
    assert [p.name for p in outputs] == ["0003_CT_abdomen.nii.gz"]
    volume = read_nifti(outputs[0])
    assert volume.geometry.max_distance_to(image.geometry) < 1e-3
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.array, image.array)
    text = capsys.readouterr().out
    assert "localizer" in text and "Topogram" in text
    sidecar = json.loads((out / "0003_CT_abdomen.json").read_text())
    assert sidecar["modality"] == "CT" and sidecar["resampled"] is False
    assert len(sidecar["sop_instance_uids"]) == image.spatial_shape[2]


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("dcmcjpeg") is None, reason="dcmtk's dcmcjpeg is not installed")
def test_convert_jpeg_lossless_tree(tmp_path):
    image, _ = factories.phantom_pair()
    written = factories.write_series(image, tmp_path / "raw", series_number=2, series_description="lossless")
    factories.dcmtk_compress(written, tmp_path / "study", "+e1")
    assert main(["-q", "convert", str(tmp_path / "study"), str(tmp_path / "out")]) == 0
    volume = read_nifti(tmp_path / "out" / "0002_lossless.nii.gz")
    np.testing.assert_array_equal(volume.array, image.array)
    assert volume.geometry.max_distance_to(image.geometry) < 1e-3


def test_feet_first_series_keeps_physical_positions(tmp_path):
    geometry = factories.axial_geometry(shape=(30, 20, 9), feet_first=True)
    image, _ = factories.phantom_pair(geometry)
    factories.write_series(image, tmp_path / "ff")
    assert main(["-q", "convert", str(tmp_path / "ff"), str(tmp_path / "out")]) == 0
    (output,) = (tmp_path / "out").glob("*.nii.gz")
    volume = read_nifti(output)
    # k runs along the slice normal, so the stack may come back in the other order: compare in patient space.
    np.testing.assert_array_equal(factories.aligned_to(volume, image.geometry), image.array[0])
    nifti = nib.load(output)
    # nibabel's RAS position of voxel 0 is our LPS origin with x and y negated.
    ras = nifti.affine @ [0, 0, 0, 1]
    np.testing.assert_allclose(ras[:3], np.array(volume.geometry.origin) * [-1, -1, 1], atol=1e-4)


def test_failed_series_is_listed_and_others_convert(tmp_path, capsys):
    good, _ = factories.phantom_pair()
    factories.write_series(good, tmp_path / "in" / "good", series_number=1, series_description="good")
    bad = factories.write_series(good, tmp_path / "in" / "bad", series_number=2, series_description="gappy")
    bad[4].unlink()  # a missing slice: refused by default
    code = main(["convert", str(tmp_path / "in"), str(tmp_path / "out")])
    assert code == 4
    out = capsys.readouterr().out
    assert "failed" in out and "gappy" in out and "missing" in out
    assert (tmp_path / "out" / "0001_good.nii.gz").exists()
    assert not list((tmp_path / "out").glob("0002*"))
    # Asked to, the gap is interpolated and the series converted; the good one is kept, not rewritten.
    before = (tmp_path / "out" / "0001_good.nii.gz").stat().st_mtime_ns
    assert main(["-q", "convert", "--irregular", "resample", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "0001_good.nii.gz").stat().st_mtime_ns == before
    resampled = read_nifti(tmp_path / "out" / "0002_gappy.nii.gz")
    assert resampled.spatial_shape == good.spatial_shape
    assert json.loads((tmp_path / "out" / "0002_gappy.json").read_text())["resampled"] is True


def test_names_cannot_escape_the_output_folder(tmp_path):
    image, _ = factories.phantom_pair()
    factories.write_series(image, tmp_path / "in", series_number=5, series_description="../../../etc/evil")
    assert main(["-q", "convert", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    written = [p for p in tmp_path.rglob("*.nii.gz")]
    assert len(written) == 1 and written[0].parent == tmp_path / "out"


def test_same_description_twice_gets_distinct_names(tmp_path):
    image, _ = factories.phantom_pair()
    factories.write_series(image, tmp_path / "in" / "x", series_number=4, series_description="T1")
    factories.write_series(image, tmp_path / "in" / "y", series_number=4, series_description="T1")
    assert main(["-q", "convert", str(tmp_path / "in"), str(tmp_path / "out")]) == 0
    names = sorted(p.name for p in (tmp_path / "out").glob("*.nii.gz"))
    assert len(names) == 2 and all(n.startswith("0004_T1_") for n in names)


@pytest.mark.parametrize("target", ["scan.nrrd", "scan.mha", "scan.nii"])
def test_image_formats_convert_into_each_other(tmp_path, target):
    image, _ = factories.phantom_pair(factories.oblique_geometry())
    write_image(image, tmp_path / "scan.nii.gz")
    assert main(["-q", "convert", str(tmp_path / "scan.nii.gz"), str(tmp_path / target)]) == 0
    back = read_image(tmp_path / target)
    np.testing.assert_array_equal(back.array, image.array)
    assert back.geometry.max_distance_to(image.geometry) < 1e-3


def test_usage_errors_exit_2_with_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "no such file" in err[0]
    with pytest.raises(SystemExit) as exc:
        main(["convert", "--format", "dicom", str(tmp_path), str(tmp_path / "o")])
    assert exc.value.code == 2


def test_nothing_to_convert_exits_2(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "readme.txt").write_text("hello")
    assert main(["convert", str(tmp_path / "in"), str(tmp_path / "out")]) == 2
    assert "nothing to convert" in capsys.readouterr().out


def test_console_script_runs(tmp_path):
    """The installed entry point, as a user runs it."""
    image, _ = factories.phantom_pair()
    factories.write_series(image, tmp_path / "in", series_number=7, series_description="cli")
    medseg = Path(sys.executable).parent / "medseg"
    result = subprocess.run([str(medseg), "convert", str(tmp_path / "in"), str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "0007_cli.nii.gz").exists()
    assert "1 converted" in result.stdout


def test_real_ct_overlays_reference_segmentation(shared_data, tmp_path):
    """The real CT converted to NIfTI lands on the voxels of the reference segmentation."""
    assert main(["-q", "convert", str(shared_data / "ct_abdomen_20slices" / "dicom"), str(tmp_path)]) == 0
    (output,) = tmp_path.glob("*.nii.gz")
    ct = read_nifti(output)
    reference = read_nifti(shared_data / "ct_abdomen_20slices" / "reference_seg.nii.gz", kind="label")
    labels = factories.aligned_to(reference, ct.geometry)  # the reference stores y flipped
    assert labels.shape == ct.spatial_shape
    # Labelled organs sit in soft tissue (HU around 0..100), not in air or bone.
    hu = ct.array[0]
    organ = np.isin(labels, [1, 2, 3, 5])  # spleen, kidneys, liver
    assert organ.sum() > 1000
    assert -50 < float(np.median(hu[organ])) < 150
    assert float(np.median(hu[labels == 0])) < float(np.median(hu[organ]))


def test_rtstruct_and_seg_in_a_tree_become_label_maps_beside_their_series(tmp_path, capsys):
    from medseg.io.dicom import read_dicom
    from medseg.io.dicom_outputs import AlgorithmIdentity
    from medseg.io.rtstruct import write_rtstruct
    from medseg.io.seg import write_seg

    geometry = factories.axial_geometry(shape=(30, 20, 9), feet_first=True)
    image, labels = factories.phantom_pair(geometry)
    factories.write_series(image, tmp_path / "in" / "ct", series_number=4, series_description="CT")
    other, _ = factories.phantom_pair()
    factories.write_series(other, tmp_path / "w_other", series_number=5, series_description="other")
    scan = read_dicom(tmp_path / "in" / "ct")
    on_scan = scan.with_array(factories.aligned_to(labels, scan.geometry), kind="label", segments=labels.segments)
    algorithm = AlgorithmIdentity("manual", "1")
    write_rtstruct(on_scan, tmp_path / "in" / "rs" / "rs.dcm", algorithm=algorithm)
    write_seg(on_scan, tmp_path / "in" / "seg" / "seg.dcm", algorithm=algorithm)
    # A structure set on a series the folder does not hold fails alone.
    other_scan = read_dicom(tmp_path / "w_other")
    write_rtstruct(
        other_scan.with_array(np.ones(other_scan.spatial_shape, np.uint8), kind="label"),
        tmp_path / "in" / "stray" / "rs.dcm",
        algorithm=algorithm,
    )

    code = main(["convert", str(tmp_path / "in"), str(tmp_path / "out")])

    assert code == 4
    assert "which this folder does not hold" in capsys.readouterr().out
    for kind in ("rtstruct", "seg"):
        converted = read_nifti(tmp_path / "out" / f"0004_CT.{kind}.nii.gz")
        series = read_nifti(tmp_path / "out" / "0004_CT.nii.gz")
        assert converted.geometry.is_close(series.geometry, tolerance_mm=1e-3)
        np.testing.assert_array_equal(converted.array[0], on_scan.array[0])
        names = json.loads((tmp_path / "out" / f"0004_CT.{kind}.json").read_text())
        assert names["labels"] == {"1": "liver", "2": "spleen", "3": "kidney"} and names["kind"] == kind.upper()


@pytest.mark.parametrize("kind", ["seg", "rtstruct"])
def test_a_nifti_label_map_on_a_series_round_trips_through_dicom_exactly(tmp_path, capsys, kind):
    geometry = factories.oblique_geometry()
    image, labels = factories.phantom_pair(geometry)
    factories.write_series(image, tmp_path / "in" / "ct", series_number=7, series_description="CT")
    assert main(["-q", "convert", str(tmp_path / "in"), str(tmp_path / "nifti")]) == 0
    series_nifti = read_nifti(tmp_path / "nifti" / "0007_CT.nii.gz")
    drawn = series_nifti.with_array(factories.aligned_to(labels, series_nifti.geometry), kind="label")
    write_image(drawn, tmp_path / "drawn.nii.gz")
    names = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
    (tmp_path / "names.json").write_text(json.dumps({"labels": names}))

    out = tmp_path / f"drawn.{kind}.dcm"
    arguments = ["convert", str(tmp_path / "drawn.nii.gz"), str(out), "--series", str(tmp_path / "in" / "ct")]
    assert main([*arguments, "--to", kind, "--names", str(tmp_path / "names.json")]) == 0
    assert "converted" in capsys.readouterr().out
    assert main([*arguments, "--to", kind, "--names", str(tmp_path / "names.json"), "--overwrite", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["status"] == "converted" and result["output"] == str(out) and result["name"]
    written = pydicom.dcmread(out)
    if kind == "seg":  # drawn by hand: MANUAL, and no algorithm named
        assert {s.SegmentAlgorithmType for s in written.SegmentSequence} == {"MANUAL"}
        assert not any("SegmentationAlgorithmIdentificationSequence" in s for s in written.SegmentSequence)
    else:
        assert {r.ROIGenerationAlgorithm for r in written.StructureSetROISequence} == {"MANUAL"}
    if shutil.which("dciodvfy"):
        result = subprocess.run(["dciodvfy", str(out)], capture_output=True, text=True, timeout=60)
        assert [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("Error")] == []

    # ... and back: the tree now holds the series and its label file.
    shutil.copy(out, tmp_path / "in" / out.name)
    assert main(["-q", "convert", str(tmp_path / "in"), str(tmp_path / "back")]) == 0
    back = read_nifti(tmp_path / "back" / f"0007_CT.{kind}.nii.gz")
    np.testing.assert_array_equal(back.array[0], drawn.array[0])
    assert back.geometry.is_close(drawn.geometry, tolerance_mm=1e-3)
    names = json.loads((tmp_path / "back" / f"0007_CT.{kind}.json").read_text())["labels"]
    assert names == {"1": "liver", "2": "spleen", "3": "kidney"}
    # A label map off the series' grid is refused in one line, and nothing is written.
    moved = drawn.geometry.affine.copy()
    moved[:3, 3] += (0.0, 0.0, 5.0)
    write_image(drawn.replace(geometry=Geometry(drawn.geometry.shape, moved)), tmp_path / "shifted.nii.gz")
    arguments = ["convert", str(tmp_path / "shifted.nii.gz"), str(tmp_path / "x.dcm")]
    assert main([*arguments, "--series", str(tmp_path / "in" / "ct")]) == 2
    assert "shifted.nii.gz and the series' grid are 5 mm apart" in capsys.readouterr().err
    assert not (tmp_path / "x.dcm").exists()
