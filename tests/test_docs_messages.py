"""The messages docs/troubleshooting.md quotes are the messages medseg prints."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TROUBLESHOOTING = REPO / "docs" / "troubleshooting.md"
#: Stands for any text: a ``<value>`` or ``...`` in the docs, a ``{value}`` in the code.
ANY = "\0"
#: How the CLI prefixes some messages when it prints them (the rest of the line is the message).
PREFIXES = ("warning: ",)
#: Characters of a documented message that may be example values (`modality MR`) where the code has `{...}`.
EXAMPLE_VALUES = 10
#: Rich console markup in the code's strings (``[red]FAILED[/]``), not part of what is printed.
MARKUP = re.compile(r"\[/?(?:bold|red|green|yellow|cyan)?\]")


def documented_messages() -> list[str]:
    """Every message in the first column of the troubleshooting tables (commands like `medseg doctor` left out)."""
    messages = []
    for line in TROUBLESHOOTING.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        first_column = re.split(r"(?<!\\)\|", line)[1]
        for quoted in re.findall(r"`([^`]+)`", first_column):
            if not quoted.startswith("medseg "):
                messages.append(quoted.replace("\\|", "|"))
    return messages


def _pattern(message: str) -> str:
    """A documented message with its ``<...>`` values and ``...`` elisions as wildcards."""
    for prefix in PREFIXES:
        message = message.removeprefix(prefix)
    return re.sub(r"<[^<>]*>| ?\.\.\.", ANY, message)  # `medseg ...` may stand for `medseg, or ...`


@lru_cache(maxsize=1)
def source_strings() -> tuple[str, ...]:
    """Every string literal in medseg's sources, with an f-string's ``{...}`` parts as wildcards."""
    found = []
    for path in sorted((REPO / "medseg").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.JoinedStr):
                found.append("".join(v.value if isinstance(v, ast.Constant) else ANY for v in node.values))
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                found.append(node.value)
    return tuple(MARKUP.sub("", text) for text in found if len(text) < 400)  # messages, not docstrings


def spelled_out(pattern: str, template: str) -> int:
    """How many of ``pattern``'s characters ``template`` spells out (-1: no text matches both).

    ``ANY`` in either stands for any text; the best of the ways to line the two up counts.
    """
    impossible = -1
    # best[j]: for pattern[:i] against template[:j], the most pattern characters matched by template characters.
    best = [0] + [impossible] * len(template)
    for j in range(1, len(template) + 1):
        best[j] = 0 if best[j - 1] == 0 and template[j - 1] == ANY else impossible
    for i in range(1, len(pattern) + 1):
        previous, x = best, pattern[i - 1]
        best = [previous[0] if x == ANY else impossible] + [impossible] * len(template)
        for j in range(1, len(template) + 1):
            y = template[j - 1]
            if x == ANY or y == ANY:  # one side's text swallowed by the other's wildcard
                best[j] = max(previous[j], best[j - 1], previous[j - 1])
            elif x == y and previous[j - 1] != impossible:
                best[j] = previous[j - 1] + 1
    return best[len(template)]


def _fragments(pattern: str) -> list[str]:
    """The literal stretches of a pattern long enough to search for."""
    return [f for f in pattern.split(ANY) if len(f.strip()) >= 4]


def _literal_length(pattern: str) -> int:
    return len(pattern.replace(ANY, ""))


def test_the_troubleshooting_page_quotes_messages():
    assert len(documented_messages()) > 30


@pytest.mark.parametrize("message", documented_messages())
def test_a_documented_message_is_in_the_code(message: str) -> None:
    assert in_code(message), f"docs/troubleshooting.md quotes a message the code does not print: {message!r}"


def test_a_drifted_message_is_caught():
    assert in_code("<path>: no such file or folder")
    assert in_code("warning: modality MR, but the model was trained on CT")
    assert not in_code("<path>: no such folder or file")
    assert not in_code("series <n> (<uid>): <k> slices missing: <g> gap(s) up to <mm> mm in a stack spaced <mm> mm")
    assert not in_code("series <n> (<uid>): gantry tilt of <deg> degrees: ...; refused (use --tilt resample)")
    assert not in_code("warning: modality MR, and the model was trained on CT")


def test_the_matcher_lines_up_wildcards_on_both_sides():
    assert spelled_out("ab" + ANY + "cd", "abxxcd") == 4 and spelled_out("abc", "a" + ANY) == 1
    assert spelled_out(ANY + "a", ANY + "b") == -1 and spelled_out("a" + ANY + "c", "a" + ANY + "d") == -1
    assert spelled_out(ANY + "x" + ANY, "y" + ANY + "z") == 0 and spelled_out("abc", ANY) == 0  # x, abc swallowed


def in_code(message: str) -> bool:
    """Whether the message, its ``<values>`` and ``...`` as wildcards, matches a string of medseg's code (its
    ``{values}`` as wildcards), every character spelled out by the code but for a few of example values."""
    pattern = _pattern(message)
    needed = _literal_length(pattern) - EXAMPLE_VALUES
    return any(spelled_out(pattern, template) >= needed for template in _templates(pattern))


def _templates(pattern: str) -> Iterator[str]:
    """The code's strings that may print ``pattern``, and those with one ``{...}`` filled by another string
    (a message built in two places: ``f"series {name}: {problem}; refused"`` and the problem's own text)."""
    related = [
        s
        for s in source_strings()
        if any(f in pattern for f in _fragments(s)) or any(f in s for f in _fragments(pattern))
    ]
    outers = []
    for outer in (s for s in related if spelled_out(pattern, s) >= 0):
        outers.append(outer)
        yield outer
    inners = [s for s in related if spelled_out(pattern, ANY + s + ANY) >= 0]
    for outer in outers:
        for i in (i for i, c in enumerate(outer) if c == ANY):
            yield from (outer[:i] + inner + outer[i + 1 :] for inner in inners)
