"""The ``medseg`` command line: thin over the library, quick to start.

Each sub-command lives in its own module with ``add_parser`` and ``run``; heavy
imports happen inside ``run`` so that ``medseg --help`` is instant. Errors the
user can fix print one line and exit non-zero; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from medseg import __version__
from medseg.cli import completion, convert, demo, doctor, evaluate, info, listen, pacs, plan, predict, train

COMMANDS = (info, convert, plan, train, predict, evaluate, pacs, listen, demo, doctor, completion)

# Exit codes.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medseg",
        description="Segment volumetric medical scans (CT, MRI); read and write DICOM, NIfTI, NRRD and MHA "
        "with their geometry intact.",
    )
    parser.add_argument("--version", action="version", version=f"medseg {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug logs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bars")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


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
    if not args.debug:
        logging.captureWarnings(True)
        logging.getLogger("py.warnings").setLevel(logging.ERROR)
        logging.getLogger("pydicom").setLevel(logging.ERROR)
    from medseg.errors import ConfigError, MedsegError

    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("medseg: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, FileNotFoundError) as exc:
        if args.debug:
            raise
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (MedsegError, OSError) as exc:  # OSError: unwritable output, full disk, ...
        if args.debug:
            raise
        print(f"medseg {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
