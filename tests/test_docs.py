"""The README's commands and the bundled sample data stay true."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from medseg.io import read_image, read_nifti

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


COMMAND_QUOTE = r"medseg (info|convert|plan|train|predict|evaluate|demo|doctor|completion|listen|report|review)\b([^`|]*)"


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_readme_gives_setup_main_job_and_test_commands():
    setup, tests = _bash_blocks(README)[:2]
    assert "scripts/setup.sh" in setup and "medseg " in setup
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/setup.sh" in ci and tests.strip() in ci  # CI runs exactly the README's test command


def test_readme_main_job_runs_on_the_sample_data(tmp_path):
    """The main job is ``medseg demo --output DIR``: the bundled model on the sample CT, Dice > 0.8 per label."""
    setup = _bash_blocks(README)[0]
    main_job = setup.split("&&", 1)[1].split()
    assert main_job[0].endswith("medseg") and main_job[1] == "demo"
    medseg = str(Path(sys.executable).parent / "medseg")
    output = tmp_path / main_job[-1]
    result = subprocess.run(
        [medseg, *main_job[1:-1], str(output)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads((output / "summary.json").read_text())
    assert set(summary["dice"]) == {"liver", "spleen", "kidney"}
    assert all(value > 0.8 for value in summary["dice"].values()), summary["dice"]
    for name, value in summary["dice"].items():
        assert f"{value:.3f}" in result.stdout  # the console shows the same numbers
    (mask,) = output.glob("masks/*/*.nii.gz")
    assert Path(summary["outputs"]["seg"]).is_file() and Path(summary["outputs"]["preview"]).is_file()
    reference = read_nifti(REPO / "sample_data" / "ct_phantom" / "image.nii.gz")
    assert read_nifti(mask).geometry.is_close(reference.geometry)


def test_sample_data_is_small_and_regenerates_identically(tmp_path):
    folder = REPO / "sample_data" / "ct_phantom"
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    assert size < 5e6
    subprocess.run([sys.executable, str(REPO / "sample_data" / "generate.py"), "--output", str(tmp_path)], check=True)
    for name in ("image.nii.gz", "labels.nii.gz"):
        kind = "label" if name.startswith("labels") else "image"
        new, old = read_image(tmp_path / "ct_phantom" / name, kind=kind), read_image(folder / name, kind=kind)
        np.testing.assert_array_equal(new.array, old.array)
        assert new.geometry.is_close(old.geometry)
    labels = read_image(folder / "labels.nii.gz", kind="label")
    assert set(np.unique(labels.array)) == {0, 1, 2, 3}


def test_docs_commands_name_real_options():
    """Every `medseg <command> --option` quoted in the docs exists in that command's --help."""
    medseg = str(Path(sys.executable).parent / "medseg")
    helps: dict[str, str] = {}
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            for match in re.finditer(COMMAND_QUOTE, line):
                command = match.group(1)
                if command not in helps:
                    helps[command] = subprocess.run(
                        [medseg, command, "--help"], capture_output=True, text=True, check=True
                    ).stdout
                for option in re.findall(r"(--[a-z][a-z-]+)", " ".join(shlex.split(match.group(2), posix=False))):
                    assert option in helps[command], f"{doc.name}: {command} {option} not in --help"
    assert helps  # the docs do quote commands


def test_docs_commands_are_real_commands():
    """Every ``medseg <word>`` in a bash/console block of the docs names a real sub-command."""
    from medseg.cli import build_parser
    from medseg.cli.completion import describe

    commands = {c.name for c in describe(build_parser())[1]}
    seen = set()
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for block in re.findall(r"```(?:bash|console)\n(.*?)```", doc.read_text(), re.S):
            for word in re.findall(r"(?:^|[\s/$])medseg ([a-z][a-z-]*)\b", block, re.M):
                assert word in commands, f"{doc.name}: `medseg {word}` is not a command"
                seen.add(word)
    assert {"demo", "doctor", "completion", "predict"} <= seen


def test_docs_index_maps_every_page():
    index = (REPO / "docs" / "index.md").read_text()
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"docs/index.md does not link {sorted(pages - linked)}"
    assert all((REPO / "docs" / name).is_file() for name in linked)
    assert "docs/index.md" in README


def test_pipeline_reference_is_generated_from_the_current_schema():
    from medseg.config.reference import reference

    assert (REPO / "docs" / "pipelines.md").read_text() == reference(), "run: python -m medseg.config.reference > docs/pipelines.md"
