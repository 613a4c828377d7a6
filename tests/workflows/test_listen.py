"""``workflows.listen``: a Listener run in-process, as a notebook or a service wrapper runs it.

A modality (pynetdicom) sends a CT series to the Listener on loopback; the SEG it makes goes to a
real Storage SCP (pynetdicom) that stands in for the PACS, referencing the series it segmented.
"""

from __future__ import annotations

import time

import pydicom
import pytest

from medseg.workflows.listen import Listener, ListenerOptions, forward_peer
from tests.pacs.conftest import c_store, ct_study

SENDER, LISTENER, PACS = "MODALITY", "MEDSEG-NODE", "PACS"


@pytest.fixture
def pacs():
    """A Storage SCP on a free loopback port; yields (port, received datasets)."""
    from pynetdicom import AE, AllStoragePresentationContexts, evt

    received: list[pydicom.Dataset] = []

    def store(event):
        received.append(event.dataset)
        return 0x0000

    ae = AE(ae_title=PACS)
    ae.supported_contexts = AllStoragePresentationContexts
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, store)])
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def test_a_received_series_is_segmented_and_its_seg_forwarded(trained_model, pacs, tmp_path):
    port, received = pacs
    (series,) = ct_study(tmp_path / "study", series=1)
    source = pydicom.dcmread(series[0], stop_before_pixels=True)
    events: list[tuple[str, str]] = []
    options = ListenerOptions(
        storage=tmp_path / "storage",
        ae_title=LISTENER,
        port=0,
        host="127.0.0.1",
        quiet_time=0.5,
        forward=forward_peer(f"{PACS}@127.0.0.1:{port}", calling_ae_title=LISTENER),
        device="cpu",
    )
    listener = Listener(options, model=trained_model, on_event=lambda event, uid, message: events.append((event, uid)))
    with listener:
        assert set(c_store(series, listener.port, calling=SENDER, called=LISTENER)) == {0x0000}
        deadline = time.monotonic() + 120
        while not received and time.monotonic() < deadline:
            time.sleep(0.2)
        status = listener.status()
    assert len(received) == 1, events
    seg = received[0]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    assert status == {str(source.SeriesInstanceUID): "sent"}
    assert {uid for _, uid in events} == {str(source.SeriesInstanceUID)}
    assert len(list((tmp_path / "storage" / "incoming").rglob("*.dcm"))) == len(series)  # the inputs are kept
