"""Generate the pipeline YAML reference (docs/pipelines.md) from the schema itself.

    python -m medseg.config.reference > docs/pipelines.md
"""

from __future__ import annotations

import inspect
import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from medseg.config.schema import Pipeline

_INTRO = """# Pipeline YAML reference

A pipeline file describes everything about a model's recipe: the grid and intensity
normalisation of its inputs, the network, training and inference. `medseg plan` writes
one for a dataset, with the reason for each value in a comment; the hand-written ones in
`pipelines/` are starting points. Files are validated on load: an unknown key or a bad
value is reported with its line and dotted key, e.g.
`plan.yaml:27: training.optimizer.learning_rate: Input should be greater than 0 (got -1)`.

This page is generated from the schema (`python -m medseg.config.reference`); a test
keeps it current.
"""


def reference() -> str:
    """The whole reference as Markdown."""
    sections: list[str] = [_INTRO]
    seen: set[type[BaseModel]] = set()
    _section(Pipeline, "", sections, seen)
    return "\n".join(sections)


def _section(model: type[BaseModel], prefix: str, sections: list[str], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    title = prefix.rstrip(".") or "top level"
    doc = inspect.cleandoc(model.__doc__ or "")
    rows = ["| key | type | default |", "| --- | --- | --- |"]
    nested: list[tuple[type[BaseModel], str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        limits = _limits(field.metadata)  # a field's own constraints live here, not in its annotation
        kind = f"{_type(annotation)} ({', '.join(limits)})" if limits else _type(annotation)
        rows.append(f"| `{name}` | {kind} | {_default(field)} |")
        for inner in _models_in(annotation):
            nested.append((inner, f"{prefix}{name}."))
    sections.append(f"## `{title}`\n\n{doc}\n\n" + "\n".join(rows) + "\n")
    for inner, inner_prefix in nested:
        _section(inner, inner_prefix, sections, seen)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in typing.get_args(annotation))
    if origin is typing.Annotated:
        base, *meta = typing.get_args(annotation)
        limits = _limits(meta)
        return f"{_type(base)} ({', '.join(limits)})" if limits else _type(base)
    if origin in (list, tuple):
        inner = ", ".join(_type(a) for a in args)
        return f"list of {inner}" if origin is list else f"[{inner}]"
    if origin is dict:
        return f"mapping {_type(args[0])} → {_type(args[1])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " or ".join(_type(a) for a in args) + (" or null" if len(args) < len(typing.get_args(annotation)) else "")
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"mapping (`{annotation.__name__}`, below)"
    return getattr(annotation, "__name__", str(annotation))


def _limits(meta: list[Any]) -> list[str]:
    """'> 0', '<= 1', ... from annotated-types constraints (directly or inside a pydantic Field)."""
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    found = []
    for item in meta:
        for constraint in getattr(item, "metadata", [item]):
            for attribute, symbol in symbols.items():
                if hasattr(constraint, attribute):
                    found.append(f"{symbol} {getattr(constraint, attribute)}")
    return found


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.default if field.default is not PydanticUndefined else field.default_factory()
    if isinstance(value, BaseModel) or (isinstance(value, list) and value and isinstance(value[0], BaseModel)):
        return "see below"
    return f"`{json.dumps(value)}`"


if __name__ == "__main__":
    print(reference(), end="")
