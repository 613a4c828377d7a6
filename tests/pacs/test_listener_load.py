"""The listener under load (issue: a DICOM node in the real world): 4 senders at once, 20 series of 100
instances, one sender dropping its association half-way through a series, the listener SIGKILLed once
and restarted. Every acknowledged instance is on disk, every series is segmented exactly once, and its
SEG arrives in Orthanc."""

from __future__ import annotations

import io
import re
import time
from collections import Counter

import pydicom
import pytest

from medseg.pacs.model import folder_name
from tests.pacs.load import run_load

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_four_senders_a_drop_and_a_kill(orthanc, trained_model, tmp_path):
    # quiet time 10 s (the default): on a busy 2-core machine a restarted listener and four senders reconnecting
    # can leave a series silent for several seconds, and a shorter one would segment it early (then again)
    run = run_load(trained_model, tmp_path, orthanc, series=20, slices=100, senders=4, workers=2, quiet_time=10.0)
    try:
        assert run.kills == 1 and run.dropped == 1
        sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for s in run.files for p in s}
        assert run.acknowledged == set(sent) and len(sent) == 2000
        on_disk = {p.stem for p in (run.storage / "incoming").glob("*/*.dcm")}
        assert run.acknowledged <= on_disk  # nothing acknowledged was lost to the kill

        series_uids = {str(pydicom.dcmread(s[0], stop_before_pixels=True).SeriesInstanceUID) for s in run.files}
        deadline = time.monotonic() + 600
        segs: dict[str, list[pydicom.Dataset]] = {}
        while time.monotonic() < deadline:
            segs = {}
            for series in orthanc.series_of("SEG"):
                for instance in series["Instances"]:
                    ds = pydicom.dcmread(io.BytesIO(orthanc.instance_file(instance)))
                    segs.setdefault(str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID), []).append(ds)
            states = [p.read_text() for p in (run.storage / "state").glob("*.json")]
            if set(segs) == series_uids and len(states) == 20 and all('"status": "sent"' in t for t in states):
                break
            time.sleep(1.0)
        assert set(segs) == series_uids, f"{len(segs)} of 20 series have a SEG in Orthanc"
        for uid, found in segs.items():
            assert len(found) == 1, f"series {uid}: {len(found)} SEGs"
            referenced = found[0].ReferencedSeriesSequence[0].ReferencedInstanceSequence
            assert len(referenced) == 100  # the whole series, the dropped and resent parts included
            state = (run.storage / "state" / f"{folder_name(uid)}.json").read_text()
            assert '"status": "sent"' in state
        segmented = Counter(re.findall(r"segmented (\S+)", run.log.read_text()))
        assert set(segmented) == series_uids and set(segmented.values()) == {1}, segmented
    finally:
        run.stop()
