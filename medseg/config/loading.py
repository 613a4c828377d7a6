"""Read and write pipeline YAML, with errors that point at the line.

training.optimizer.learning_rate: ... -> ``pipe.yaml:14: training.optimizer.learning_rate:
Input should be greater than 0 (got -0.01)``
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from medseg.config.schema import Pipeline
from medseg.errors import ConfigError
from medseg.io.files import write_atomically

Comments = Mapping[str, str]  # dotted key path -> comment written above that key


def load_pipeline(path: str | os.PathLike[str]) -> Pipeline:
    """Load and validate a pipeline file.

    Raises:
        ConfigError: unreadable file, invalid YAML, unknown keys or bad values;
            every problem is listed with its line and dotted key.
    """
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read pipeline ({exc.strerror or exc})") from exc
    return parse_pipeline(text, source=str(path))


def parse_pipeline(text: str, *, source: str = "<pipeline>") -> Pipeline:
    """Validate pipeline YAML given as text (``source`` names it in errors)."""
    try:
        data = yaml.safe_load(text)
        lines = _key_lines(yaml.compose(text))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: invalid YAML: {exc.problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: a pipeline is a mapping of keys (name, modality, labels, ...), got {type(data).__name__}"
        )
    try:
        pipeline = Pipeline.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error, lines, source) for error in exc.errors()]
        raise ConfigError("; ".join(problems) if len(problems) < 2 else "\n".join(problems)) from exc
    pipeline._origin = (source, lines)
    return pipeline


def dump_pipeline(pipeline: Pipeline, *, comments: Comments | None = None, header: str = "") -> str:
    """The pipeline as YAML, with ``comments`` (keyed by dotted path) above their keys."""
    data = pipeline.model_dump(mode="json", exclude_none=True)
    out: list[str] = [f"# {line}".rstrip() for line in header.splitlines()] if header else []
    _emit(data, out, comments or {}, prefix="", indent=0)
    return "\n".join(out) + "\n"


def read_comments(text: str) -> tuple[str, dict[str, str]]:
    """The header and the comments above each key of pipeline YAML (:func:`dump_pipeline`'s two inputs).

    A comment block right above a key belongs to it (dotted path, e.g. ``training.patch_size``);
    the comment lines before the document's first key are the header. Other comments are dropped.
    """
    lines = text.splitlines()
    keys = _key_lines(yaml.compose(text))
    first = min(keys.values(), default=len(lines) + 1)
    owners: dict[int, tuple[str, ...]] = {}
    for path, line in keys.items():  # a line's comment belongs to its outermost key (not the items of a flow list)
        if line not in owners or len(path) < len(owners[line]):
            owners[line] = path
    comments: dict[str, str] = {}
    for line, path in owners.items():
        above = []
        index = line - 2
        while index >= 0 and lines[index].strip().startswith("#"):
            above.append(lines[index].strip()[1:].strip())
            index -= 1
        if above and line != first:
            comments[".".join(path)] = "\n".join(reversed(above))
    header = "\n".join(line.strip()[1:].strip() for line in lines[: first - 1] if line.strip().startswith("#"))
    return header, comments


def save_pipeline(
    pipeline: Pipeline, path: str | os.PathLike[str], *, comments: Comments | None = None, header: str = ""
) -> Path:
    """Write :func:`dump_pipeline`'s YAML to ``path`` atomically."""

    text = dump_pipeline(pipeline, comments=comments, header=header)
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def _emit(data: Mapping[str, Any], out: list[str], comments: Comments, *, prefix: str, indent: int) -> None:
    pad = " " * indent
    for key, value in data.items():
        path = f"{prefix}{key}"
        comment = comments.get(path)
        if comment:
            out.extend(f"{pad}# {line}".rstrip() for line in comment.splitlines())
        if isinstance(value, dict) and value and not _is_flat(value):
            out.append(f"{pad}{key}:")
            _emit(value, out, comments, prefix=f"{path}.", indent=indent + 2)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.append(f"{pad}{key}:")
            out.extend(f"{pad}  - {_inline(item)}" for item in value)
        else:
            out.append(f"{pad}{key}: {_inline(value)}")


def _is_flat(value: dict[str, Any]) -> bool:
    """Small mappings of scalars (e.g. a label) are written on one line."""
    return (
        len(value) <= 4
        and all(not isinstance(v, (dict, list)) or _short_list(v) for v in value.values())
        and all(not isinstance(v, dict) for v in value.values())
    )


def _short_list(value: Any) -> bool:
    return isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value)


def _inline(value: Any) -> str:
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False)
        .strip()
        .removesuffix("...")
        .strip()
    )


def _key_lines(node: yaml.Node | None, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], int]:
    """1-based line of every key path in a composed YAML document."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key_path = (*path, str(key_node.value))
            lines[key_path] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key_path))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            item_path = (*path, str(index))
            lines[item_path] = item.start_mark.line + 1
            lines.update(_key_lines(item, item_path))
    return lines


def _describe(error: Mapping[str, Any], lines: dict[tuple[str, ...], int], source: str) -> str:
    loc = tuple(str(part) for part in error["loc"])
    line = next((lines[loc[:n]] for n in range(len(loc), 0, -1) if loc[:n] in lines), None)
    where = f"{source}:{line}" if line else source
    key = ".".join(loc) or "(top level)"
    if error["type"] == "extra_forbidden":
        hint = _suggest(loc)
        return f"{where}: {key}: unknown key{hint}"
    if error["type"] == "missing":
        return f"{where}: {key}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return f"{where}: {key}: {message}{shown}"


def _suggest(loc: tuple[str, ...]) -> str:
    """' (did you mean ...?)' from the fields allowed where the unknown key stands."""
    model: type[BaseModel] | None = Pipeline
    for part in loc[:-1]:
        field = model.model_fields.get(part) if model else None
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    if model is None:
        return ""
    close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (allowed: {', '.join(model.model_fields)})"
