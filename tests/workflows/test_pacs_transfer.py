"""``workflows.pacs_transfer``: echo, query, push and pull against a real Orthanc, as a notebook talks to a PACS."""

from __future__ import annotations

import pydicom
import pytest

from medseg.errors import ConfigError, PacsError
from medseg.workflows.pacs_transfer import echo, pull, push, query, series_query, settings
from tests.pacs.conftest import ct_study, free_port


@pytest.mark.parametrize("protocol", ["dicomweb", "dimse"])
def test_push_query_and_pull_a_study(orthanc, tmp_path, protocol):
    study = ct_study(tmp_path / "study", series=2)
    pacs = settings(orthanc.settings_file(tmp_path / "cfg", protocol=protocol))
    echo(pacs)
    files, stored = push(pacs, [tmp_path / "study"])
    assert len(files) == sum(len(s) for s in study) and len(stored.stored) == len(files) and not stored.failed
    study_uid = str(pydicom.dcmread(study[0][0], stop_before_pixels=True).StudyInstanceUID)
    found = query(pacs, series_query(study_uid=study_uid))
    assert sorted(s.instances for s in found) == sorted(len(s) for s in study)
    done = []
    report = pull(pacs, series_query(study_uid=study_uid), tmp_path / "pulled", on_series=done.append)
    assert [p.series.series_uid for p in report.series] == [p.series.series_uid for p in done]
    for pulled in report.series:
        assert pulled.instances == pulled.series.instances == len(list(pulled.folder.glob("*.dcm")))
        assert pulled.folder.parent.parent == tmp_path / "pulled"


def test_a_pull_without_a_filter_and_an_unreachable_pacs_are_refused(tmp_path):
    pacs = settings(None, {"url": f"http://127.0.0.1:{free_port()}/dicom-web", "timeout": 3})
    with pytest.raises(ConfigError, match="at least one filter"):
        pull(pacs, series_query(), tmp_path / "out")
    with pytest.raises(PacsError):
        echo(pacs)
    with pytest.raises(FileNotFoundError, match="nope"):
        push(pacs, [tmp_path / "nope"])
