"""``medseg listen`` against a real Orthanc: C-MOVE to the listener, the SEG lands back in Orthanc;
a listener killed mid-series and restarted loses nothing."""

from __future__ import annotations

import io
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pydicom
import pytest

from medseg.pacs.model import folder_name
from tests.pacs.conftest import LISTENER_AET, ORTHANC_AET, TEST_AET, c_store, ct_study, free_port, run_cli

pytestmark = pytest.mark.integration


@contextmanager
def listening(model: Path, storage: Path, orthanc, *, port: int, quiet_time: float, allow=()):
    """Run ``medseg listen`` in a subprocess until the block ends (SIGTERM, as a service manager stops it)."""
    command = [
        sys.executable, "-m", "medseg", "listen", "--model", str(model), "--ae-title", LISTENER_AET,
        "--port", str(port), "--host", "127.0.0.1", "--storage", str(storage), "--quiet-time", str(quiet_time),
        "--forward", f"{ORTHANC_AET}@127.0.0.1:{orthanc.dicom_port}", "--device", "cpu",
    ]
    if allow:
        command += ["--allow", *allow]
    log = open(storage.parent / f"listen-{port}-{time.monotonic_ns()}.log", "w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, log.name)
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def _wait_for_port(port: int, process: subprocess.Popen, log: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"medseg listen exited with {process.returncode}: {Path(log).read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    pytest.fail(f"medseg listen did not open port {port}: {Path(log).read_text()[-2000:]}")


def c_move(orthanc, study_uid: str, series_uid: str, destination: str) -> int:
    """Ask Orthanc to C-MOVE a series to ``destination``; returns the final status."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove as Move

    ae = AE(ae_title=TEST_AET)
    ae.add_requested_context(Move)
    assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=ORTHANC_AET)
    assert assoc.is_established
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID, identifier.SeriesInstanceUID = study_uid, series_uid
    try:
        statuses = [int(status.Status) for status, _ in assoc.send_c_move(identifier, destination, Move)]
    finally:
        assoc.release()
    return statuses[-1]


def wait_for_segs(orthanc, count: int, timeout: float = 120) -> dict[str, pydicom.Dataset]:
    """The SEGs in Orthanc by referenced series, once there are ``count`` of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for series in orthanc.series_of("SEG"):
            for instance in series["Instances"]:
                ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
                found[str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)] = ds
        if len(found) >= count:
            return found
        time.sleep(0.5)
    pytest.fail(f"{count} SEG(s) expected in Orthanc within {timeout} s, found {len(found)}")


def test_c_move_to_the_listener_puts_a_seg_into_orthanc(orthanc, trained_model, tmp_path):
    study = ct_study(tmp_path / "study", series=2)
    moved, stored = study
    orthanc.upload(moved)
    first = pydicom.dcmread(moved[0], stop_before_pixels=True)
    port = free_port()
    orthanc.add_modality("medseg", LISTENER_AET, port)
    storage = tmp_path / "listen"
    with listening(trained_model, storage, orthanc, port=port, quiet_time=1.0, allow=(ORTHANC_AET, "MODALITY")):
        # Two senders at once: Orthanc (C-MOVE) and a modality (C-STORE) on another association.
        sender = threading.Thread(target=lambda: c_store(stored, port))
        sender.start()
        assert c_move(orthanc, first.StudyInstanceUID, first.SeriesInstanceUID, LISTENER_AET) == 0x0000
        sender.join()
        moved_at = time.monotonic()
        segs = wait_for_segs(orthanc, 2)
        elapsed = time.monotonic() - moved_at

        refused = run_cli("pacs", "echo", "--ae-title", LISTENER_AET, "--host", "127.0.0.1", "--port", str(port),
                          "--calling-ae-title", "INTRUDER")
    assert elapsed < 30  # the quiet time (1 s), two tiny segmentations and two C-STOREs
    expected = {str(pydicom.dcmread(s[0], stop_before_pixels=True).SeriesInstanceUID) for s in study}
    assert set(segs) == expected
    for series_uid, seg in segs.items():
        assert seg.StudyInstanceUID == first.StudyInstanceUID
        state = json.loads((storage / "state" / f"{folder_name(series_uid)}.json").read_text())
        assert state["status"] == "sent" and state["instances"] == 14
        assert state["sender"]["ae_title"] == (ORTHANC_AET if series_uid == first.SeriesInstanceUID else "MODALITY")
    assert len(list((storage / "incoming" / folder_name(first.SeriesInstanceUID)).glob("*.dcm"))) == 14
    assert refused.returncode == 3  # the listener refused the association: a network failure
    (line,) = refused.stderr.strip().splitlines()
    assert "association rejected" in line and "calling AE title is not recognised" in line


def test_a_killed_listener_resumes_without_losing_instances(orthanc, trained_model, tmp_path):
    (files,) = ct_study(tmp_path / "study", series=1)
    series_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)
    port = free_port()
    storage = tmp_path / "listen"
    with listening(trained_model, storage, orthanc, port=port, quiet_time=60.0) as process:
        assert c_store(files[:8], port) == [0x0000] * 8
        # On disk before they were acknowledged:
        assert len(list((storage / "incoming" / folder_name(series_uid)).glob("*.dcm"))) == 8
        assert json.loads((storage / "state" / f"{folder_name(series_uid)}.json").read_text())["status"] == "received"
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    with listening(trained_model, storage, orthanc, port=port, quiet_time=3.0):
        assert c_store(files[8:], port) == [0x0000] * 6
        segs = wait_for_segs(orthanc, 1)
    seg = segs[series_uid]
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files}
    referenced = {str(i.ReferencedSOPInstanceUID) for i in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == sources
    state = json.loads((storage / "state" / f"{folder_name(series_uid)}.json").read_text())
    assert state["status"] == "sent" and state["instances"] == 14
    assert len(orthanc.series_of("SEG")) == 1


def test_listen_help_explains_the_workflow(capsys):
    from medseg.cli import main

    with pytest.raises(SystemExit):
        main(["listen", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    phrases = ("--quiet-time", "--forward", "--allow", "STORAGE/incoming", "synced to disk before it is acknowledged")
    for phrase in (*phrases, "resumes"):
        assert phrase in text


def test_an_nnunet_model_behind_the_listener(orthanc, nnunet_model, tmp_path):
    """``medseg listen --model`` an nnU-Net folder: its worker processes load it, and its SEG reaches Orthanc."""
    from medseg.io import read_image
    from tests.factories import write_series

    case = nnunet_model.cases[0]
    files = write_series(read_image(nnunet_model.inputs / f"{case}_0000.nii.gz"), tmp_path / "series")
    port = free_port()
    storage = tmp_path / "listen"
    with listening(nnunet_model.model_folder, storage, orthanc, port=port, quiet_time=1.0):
        assert set(c_store(files, port)) == {0x0000}
        segs = wait_for_segs(orthanc, 1)
    (seg,) = segs.values()
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert algorithm.AlgorithmName == nnunet_model.model_folder.parent.name
    assert {s.SegmentLabel for s in seg.SegmentSequence} <= {"liver", "spleen", "kidney"}
