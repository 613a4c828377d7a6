"""The ``medseg`` command line: thin over the library, quick to start.

Each sub-command lives in its own module with ``add_parser`` and ``run``; heavy
imports happen inside ``run`` so that ``medseg --help`` is instant. Errors print one
line and exit with a code of the table in :mod:`medseg.cli.exits`; ``--debug`` shows
tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from medseg import __version__
from medseg.cli import (
    completion,
    convert,
    demo,
    doctor,
    evaluate,
    info,
    listen,
    model,
    pacs,
    plan,
    predict,
    report,
    review,
    train,
)
from medseg.cli.exits import Exit, exit_for

COMMANDS = (
    info,
    convert,
    plan,
    train,
    predict,
    evaluate,
    pacs,
    listen,
    demo,
    doctor,
    completion,
    report,
    review,
    model,
)

# Exit codes (medseg.cli.exits has the table).
EXIT_OK, EXIT_FAILED, EXIT_USAGE = Exit.OK, Exit.FAILED, Exit.USAGE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Segment volumetric medical scans (CT, MRI); read and write DICOM, NIfTI, NRRD and MHA "
        "with their geometry intact.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    _global_options(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    for command_parser in _subparsers(parser):
        group = command_parser.add_argument_group("global options (also before the command)")
        _global_options(group, after_command=True)
    return parser


def _global_options(container: Any, *, after_command: bool = False) -> None:
    """``-v``, ``-q`` and ``--debug`` on a parser or group. After the command their default is
    SUPPRESS, so that an option given before the command is kept when it is not repeated."""
    defaults = dict.fromkeys(("verbose", "quiet", "debug"), argparse.SUPPRESS) if after_command else {}
    verbose, quiet = defaults.get("verbose", 0), defaults.get("quiet", False)
    container.add_argument("-v", "--verbose", action="count", default=verbose, help="more log output (-vv: debug)")
    container.add_argument(
        "-q", "--quiet", action="store_true", default=quiet, help="only errors: no result lines, warnings or progress"
    )
    container.add_argument(
        "--debug", action="store_true", default=defaults.get("debug", False), help="show tracebacks and debug logs"
    )


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every sub-command's parser, nested ones (``pacs query``) included."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found.append(child)
                found.extend(_subparsers(child))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    level = logging.DEBUG if args.debug or args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    if args.quiet:
        level = logging.ERROR
    logging.basicConfig(level=level, format="medseg: %(levelname)s: %(message)s", stream=sys.stderr)
    from medseg.cli._render import set_quiet

    set_quiet(args.quiet, json=getattr(args, "json", False))  # human-readable lines; errors and JSON still print
    if not args.debug:
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return Exit.INTERRUPTED
    except BrokenPipeError:  # the reader went away (`medseg info DIR --json | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return EXIT_OK
    except Exception as exc:
        if args.debug:
            raise
        code = exit_for(exc)
        if code is Exit.FAILED and not isinstance(exc, OSError):
            what = f"unexpected error: {type(exc).__name__}: {exc} (--debug shows where)"
        else:
            what = f"error: {exc}"
        print(f"medseg {args.command}: {what}", file=sys.stderr)
        return int(code)


if __name__ == "__main__":
    sys.exit(main())
