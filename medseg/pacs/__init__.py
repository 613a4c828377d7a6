"""Work with a PACS: query, pull, push and segment over DICOMweb or DIMSE, and listen for series.

* :mod:`medseg.pacs.config`: the connection, described once (YAML, ``MEDSEG_PACS_*``, flags), secrets kept secret;
* :mod:`medseg.pacs.client`: :func:`connect` gives one interface over
  :mod:`~medseg.pacs.dicomweb` (QIDO-RS, WADO-RS, STOW-RS) and :mod:`~medseg.pacs.dimse`
  (C-ECHO, C-FIND, C-GET, C-STORE);
* :mod:`medseg.pacs.segment`: query -> pull -> segment -> push, skipping series already segmented;
* :mod:`medseg.pacs.listener`: a Storage SCP that segments what it receives.

Heavy libraries (pynetdicom, dicomweb-client, torch) load only when used.
"""

from medseg.pacs.client import PacsClient, connect
from medseg.pacs.config import PacsSettings, Secret, load_settings, parse_peer
from medseg.pacs.model import SeriesInfo, SeriesQuery, StoreReport

__all__ = [
    "PacsClient",
    "PacsSettings",
    "Secret",
    "SeriesInfo",
    "SeriesQuery",
    "StoreReport",
    "connect",
    "load_settings",
    "parse_peer",
]
