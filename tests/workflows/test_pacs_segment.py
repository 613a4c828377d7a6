"""``pacs segment`` against a real Orthanc: a SEG per series, referencing it; a second run pushes nothing."""

from __future__ import annotations

import csv
import io

import pydicom
import pytest

from medseg.cli import main
from medseg.io.dicom_outputs import AlgorithmIdentity
from medseg.pacs import SeriesQuery, connect, load_settings
from medseg.workflows.pacs_segment import SegmentOptions, result_references, segment_series
from tests.pacs.conftest import ct_study, run_cli

pytestmark = pytest.mark.integration


def _segs(orthanc) -> dict[str, pydicom.Dataset]:
    """Every SEG instance in Orthanc, by the series it references."""
    found = {}
    for series in orthanc.series_of("SEG"):
        for instance in series["Instances"]:
            ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
            for ref in ds.ReferencedSeriesSequence:
                found[str(ref.SeriesInstanceUID)] = ds
    return found


def test_every_series_gets_a_seg_once(orthanc, trained_model, tmp_path, capsys):
    study = ct_study(tmp_path / "study", series=3)
    orthanc.upload([p for series in study for p in series])
    sources = {
        str(pydicom.dcmread(s[0]).SeriesInstanceUID): {str(pydicom.dcmread(p).SOPInstanceUID) for p in s} for s in study
    }
    config = orthanc.settings_file(tmp_path / "cfg")
    work = tmp_path / "work"
    args = [
        "pacs",
        "segment",
        "--pacs",
        str(config),
        "--model",
        str(trained_model),
        "--work",
        str(work),
        "--modality",
        "CT",
        "--device",
        "cpu",
    ]

    first = run_cli(*args)  # as a user runs it; the later runs in-process, which is quicker
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 pushed" in first.stdout
    segs = _segs(orthanc)
    assert set(segs) == set(sources)
    for series_uid, seg in segs.items():
        (ref,) = seg.ReferencedSeriesSequence
        assert {str(i.ReferencedSOPInstanceUID) for i in ref.ReferencedInstanceSequence} <= sources[series_uid]
        assert seg.StudyInstanceUID == pydicom.dcmread(study[0][0]).StudyInstanceUID
        algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
        assert algorithm.AlgorithmName == "tiny" and "+sha256:" in algorithm.AlgorithmVersion
    assert not list((work / "images").glob("*/*.dcm")), "pulled images are removed once pushed"
    with open(work / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["status"] for r in rows) == ["pushed"] * 3 and {r["series_uid"] for r in rows} == set(sources)

    assert main(args) == 0
    again = capsys.readouterr().out
    assert "3 skipped" in again and "pushed" not in again
    assert len(orthanc.series_of("SEG")) == 3

    assert main([*args, "--series-uid", next(iter(sources)), "--force"]) == 0
    assert "1 pushed" in capsys.readouterr().out
    assert len(orthanc.series_of("SEG")) == 4


def test_over_dimse_with_rtstruct_and_a_seg_of_another_model(orthanc, trained_model, tmp_path):
    study = ct_study(tmp_path / "study", series=1)
    orthanc.upload(study[0])
    settings = load_settings(orthanc.settings_file(tmp_path / "cfg", protocol="dimse"), environ={})
    with connect(settings) as pacs:
        report = segment_series(
            pacs,
            SeriesQuery(),
            model=trained_model,
            work=tmp_path / "work",
            options=SegmentOptions(formats=("seg", "rtstruct"), device="cpu", keep_images=True),
        )
        assert [r.status for r in report.results] == ["pushed"], report.results
        assert report.results[0].stored == 2
        assert len(list((tmp_path / "work" / "images").glob("*/*.dcm"))) == 14
        (seg_series,) = pacs.find_series(SeriesQuery(modality="SEG"))
        (header,) = pacs.series_headers(seg_series)
        source_uid = report.results[0].series.series_uid
        other = AlgorithmIdentity(name="tiny", version="9.9.9+sha256:00000000")
        assert result_references(header, other) == set()
        again = segment_series(
            pacs,
            SeriesQuery(),
            model=trained_model,
            work=tmp_path / "work",
            options=SegmentOptions(formats=("seg", "rtstruct"), device="cpu"),
        )
        assert [r.status for r in again.results] == ["skipped"]
    assert source_uid in {str(r.SeriesInstanceUID) for r in header.ReferencedSeriesSequence}
    assert len(orthanc.series_of("RTSTRUCT")) == 1 and len(orthanc.series_of("SEG")) == 1


def test_a_series_that_fails_is_reported_and_the_run_goes_on(orthanc, trained_model, tmp_path, capsys):
    study = ct_study(tmp_path / "study", series=2)
    orthanc.upload(study[0])
    orthanc.upload(study[1][:5] + study[1][6:])  # a missing slice: the reader refuses the series
    config = orthanc.settings_file(tmp_path / "cfg")
    code = main(
        [
            "pacs",
            "segment",
            "--pacs",
            str(config),
            "--model",
            str(trained_model),
            "--work",
            str(tmp_path / "work"),
            "--device",
            "cpu",
        ]
    )
    out = capsys.readouterr().out
    assert code == 4, out
    assert "1 pushed" in out and "1 failed" in out and "missing" in out
    assert len(orthanc.series_of("SEG")) == 1
    # Under -q the lines are silent, the failure is not: one error line (the pushed series is skipped).
    code = main(
        [
            "-q",
            "pacs",
            "segment",
            "--pacs",
            str(config),
            "--model",
            str(trained_model),
            "--work",
            str(tmp_path / "work"),
            "--device",
            "cpu",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 4 and out == ""
    assert err.count("medseg pacs: error: ") == 1 and "missing" in err


def test_an_nnunet_model_pushes_its_seg(orthanc, nnunet_model, tmp_path, capsys):
    """``pacs segment --model`` an nnU-Net trained-model folder: the SEG lands in Orthanc, named after the model."""
    from medseg.io import read_image
    from tests.factories import write_series

    case = nnunet_model.cases[0]
    files = write_series(read_image(nnunet_model.inputs / f"{case}_0000.nii.gz"), tmp_path / "series")
    orthanc.upload(files)
    config = orthanc.settings_file(tmp_path / "cfg")
    args = [
        "pacs",
        "segment",
        "--pacs",
        str(config),
        "--model",
        str(nnunet_model.model_folder),
        "--work",
        str(tmp_path / "work"),
        "--device",
        "cpu",
    ]
    assert main(args) == 0
    assert "1 pushed" in capsys.readouterr().out
    (seg,) = _segs(orthanc).values()
    (ref,) = seg.ReferencedSeriesSequence
    assert ref.SeriesInstanceUID == pydicom.dcmread(files[0]).SeriesInstanceUID
    assert len(ref.ReferencedInstanceSequence) <= len(files)
    names = {s.SegmentLabel for s in seg.SegmentSequence}
    assert names and names <= {"liver", "spleen", "kidney"}
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (
        algorithm.AlgorithmName == nnunet_model.model_folder.parent.name
        and "nnunet+sha256:" in algorithm.AlgorithmVersion
    )
