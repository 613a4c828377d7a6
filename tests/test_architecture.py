"""The import direction (docs/architecture.md) holds, and `lint-imports` would catch a break of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (pip install -e '.[test]')")


def lint(where: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(where)}
    return subprocess.run(
        [str(LINT), "--config", str(where / "pyproject.toml"), "--no-cache"],
        cwd=where,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_import_contracts_hold():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("medseg/io/files.py", "import medseg.workflows.predict", "Layers"),
        ("medseg/inference/engine.py", "from medseg.training import loop", "Layers"),
        ("medseg/pacs/dimse.py", "import medseg.inference.engine", "Layers"),
        ("medseg/geometry.py", "import torch", "The core imports neither torch nor MONAI"),
        ("medseg/cli/info.py", "import medseg.io.dicom", "The CLI parses, calls one workflow and renders"),
        ("medseg/model_formats/native.py", "import medseg.workflows.predict", "Layers"),
    ],
)
def test_an_import_against_the_direction_fails_the_check(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "medseg", tmp_path / "medseg", ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # against the direction\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert f"{contract}" in result.stdout and "BROKEN" in result.stdout
    assert module.removesuffix(".py").replace("/", ".") in result.stdout


#: What a function-level import of a medseg module may be there to defer (the CLI's defer all of them at once,
#: so that `medseg --help` starts at once).
DEFERRED = ("torch", "MONAI", "highdicom", "pynetdicom", "dicomweb-client")


def test_a_lazy_import_of_medseg_says_what_it_defers():
    import ast

    unexplained = []
    for path in sorted((ROOT / "medseg").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "medseg").parts:
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("medseg"):
                    said = lines[node.lineno - 1] + lines[node.lineno - 2]
                    if not any(name in said for name in DEFERRED):
                        unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert unexplained == [], "lazy imports that defer none of " + ", ".join(DEFERRED)
