"""The README's commands and the bundled sample data stay true."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np

from medseg.io import read_image, read_nifti

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def test_readme_gives_setup_main_job_and_test_commands():
    setup, tests = _bash_blocks(README)[:2]
    assert "scripts/setup.sh" in setup and "medseg " in setup
    assert "pytest" in tests
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/setup.sh" in ci and tests.strip() in ci  # CI runs exactly the README's test command


def test_readme_main_job_runs_on_the_sample_data(tmp_path):
    setup = _bash_blocks(README)[0]
    main_job = setup.split("&&", 1)[1].split()
    assert main_job[0].endswith("medseg")
    medseg = str(Path(sys.executable).parent / "medseg")
    output = tmp_path / main_job[-1]
    result = subprocess.run(
        [medseg, *main_job[1:-1], str(output)], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (written,) = output.glob("*.nii.gz")
    image = read_nifti(written)
    reference = read_nifti(REPO / "sample_data" / "ct_phantom" / "image.nii.gz")
    np.testing.assert_array_equal(image.array, reference.array)
    assert image.geometry.is_close(reference.geometry)


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
            for match in re.finditer(r"medseg (info|convert|plan|train|predict|evaluate)\b([^`|]*)", line):
                command = match.group(1)
                if command not in helps:
                    helps[command] = subprocess.run(
                        [medseg, command, "--help"], capture_output=True, text=True, check=True
                    ).stdout
                for option in re.findall(r"(--[a-z][a-z-]+)", " ".join(shlex.split(match.group(2), posix=False))):
                    assert option in helps[command], f"{doc.name}: {command} {option} not in --help"
    assert helps  # the docs do quote commands


def test_pipeline_reference_is_generated_from_the_current_schema():
    from medseg.config.reference import reference

    assert (REPO / "docs" / "pipelines.md").read_text() == reference(), "run: python -m medseg.config.reference > docs/pipelines.md"
