"""Compressed studies from a real Orthanc, without its GDCM plugin (it cannot transcode them) and with it.

Orthanc holds one CT series in each transfer syntax that scanners and archives use. WADO-RS
asks for the stored syntax first (``transfer-syntax=*``): by default Orthanc would have to
transcode JPEG 2000 to Explicit VR Little Endian, cannot, and answers HTTP 500. C-GET offers
a context per syntax medseg decodes; C-MOVE sends to medseg's own Storage SCP, which accepts
them all. Each series comes back decoding to the pixels that were sent, and
``pacs segment`` leaves one SEG per series, then pushes nothing on a second run.
"""

from __future__ import annotations

import io
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
)

from medseg.cli import main
from medseg.io.dicom import read_dicom
from medseg.pacs import SeriesQuery, connect, load_settings
from tests import factories
from tests.pacs.conftest import GDCM_PLUGIN, ct_study, free_port, start_orthanc, stop_orthanc

pytestmark = pytest.mark.integration

LOSSLESS = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    DeflatedExplicitVRLittleEndian,
    RLELossless,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLosslessSV1,
)
SYNTAXES = (*LOSSLESS, JPEG2000, JPEGBaseline8Bit, JPEGExtended12Bit)
MOVE_AET = "MEDSEG-MOVE"


#: dcmtk's dcmcjpeg options per JPEG syntax (baseline and extended are lossy: +rm maps each slice's range)
DCMCJPEG = {JPEGLosslessSV1: ("+e1",), JPEGBaseline8Bit: ("+eb", "+rm"), JPEGExtended12Bit: ("+ee", "+rm")}


def encode(paths, syntax, folder):
    """The series re-encoded in ``syntax`` (pydicom's encoders; dcmtk's dcmcjpeg for the JPEG process syntaxes)."""
    if syntax in DCMCJPEG:
        if not shutil.which("dcmcjpeg"):
            pytest.skip("dcmtk's dcmcjpeg is not installed (apt-get install dcmtk)")
        return factories.dcmtk_compress(paths, folder, *DCMCJPEG[syntax])
    folder.mkdir(parents=True)
    out = []
    for path in paths:
        ds = pydicom.dcmread(path)
        if syntax in (ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian):
            ds.file_meta.TransferSyntaxUID = syntax
        elif syntax == JPEG2000:
            ds.compress(syntax, j2k_psnr=[80])
        else:
            ds.compress(syntax)
        ds.save_as(folder / path.name, enforce_file_format=True)
        out.append(folder / path.name)
    return out


@pytest.fixture(scope="module")
def orthanc_gdcm_server(tmp_path_factory):
    """A second Orthanc, with its GDCM plugin (it can transcode): medseg must work with both."""
    server = start_orthanc(tmp_path_factory.mktemp("orthanc-gdcm"), plugins=(GDCM_PLUGIN,))
    yield server
    stop_orthanc(server)


@pytest.fixture(params=["without GDCM", "with GDCM"])
def orthanc(request):
    """The session's Orthanc (no GDCM plugin) or the one with GDCM, emptied for this test."""
    server = request.getfixturevalue("orthanc_server" if request.param == "without GDCM" else "orthanc_gdcm_server")
    server.clear()
    return server


@pytest.fixture()
def archive(orthanc, tmp_path):
    """Orthanc holding one series per syntax; returns {series UID: (syntax, original folder, encoded folder)}."""
    study = ct_study(tmp_path / "study", series=len(SYNTAXES))
    held = {}
    for index, (syntax, paths) in enumerate(zip(SYNTAXES, study)):
        for path in paths:  # one description per syntax, so the series tell themselves apart
            factories.edit_dicom(path, SeriesDescription=f"{index} {syntax.name}"[:64])
        encoded = encode(paths, syntax, tmp_path / "encoded" / str(index))
        assert pydicom.dcmread(encoded[0]).file_meta.TransferSyntaxUID == syntax
        orthanc.upload(encoded)
        held[str(pydicom.dcmread(paths[0]).SeriesInstanceUID)] = (syntax, paths[0].parent, encoded[0].parent)
    stored = {s["MainDicomTags"]["SeriesInstanceUID"] for s in orthanc.series_of("CT")}
    assert stored == set(held)
    return held


def settings_for(orthanc, folder, protocol):
    """``dicomweb``, ``dimse`` (C-GET) or ``move`` (C-MOVE to our own SCP, declared to Orthanc)."""
    if protocol != "move":
        return orthanc.settings_file(folder, protocol=protocol)
    port = free_port()
    orthanc.add_modality("medseg-move", MOVE_AET, port)
    path = orthanc.settings_file(folder, protocol="dimse")
    path.write_text(path.read_text() + f"move_ae: {MOVE_AET}\nmove_port: {port}\n")
    return path


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse", "move"])
def test_every_syntax_is_retrieved_and_decodes_to_what_was_sent(orthanc, archive, tmp_path, protocol):
    settings = load_settings(settings_for(orthanc, tmp_path / "cfg", protocol), environ={})
    with connect(settings) as pacs:
        found = pacs.find_series(SeriesQuery(modality="CT"))
        assert len(found) == len(SYNTAXES)
        for series in found:
            syntax, original, encoded = archive[series.series_uid]
            paths = pacs.retrieve_series(series, tmp_path / "pulled" / series.series_uid)
            assert len(paths) == 14, syntax.name
            pulled, sent = read_dicom(paths[0].parent), read_dicom(encoded)
            assert pulled.geometry.is_close(sent.geometry, tolerance_mm=1e-6)
            np.testing.assert_array_equal(pulled.array, sent.array, err_msg=syntax.name)  # what was sent, as sent
            if syntax in LOSSLESS:
                np.testing.assert_array_equal(pulled.array, read_dicom(original).array, err_msg=syntax.name)
            if protocol == "dicomweb":  # asked for as stored: nothing transcoded on the way
                assert pydicom.dcmread(paths[0]).file_meta.TransferSyntaxUID == syntax


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["dicomweb", "dimse", "move"])
def test_pacs_segment_leaves_one_seg_per_series(orthanc, archive, trained_model, tmp_path, capsys, protocol, request):
    if "with GDCM" in request.node.callspec.id and protocol != "dicomweb":
        pytest.skip("with GDCM, segmenting over DICOMweb is enough: DIMSE retrieval is tested above")
    args = [
        "pacs",
        "segment",
        "--pacs",
        str(settings_for(orthanc, tmp_path / "cfg", protocol)),
        "--model",
        str(trained_model),
        "--work",
        str(tmp_path / "work"),
        "--modality",
        "CT",
        "--device",
        "cpu",
    ]
    assert main(args) == 0, capsys.readouterr()
    first = capsys.readouterr().out
    assert f"{len(SYNTAXES)} pushed" in first, first
    referenced = set()
    for series in orthanc.series_of("SEG"):
        (instance,) = series["Instances"]
        seg = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
        referenced |= {str(r.SeriesInstanceUID) for r in seg.ReferencedSeriesSequence}
    assert referenced == set(archive)
    assert main(args) == 0
    assert "pushed" not in capsys.readouterr().out.replace("0 pushed", "")
    assert len(orthanc.series_of("SEG")) == len(SYNTAXES)


def test_results_reach_a_pacs_that_takes_only_implicit_vr(trained_model, tmp_path):
    """A PACS that accepts one syntax (Orthanc's AcceptedTransferSyntaxes): medseg's SEG and RTSTRUCT,
    written in Explicit VR Little Endian, go over as Implicit VR Little Endian and are stored."""
    server = start_orthanc(tmp_path / "orthanc", AcceptedTransferSyntaxes=[str(ImplicitVRLittleEndian)])
    try:
        (files,) = ct_study(tmp_path / "study", series=1)
        out = tmp_path / "out"
        assert (
            main(
                [
                    "predict",
                    str(files[0].parent),
                    "--model",
                    str(trained_model),
                    "-o",
                    str(out),
                    "--format",
                    "seg,rtstruct",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        results = sorted(out.glob("*/*.dcm"))
        assert [p.name.split(".", 1)[1] for p in results] == ["rtstruct.dcm", "seg.dcm"]
        assert pydicom.dcmread(results[0]).file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        settings = load_settings(server.settings_file(tmp_path / "cfg", protocol="dimse"), environ={})
        with connect(settings) as pacs:
            report = pacs.store([*files, *results])
        assert report.ok and len(report.stored) == len(files) + 2
        assert len(server.series_of("SEG")) == 1 and len(server.series_of("RTSTRUCT")) == 1
    finally:
        stop_orthanc(server)
