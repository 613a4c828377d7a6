"""The error hierarchy: every medseg error is a MedsegError and its matching builtin."""

from __future__ import annotations

import numpy as np
import pytest

import medseg
from medseg.errors import (
    ConfigError,
    DicomError,
    GeometryError,
    InputError,
    MedsegError,
    ModelError,
    PacsError,
)
from medseg.geometry import Geometry

BUILTIN_OF = {
    InputError: ValueError,
    DicomError: ValueError,
    GeometryError: ValueError,
    ConfigError: ValueError,
    ModelError: RuntimeError,
    PacsError: ConnectionError,
}


@pytest.mark.parametrize("error, builtin", BUILTIN_OF.items(), ids=lambda e: getattr(e, "__name__", ""))
def test_each_error_is_caught_as_medseg_error_and_as_its_builtin(error, builtin):
    with pytest.raises(MedsegError):
        raise error("boom")
    with pytest.raises(builtin) as caught:
        raise error("boom")
    assert str(caught.value) == "boom"


def test_dicom_errors_are_input_errors():
    assert issubclass(DicomError, InputError)
    assert not issubclass(GeometryError, InputError)
    assert not issubclass(InputError, GeometryError)


def test_medseg_error_is_not_a_builtin_category_of_its_own():
    # The base class must not swallow unrelated builtins: catching ValueError
    # should not catch a ModelError, and vice versa.
    assert not issubclass(ModelError, ValueError)
    assert not issubclass(PacsError, ValueError)
    assert not issubclass(InputError, RuntimeError)


def test_package_exports_the_errors():
    for name in ("MedsegError", "InputError", "DicomError", "GeometryError", "ConfigError", "ModelError", "PacsError"):
        assert name in medseg.__all__
        assert getattr(medseg, name) is getattr(medseg.errors, name)


def test_library_raises_catchable_as_builtin():
    # A real error raised by the library, caught with the builtin only.
    with pytest.raises(ValueError, match="shape"):
        Geometry((0, 4, 4), np.eye(4))
