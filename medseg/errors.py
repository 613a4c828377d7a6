"""The few exception types medseg raises.

Each also subclasses the matching builtin, so callers may catch either
``medseg.InputError`` or plain ``ValueError``. Messages name the file or key,
show the bad value and say what was expected.

The policy (docs/architecture.md): option objects and library functions raise
:class:`ConfigError` naming the parameter (only ``medseg.cli`` speaks in flag
names); a missing or broken model is a :class:`ModelError`; an exception that
wraps another keeps it as its cause (``raise ... from exc``) so ``--debug`` shows
both.
"""

from __future__ import annotations


class MedsegError(Exception):
    """Base class of every error medseg raises on purpose."""


class InputError(MedsegError, ValueError):
    """An input file or folder cannot be used as it is."""


class DicomError(InputError):
    """A DICOM file or series is unreadable, inconsistent or unsupported."""


class DatasetError(InputError):
    """A dataset cannot be used: its description is malformed, or its cases have errors."""


class GeometryError(MedsegError, ValueError):
    """A grid is invalid, or two grids that must agree do not."""


class ConfigError(MedsegError, ValueError):
    """A pipeline file, setting or command-line option is invalid."""


class ModelError(MedsegError, RuntimeError):
    """A model folder is missing, incomplete or incompatible with the input."""


class PacsError(MedsegError, ConnectionError):
    """A PACS peer is unreachable, refuses us or answers with an error."""
