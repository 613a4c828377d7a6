"""``medseg doctor``: renders :func:`medseg.workflows.doctor.diagnose`'s report on this installation."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "check the installation: versions, CUDA, DICOM codecs, external tools, model formats and the bundled model"


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "doctor",
        help=HELP,
        description=HELP + ". Reports medseg, Python, PyTorch and MONAI versions; whether CUDA is usable "
        "(devices, CUDA version); the DICOM codec packages installed and which transfer syntaxes they "
        "decode; whether dciodvfy, dcmtk (storescu, findscu) and Orthanc are on PATH; and whether the "
        "bundled model loads and runs. Exit code 0: the essentials work (libraries, the codecs for the "
        "transfer syntaxes medseg reads, the bundled model); 1: something essential is broken (listed); "
        "no GPU and missing tools are reported, not failures.",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from medseg.cli._render import error_when_silent, print_json, status_line
    from medseg.workflows.doctor import diagnose

    with status_line(not args.quiet) as checking:
        report = diagnose(on_check=lambda name: checking(f"checking {name} ..."))
    if args.json:
        print_json(report)
    else:
        _render(report)
    for problem in report["problems"]:
        error_when_silent("doctor", problem)
    return 0 if report["ok"] else 1


def _render(report: dict[str, Any]) -> None:
    from rich.markup import escape

    from medseg.cli._render import stdout
    from medseg.workflows.doctor import TOOLS

    ok, no, info = "[green]ok  [/]", "[red]FAIL[/]", "[yellow]--  [/]"

    def line(mark: str, text: str) -> None:
        stdout.print(f"  {mark} {escape(text)}")

    medseg, python = report["medseg"], report["python"]
    stdout.print(escape(f"medseg {medseg['version']} ({medseg['path']})"))
    stdout.print(escape(f"python {python['version']} ({python['executable']}) on {python['platform']}"))
    stdout.print("\n[bold]libraries[/]")
    for name, lib in report["libraries"].items():
        line(ok if lib["ok"] else no, f"{name} {lib.get('version') or ''} {lib.get('error', '')}".rstrip())
    cuda = report["cuda"]
    stdout.print("\n[bold]GPU[/]")
    if cuda.get("available"):
        for device in cuda["devices"]:
            line(ok, f"cuda:{device['index']} {device['name']} ({device['memory_gib']} GiB)")
        line("    ", f"CUDA {cuda['torch_cuda_version']}, cuDNN {cuda['cudnn_version']}")
    else:
        build = cuda.get("torch_cuda_version") or "none (a CPU build of torch)"
        threads = cuda.get("cpu_threads", "?")
        line(info, f"no CUDA GPU usable; torch's CUDA: {build}; medseg runs on the CPU ({threads} threads)")
    codecs = report["codecs"]
    if codecs:
        stdout.print("\n[bold]DICOM codecs[/]")
        packages = ", ".join(f"{n} {v}" for n, v in codecs["packages"].items() if v)
        absent = ", ".join(n for n, v in codecs["packages"].items() if not v)
        line("    ", f"installed: {packages or 'none'}" + (f"; not installed: {absent}" if absent else ""))
        for entry in codecs["transfer_syntaxes"]:
            mark = ok if entry["decodable"] else no if entry["essential"] else info
            if entry["decodable"]:
                via = ", ".join(entry["plugins"]) or "built into pydicom"
            else:
                via = "needs " + (", ".join(entry["missing"]) or "a codec")
            line(mark, f"{entry['name']} ({via})")
    stdout.print("\n[bold]tools[/]")
    for name, path in report["tools"].items():
        line(ok if path else info, f"{name}: {path or 'not on PATH'} ({TOOLS[name]})")
    stdout.print("\n[bold]model formats[/] (what --model accepts)")
    for entry in report["model_formats"]["formats"]:
        line(ok, f"{entry['name']}: {entry['title']} ({entry['module']})")
    for failure in report["model_formats"]["failed"]:
        line(no, failure)
    model = report["bundled_model"]
    stdout.print("\n[bold]bundled model[/]")
    if model["ok"]:
        labels = ", ".join(model["labels"].values())
        line(ok, f"{model['name']} ({labels}) loads and runs in {model['seconds']} s: {model['path']}")
    else:
        line(no, model["error"])
    stdout.print()
    if report["ok"]:
        stdout.print("[green]the essentials work[/]; try: medseg demo")
    else:
        for problem in report["problems"]:
            stdout.print(f"[red]problem:[/] {escape(problem)}")
