"""The few exception types medseg raises.

Each also subclasses the matching builtin, so callers may catch either
``medseg.InputError`` or plain ``ValueError``. Messages name the file or key,
show the bad value and say what was expected.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose."""


class InputError(MedsegError, ValueError):
    """An input file or folder cannot be used as it is."""


class DicomError(InputError):
    """A DICOM file or series is unreadable, inconsistent or unsupported."""


class GeometryError(MedsegError, ValueError):
    """A grid is invalid, or two grids that must agree do not."""


class ConfigError(MedsegError, ValueError):
    """A pipeline file, setting or command-line option is invalid."""


class ModelError(MedsegError, RuntimeError):
    """A model folder is missing, incomplete or incompatible with the input."""


class PacsError(MedsegError, ConnectionError):
    """A PACS peer is unreachable, refuses us or answers with an error."""
