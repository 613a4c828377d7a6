"""``medseg review OUT``: a local web page to look through a batch case by case and record decisions."""

from __future__ import annotations

import argparse
import signal
from pathlib import Path

HELP = "review a prediction output folder in the browser: scans with their masks, decisions into OUT/review.csv"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "review",
        help=HELP,
        description=HELP + ". Starts a small web server on this machine (127.0.0.1 unless --host says "
        "otherwise) and prints its address: a case list with the flagged cases marked, each scan with its "
        "mask in axial, coronal and sagittal views (NiiVue, shipped with medseg), opacity and CT window "
        "presets, and buttons (keys a, r, e) marking a case accepted, rejected or needs-edit with a note. "
        "Decisions are saved to OUT/review.csv at once and read back when the server starts again; no "
        "other file in OUT is written. Ctrl-C stops it. Exit code 0: stopped; 1: the folder could not "
        "be read or the port bound; 2: usage error.",
    )
    parser.add_argument("folder", type=Path, metavar="OUT", help="the output folder of medseg predict")
    parser.add_argument("--port", type=int, default=8765, metavar="P", help="the port (default 8765; 0: any free port)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="H",
        help="the address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from medseg.cli._render import stderr, stdout
    from medseg.workflows.review import review_server

    if not args.folder.exists():
        raise FileNotFoundError(f"{args.folder}: no such file or folder")
    server = review_server(args.folder, host=args.host, port=args.port)
    cases = server.app.batch.cases
    flagged = sum(c.flagged for c in cases)
    stdout.print(
        f"reviewing {len(cases)} case(s), {flagged} flagged; decisions go to {escape(str(server.app.decisions.path))}"
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        stderr.print(f"[yellow]warning:[/] listening on {escape(args.host)}: others on the network can see these scans")
    stdout.print(f"open {server.url} in a browser; Ctrl-C stops", markup=False)
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as Ctrl-C does, removing the scan cache
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        stdout.print("stopped")
    finally:
        server.server_close()
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
