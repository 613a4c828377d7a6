"""``medseg listen --model MODEL``: a DICOM Storage SCP that segments every series it receives."""

from __future__ import annotations

import argparse
from pathlib import Path

from medseg.cli._models import add_model_arguments

HELP = "receive series over DICOM (a Storage SCP), segment each one, and send the SEG on"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "listen",
        help=HELP,
        description=HELP + ". Workflow: (1) every instance a PACS or modality sends (C-STORE, several "
        "associations at once) is written to STORAGE/incoming/<series UID>/ and synced to disk before it is "
        "acknowledged; (2) a series counts as complete when no instance of it has arrived for --quiet-time "
        "seconds, and is then segmented in a worker thread (complete series queue up); (3) the SEG (and "
        "RTSTRUCT) go by C-STORE to --forward, or back to the sender (its AE title, at its address, on "
        "--return-port). STORAGE/state/<series UID>.json says where each series is: received, segmented, "
        "sent or failed; a restarted listener resumes every series left received or segmented, so stopping "
        "it (even killing it) loses nothing that was acknowledged. Declare the listener as a modality in the "
        "PACS (e.g. Orthanc's DicomModalities, see docs/pacs.md) and send it series, or C-MOVE them to it. "
        "Stop with Ctrl-C or SIGTERM; the series being segmented is finished first.",
    )
    add_model_arguments(parser)
    parser.add_argument("--ae-title", default="MEDSEG", metavar="AET", help="our AE title (default: %(default)s)")
    parser.add_argument("--port", type=int, default=11112, help="the port to listen on (default: %(default)s)")
    parser.add_argument("--host", default="0.0.0.0", help="the address to listen on (default: every interface)")
    parser.add_argument(
        "--storage",
        "--output",
        "-o",
        type=Path,
        default=Path("medseg-listen"),
        metavar="DIR",
        help="received instances, results, state (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet-time",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds without a new instance after which a series is complete (default: %(default)s)",
    )
    parser.add_argument(
        "--forward",
        metavar="PEER",
        help="where results go: AET@HOST:PORT, or a PACS settings file (DIMSE); default: back to the sender",
    )
    parser.add_argument(
        "--return-port",
        type=int,
        default=104,
        metavar="PORT",
        help="the sender's DICOM port, when results go back to it (default: %(default)s)",
    )
    parser.add_argument(
        "--allow", nargs="+", default=[], metavar="AET", help="accept associations only from these calling AE titles"
    )
    parser.add_argument("--format", default="seg", metavar="LIST", help="seg and/or rtstruct (default: seg)")
    parser.add_argument("--queue", type=int, default=16, metavar="N", help="complete series waiting, at most")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="series segmented at once, each in its own process (default: 1 on a GPU, else one per 4 CPU cores)",
    )
    parser.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when available"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import signal
    import threading

    from medseg.cli._models import model_argument, model_options, resolve_models
    from medseg.cli._render import stdout
    from medseg.cli.pacs import quiet_libraries
    from medseg.workflows.listen import Listener, ListenerOptions, default_workers, forward_peer

    quiet_libraries(args)
    models = resolve_models(args)
    forward = forward_peer(args.forward, calling_ae_title=args.ae_title) if args.forward else None
    formats = tuple(dict.fromkeys(f.strip().lower() for f in args.format.split(",") if f.strip()))
    options = ListenerOptions(
        storage=args.storage,
        ae_title=args.ae_title,
        port=args.port,
        host=args.host,
        quiet_time=args.quiet_time,
        allow=tuple(args.allow),
        forward=forward,
        return_port=args.return_port,
        formats=formats,
        queue_size=args.queue,
        workers=args.workers if args.workers is not None else default_workers(args.device),
        device=args.device,
        model_options=model_options(args),
    )

    def report(event: str, series_uid: str, message: str) -> None:
        style = {"received": "cyan", "segmented": "green", "sent": "green", "failed": "red"}.get(event, "yellow")
        stdout.print(f"[{style}]{event:>9}[/] {series_uid}" + (f" ({message})" if message else ""))

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    listener = Listener(options, model=model_argument(models), on_event=report)
    listener.start()
    where = forward.describe() if forward else f"the sender (port {args.return_port})"
    stdout.print(
        f"listening as {args.ae_title} on {args.host}:{listener.port}; "
        f"quiet time {args.quiet_time:g} s; results to {where}"
    )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        listener.stop()
    return 0
