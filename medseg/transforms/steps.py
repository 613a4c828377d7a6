"""Augmentation steps by name: medseg's transforms and any MONAI dictionary transform.

A pipeline's ``training.augmentation`` is a list of steps (:class:`medseg.config.Step`):
a name and keyword arguments. :func:`check_augmentation` resolves every name and builds
every transform when training starts, so a misspelled name or argument is refused
with its line in the pipeline file and a suggestion, never at step 10,000:

    pipe.yaml:31: training.augmentation[4]: unknown transform 'RandGausianSmoothd' (did you mean 'RandGaussianSmoothd'?)

Names resolve through a registry (medseg's own, then ``monai.transforms``); only
classes that are MONAI dictionary transforms (``MapTransform``) are accepted, so no
import string from a file ever reaches ``importlib``.
"""

from __future__ import annotations

import difflib
import inspect
from functools import cache

import monai.transforms
from monai.transforms import Compose, MapTransform

from medseg.config.schema import Pipeline, Step
from medseg.errors import ConfigError
from medseg.transforms.augment import RandAffineMmd

#: medseg's own transforms, by the name a pipeline uses.
MEDSEG_TRANSFORMS: dict[str, type[MapTransform]] = {"RandAffineMmd": RandAffineMmd}


@cache
def monai_names() -> tuple[str, ...]:
    """The MONAI dictionary transforms a step may name (canonical ``...d`` names)."""
    names = []
    for name in dir(monai.transforms):
        value = getattr(monai.transforms, name)
        if isinstance(value, type) and issubclass(value, MapTransform) and name.endswith("d"):
            names.append(name)
    return tuple(sorted(names))


def resolve(name: str) -> type[MapTransform]:
    """The transform class a step's ``name`` stands for.

    Raises:
        ValueError: no such dictionary transform (with the closest names).
    """
    if name in MEDSEG_TRANSFORMS:
        return MEDSEG_TRANSFORMS[name]
    value = getattr(monai.transforms, name, None) if not name.startswith("_") else None
    if isinstance(value, type) and issubclass(value, MapTransform):
        return value
    if isinstance(value, type):
        raise ValueError(f"'{name}' is an array transform; a step needs a dictionary transform (try '{name}d')")
    close = difflib.get_close_matches(name, [*MEDSEG_TRANSFORMS, *monai_names()], n=1, cutoff=0.6)
    hint = (
        f"did you mean {close[0]!r}?"
        if close
        else "a step names a medseg transform or any MONAI dictionary transform, e.g. 'RandGaussianSmoothd'"
    )
    raise ValueError(f"unknown transform '{name}' ({hint})")


def build_step(step: Step) -> MapTransform:
    """The transform of one step, its arguments checked against the class's signature first.

    Raises:
        ValueError: unknown name, an argument the transform does not take (with the closest
            one), a required one missing, or a value the transform refuses.
    """
    cls = resolve(step.name)
    arguments = step.arguments
    signature = inspect.signature(cls.__init__)
    variable = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    parameters = [name for name, p in list(signature.parameters.items())[1:] if p.kind not in variable]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values()):
        for key in arguments:
            if key not in parameters:
                close = difflib.get_close_matches(key, parameters, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"it takes {', '.join(parameters)}"
                raise ValueError(f"{step.name} has no argument '{key}' ({hint})")
    try:
        signature.bind(None, **arguments)
    except TypeError as exc:
        raise ValueError(f"{step.name}: {exc}") from exc
    try:
        return cls(**arguments)
    except Exception as exc:
        raise ValueError(f"{step.name}: {type(exc).__name__}: {exc}") from exc


def build_augmentation(pipeline: Pipeline) -> Compose:
    """The pipeline's augmentation steps, in order, as one ``monai.transforms.Compose``.

    Raises:
        ConfigError: a step that cannot be built, with its place in the pipeline file.
    """
    transforms = []
    for index, step in enumerate(pipeline.training.augmentation):
        try:
            transforms.append(build_step(step))
        except ValueError as exc:
            where = pipeline.location("training", "augmentation", index)
            raise ConfigError(f"{where}: training.augmentation[{index}]: {exc}") from exc
    return Compose(transforms)


def check_augmentation(pipeline: Pipeline) -> None:
    """Build every step once, so that a bad one is refused before training starts.

    Raises:
        ConfigError: as :func:`build_augmentation`.
    """
    build_augmentation(pipeline)
