"""``medseg pacs query|pull|push|segment|echo``: work with a PACS over DICOMweb or DIMSE."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from medseg.cli._models import add_model_arguments
from medseg.cli.exits import Exit, batch_exit

HELP = "query, pull from, push to and segment series in a PACS (DICOMweb or DIMSE)"
CONNECTION_HELP = (
    "The PACS is described once: a YAML file (--pacs, or $MEDSEG_PACS_FILE), MEDSEG_PACS_* environment variables "
    "(MEDSEG_PACS_URL, MEDSEG_PACS_AE_TITLE, ...; MEDSEG_PACS_PASSWORD/_TOKEN for secrets), or each action's "
    "connection flags (see `medseg pacs ACTION --help`); "
    "flags win over variables, variables over the file. Secrets are read from an environment variable or a "
    "file, never from the command line, and never shown. See docs/pacs.md."
)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "pacs",
        help=HELP,
        description=HELP + ". " + CONNECTION_HELP + " Exit code 0: done; 1: the PACS failed or some series "
        "failed; 2: usage or settings error.",
    )
    commands = parser.add_subparsers(dest="pacs_command", metavar="ACTION", required=True)
    connection = _connection_parser()
    filters = _filter_parser()

    echo = commands.add_parser(
        "echo", parents=[connection], help="check the connection and credentials (C-ECHO, or a QIDO-RS search)"
    )
    echo.set_defaults(run=run_echo)

    query = commands.add_parser(
        "query",
        parents=[connection, filters],
        help="list the series matching the filters (QIDO-RS or C-FIND)",
        description="List the series matching the filters (QIDO-RS, or C-FIND at study then series level): "
        "study date, patient ID, modality, series number and description, instances, UIDs.",
    )
    query.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    query.set_defaults(run=run_query)

    pull = commands.add_parser(
        "pull",
        parents=[connection, filters],
        help="download the series matching the filters (WADO-RS or C-GET)",
        description="Download every series matching the filters (WADO-RS, or C-GET) into "
        "OUT/<study UID>/<series UID>/, one file per instance named by its SOP Instance UID. At least one "
        "filter is needed.",
    )
    pull.add_argument("--output", "-o", type=Path, required=True, metavar="OUT", help="the output folder")
    pull.set_defaults(run=run_pull)

    push = commands.add_parser(
        "push",
        parents=[connection],
        help="send DICOM files or folders (STOW-RS or C-STORE)",
        description="Send DICOM files, or every file in folders (recursively; hidden files left out), "
        "with STOW-RS or C-STORE.",
    )
    push.add_argument("paths", type=Path, nargs="+", metavar="PATH", help="DICOM files or folders")
    push.set_defaults(run=run_push)

    segment = commands.add_parser(
        "segment",
        parents=[connection, filters],
        help="segment the series matching the filters and push the results back",
        description="For every image series matching the filters (SEG, RTSTRUCT, SR, ... are left out): pull "
        "it into WORK, segment it with the model, push the SEG (and RTSTRUCT) back. A series for which the "
        "PACS already has a SEG from this model (same pipeline name and version, which includes a hash of the "
        "weights) referencing it is skipped unless --force. WORK/manifest.csv lists every series (pushed, "
        "skipped, failed); re-running finishes what is missing.",
    )
    add_model_arguments(segment)
    segment.add_argument(
        "--format", default="seg", metavar="LIST", help="comma-separated: seg, rtstruct (pushed), nifti (kept in WORK)"
    )
    segment.add_argument(
        "--work",
        "--output",
        "-o",
        type=Path,
        default=Path("medseg-pacs-work"),
        metavar="DIR",
        help="work folder: results, manifest.csv (default: %(default)s)",
    )
    segment.add_argument("--force", action="store_true", help="segment and push again series already segmented")
    segment.add_argument("--keep-images", action="store_true", help="keep the pulled images in WORK/images")
    segment.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="default: CUDA when available"
    )
    segment.set_defaults(run=run_segment)


def _connection_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("PACS connection")
    group.add_argument("--pacs", type=Path, metavar="FILE", help="PACS settings (YAML; see docs/pacs.md)")
    group.add_argument("--url", help="DICOMweb service root, e.g. https://pacs.example.org/dicom-web")
    group.add_argument("--username", help="HTTP Basic user name (the password from --password-env/--password-file)")
    group.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    group.add_argument("--password-file", metavar="FILE", help="file holding the password")
    group.add_argument("--token-env", metavar="VAR", help="environment variable holding a bearer token")
    group.add_argument("--token-file", metavar="FILE", help="file holding a bearer token")
    group.add_argument("--verify", metavar="true|false|CA_FILE", help="TLS verification (default: true)")
    group.add_argument("--ae-title", metavar="AET", help="DIMSE: the PACS's AE title")
    group.add_argument("--host", help="DIMSE: the PACS's host name or address")
    group.add_argument("--port", help="DIMSE: the PACS's port")
    group.add_argument("--calling-ae-title", metavar="AET", help="DIMSE: our AE title (default: MEDSEG)")
    group.add_argument("--timeout", metavar="S", help="seconds to wait for the PACS (default: 30)")
    group.add_argument(
        "--move-ae",
        metavar="AET",
        help="DIMSE: retrieve by C-MOVE to this AE title (medseg's own temporary Storage SCP; the PACS must "
        "know it, with this machine's address and --move-port) instead of C-GET",
    )
    group.add_argument("--move-port", metavar="PORT", help="DIMSE: the port medseg listens on for C-MOVE")
    group.add_argument("--tls", metavar="true|false", help="DIMSE: DICOM over TLS (the PACS checked against --verify)")
    group.add_argument("--certificate", metavar="PEM", help="DIMSE over TLS: our certificate, if the PACS asks for one")
    group.add_argument("--private-key", metavar="PEM", help="DIMSE over TLS: the key of --certificate")
    return parent


def _filter_parser() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("series filters (all must match; * and ? wildcards where the PACS supports them)")
    group.add_argument("--patient-id", metavar="ID")
    group.add_argument("--study-date", metavar="FROM-TO", help="YYYYMMDD, FROM-TO, FROM- or -TO")
    group.add_argument("--modality", metavar="MOD", help="e.g. CT")
    group.add_argument("--study-uid", metavar="UID")
    group.add_argument("--series-uid", metavar="UID")
    group.add_argument("--description", metavar="TEXT", help="series description, e.g. '*arterial*'")
    return parent


def settings_from_args(args: argparse.Namespace):  # -> medseg.pacs.config.PacsSettings
    """The PACS connection from ``--pacs``, the environment and the connection flags."""
    from medseg.workflows.pacs_transfer import SETTING_KEYS, settings

    return settings(args.pacs, {key: getattr(args, key, None) for key in SETTING_KEYS})


def quiet_libraries(args: argparse.Namespace) -> None:
    """Keep pynetdicom's and dicomweb-client's own log lines off the console unless debugging."""
    if not (args.debug or args.verbose > 1):
        for name in ("pynetdicom", "dicomweb_client"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _query(args: argparse.Namespace):  # -> medseg.pacs.model.SeriesQuery
    from medseg.workflows.pacs_transfer import series_query

    return series_query(
        patient_id=args.patient_id,
        study_date=args.study_date,
        modality=args.modality,
        study_uid=args.study_uid,
        series_uid=args.series_uid,
        description=args.description,
    )


def run_echo(args: argparse.Namespace) -> int:
    from medseg.cli._render import stdout
    from medseg.workflows.pacs_transfer import echo

    quiet_libraries(args)
    settings = settings_from_args(args)
    echo(settings)
    stdout.print(f"{settings.describe()}: ok")
    return 0


def run_query(args: argparse.Namespace) -> int:
    import json

    from medseg.cli._render import stdout
    from medseg.workflows.pacs_transfer import query

    quiet_libraries(args)
    found = query(settings_from_args(args), _query(args))
    if args.json:
        print(json.dumps([s.to_dict() for s in found], indent=2))
        return 0
    if not found:
        stdout.print("no series found")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("study date", "patient ID", "modality", "#", "description", "instances"):
        table.add_column(column)
    table.add_column("series UID", no_wrap=True)
    for s in found:
        table.add_row(
            s.study_date,
            s.patient_id,
            s.modality,
            "" if s.series_number is None else str(s.series_number),
            s.description,
            "" if s.instances is None else str(s.instances),
            s.series_uid,
        )
    # Piped into a file or another program: no terminal width to fit, so UIDs are never cut.
    (stdout if stdout.is_terminal else Console(width=1000, highlight=False, quiet=stdout.quiet)).print(table)
    stdout.print(f"{len(found)} series in {len({s.study_uid for s in found})} study(ies)")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from medseg.cli._render import stdout
    from medseg.workflows.pacs_transfer import PulledSeries, pull

    def show(done: PulledSeries) -> None:
        what = f"{done.series.modality} {done.series.description}"
        stdout.print(f"[green]pulled[/] {done.instances:>4} instance(s) {what} -> {done.folder}")

    quiet_libraries(args)
    report = pull(settings_from_args(args), _query(args), args.output, on_series=show)
    if not report.series:
        stdout.print("no series found")
        return Exit.USAGE
    stdout.print(f"{len(report.series)} series pulled into {args.output}")
    return Exit.OK


def run_push(args: argparse.Namespace) -> int:
    from medseg.cli._render import error_when_silent, stdout
    from medseg.workflows.pacs_transfer import push

    quiet_libraries(args)
    files, report = push(settings_from_args(args), args.paths)
    for path, reason in report.failed:
        stdout.print(f"[red]failed[/] {path}: {reason}")
        error_when_silent("pacs", f"{path}: {reason}")
    failed = f", {len(report.failed)} failed" if report.failed else ""
    stdout.print(f"{len(report.stored)} instance(s) stored{failed}")
    return batch_exit(failed=len(report.failed), total=len(files))


def run_segment(args: argparse.Namespace) -> int:
    from medseg.cli._models import model_argument, model_options, resolve_models
    from medseg.cli._render import error_when_silent, progress_bar, stdout
    from medseg.workflows.pacs_segment import SegmentOptions, segment_series
    from medseg.workflows.pacs_transfer import connect

    quiet_libraries(args)
    models = resolve_models(args)
    formats = tuple(dict.fromkeys(f.strip().lower() for f in args.format.split(",") if f.strip()))
    options = SegmentOptions(
        formats=formats,
        force=args.force,
        keep_images=args.keep_images,
        device=args.device,
        model_options=model_options(args),
    )
    query = _query(args)
    with connect(settings_from_args(args)) as pacs, progress_bar(not args.quiet) as progress:
        report = segment_series(
            pacs, query, model=model_argument(models), work=args.work, options=options, progress=progress
        )
    style = {"pushed": "green", "skipped": "cyan", "failed": "red"}
    for result in report.results:
        s = result.series
        seconds = f" {result.seconds:.1f} s" if result.status == "pushed" else ""
        note = f" ({result.message})" if result.message else ""
        what = f"{s.modality} {s.description} {s.series_uid}"
        stdout.print(f"[{style[result.status]}]{result.status:>7}[/] {what}{seconds}{note}")
        if result.status == "failed":
            error_when_silent("pacs", f"{what}: {result.message}")
    counts = ", ".join(f"{report.count(status)} {status}" for status in style if report.count(status))
    manifest = report.work / "manifest.csv"
    stdout.print(f"{counts or 'no image series found'} in {report.seconds:.1f} s; manifest: {manifest}")
    return Exit.PARTIAL if report.failed else Exit.OK  # no new series is not an error for a job run by cron
