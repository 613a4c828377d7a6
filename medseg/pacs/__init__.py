"""Talk to a PACS: query, pull and push over DICOMweb or DIMSE (transport only).

* :mod:`medseg.pacs.config`: the connection, described once (YAML, ``MEDSEG_PACS_*``, flags), secrets kept secret;
* :mod:`medseg.pacs.client`: :func:`connect` gives one interface over
  :mod:`~medseg.pacs.dicomweb` (QIDO-RS, WADO-RS, STOW-RS) and :mod:`~medseg.pacs.dimse`
  (C-ECHO, C-FIND, C-GET, C-STORE);

Segmenting what a PACS holds or sends is a workflow: :mod:`medseg.workflows.pacs_segment`
and :mod:`medseg.workflows.listen`. Heavy libraries (pynetdicom, dicomweb-client) load
only when used.
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
