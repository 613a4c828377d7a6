"""medseg: segment volumetric medical scans, with geometry that never gets lost.

The core (:class:`Volume`, :class:`Geometry`, the errors) imports neither torch
nor MONAI; readers and writers live in :mod:`medseg.io`.
"""

from medseg.errors import (
    ConfigError,
    DatasetError,
    DicomError,
    GeometryError,
    InputError,
    MedsegError,
    ModelError,
    PacsError,
)
from medseg.geometry import Geometry
from medseg.volume import Segment, SourceSeries, Volume, VolumeKind

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DatasetError",
    "DicomError",
    "Geometry",
    "GeometryError",
    "InputError",
    "MedsegError",
    "ModelError",
    "PacsError",
    "Segment",
    "SourceSeries",
    "Volume",
    "VolumeKind",
    "__version__",
]
