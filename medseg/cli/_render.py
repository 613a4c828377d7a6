"""Console output shared by the commands: progress bars and tables on stderr/stdout.

``-q`` makes ``stdout`` and ``stderr`` quiet, ``--json`` ``stdout`` (:func:`set_quiet`); what must
still be seen goes through ``errors``, and machine output through :func:`print_json`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)
#: Errors (a failed case, nothing scored): printed under ``-q`` too.
errors = Console(stderr=True, highlight=False)


def set_quiet(quiet: bool, *, json: bool = False) -> None:
    """Silence the human-readable lines: ``-q`` on stdout and stderr, ``--json`` on stdout (it holds the JSON only).

    Errors (``errors``) and :func:`print_json` still go out.
    """
    stdout.quiet = quiet or json
    stderr.quiet = quiet


def print_json(data: Any) -> None:
    """Machine output on stdout, printed under ``-q`` too; flushed here, so a closed pipe is met in the command."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def error_when_silent(command: str, message: str) -> None:
    """Where the result lines are silent (``-q``, ``--json``), an error they show (a failed case) on stderr."""
    if stdout.quiet:
        errors.print(escape(f"medseg {command}: error: {message}"), soft_wrap=True)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A ``callback(stage, done, total)`` drawing one bar per stage on stderr (nothing if disabled)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda stage, done, total: None
        return
    columns = (TextColumn("{task.description:<10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield update


@contextmanager
def status_line(enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A ``callback(text)`` showing what runs now as one spinner line on stderr (nothing if disabled)."""
    if not enabled or not sys.stderr.isatty():
        yield lambda text: None
        return
    with stderr.status("", spinner="dots") as status:
        yield lambda text: status.update(escape(text))
