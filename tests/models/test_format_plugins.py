"""A fourth model format, written in the test suite alone, runs through ``medseg model`` and ``medseg predict``.

The toy format is a folder holding ``threshold.json``: every voxel above the threshold gets the one
label. It is installed as another package would install it, a module and a ``*.dist-info`` folder
whose ``entry_points.txt`` names it in the ``medseg.model_formats`` group, on ``PYTHONPATH`` of a
medseg started as a user starts it; nothing in ``medseg/`` knows it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from medseg.errors import ModelError
from medseg.io import read_image, write_image
from medseg.model_formats import (
    ModelOptions,
    describe_model,
    format_of,
    formats,
    load_segmenter,
    register_format,
    registry,
)
from medseg.volume import VolumeKind
from tests.factories import phantom_pair

REPO = Path(__file__).resolve().parents[2]

TOY_MODULE = textwrap.dedent(
    '''
    """A toy model format: threshold.json holds a threshold and a label name."""

    import json
    from pathlib import Path

    import numpy as np

    from medseg.inference.foreign import ForeignSegmenter
    from medseg.models.info import ModelInfo


    class ThresholdSegmenter(ForeignSegmenter):
        def _predict(self, image, progress):
            settings = json.loads(Path(self.info.checkpoints[0]).read_text())
            labels = (image.channel(0) > settings["threshold"]).astype(np.uint8)
            return labels, np.full(labels.shape, 255, dtype=np.uint8)


    class ThresholdFormat:
        name = "toy-threshold"
        title = "a toy threshold model"
        expects = "a toy threshold folder (threshold.json)"

        def detect(self, path):
            return (path / "threshold.json").is_file()

        def describe(self, path, options):
            settings = json.loads((path / "threshold.json").read_text())
            return ModelInfo(
                kind=self.name,
                title=self.title,
                path=str(path),
                name=settings["name"],
                labels={1: settings["label"]},
                channels=["CT"],
                modality="CT",
                dimensions=3,
                checkpoints=[str(path / "threshold.json")],
                runnable=True,
            )

        def check(self, path, options):
            self.describe(path, options)

        def load(self, path, *, device, settings, options):
            return ThresholdSegmenter(self.describe(path, options), device=device, settings=settings)
    '''
)


@pytest.fixture
def toy_plugin(tmp_path) -> Path:
    """A folder to put on PYTHONPATH: the toy module and its distribution's entry point."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "medseg_toy_format.py").write_text(TOY_MODULE)
    dist = site / "medseg_toy_format-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: medseg-toy-format\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[medseg.model_formats]\ntoy-threshold = medseg_toy_format:ThresholdFormat\n"
    )
    return site


@pytest.fixture
def toy_model(tmp_path) -> Path:
    folder = tmp_path / "toy-model"
    folder.mkdir()
    (folder / "threshold.json").write_text(json.dumps({"name": "bright things", "label": "bright", "threshold": 100}))
    return folder


def medseg(*args: str, plugin: Path) -> subprocess.CompletedProcess:
    """``python -m medseg ARGS`` with the toy plugin installed on the path."""
    path = os.pathsep.join([str(plugin), str(REPO), os.environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "medseg", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": path},
    )


def test_medseg_model_describes_the_installed_format(toy_plugin, toy_model):
    shown = medseg("model", str(toy_model), plugin=toy_plugin)
    assert shown.returncode == 0, shown.stderr
    assert "a toy threshold model (bright things)" in shown.stdout
    assert "1 bright" in shown.stdout
    as_json = json.loads(medseg("model", str(toy_model), "--json", plugin=toy_plugin).stdout)
    assert as_json["kind"] == "toy-threshold" and as_json["labels"] == {"1": "bright"}


def test_medseg_predict_runs_the_installed_format_on_the_scans_grid(toy_plugin, toy_model, tmp_path):
    image, _ = phantom_pair()
    inputs = tmp_path / "in"
    inputs.mkdir()
    write_image(image, inputs / "abdomen_0000.nii.gz")
    done = medseg(
        "predict", "--model", str(toy_model), str(inputs), "--output", str(tmp_path / "out"), plugin=toy_plugin
    )
    assert done.returncode == 0, done.stderr
    mask = read_image(tmp_path / "out" / "abdomen.nii.gz", kind=VolumeKind.LABEL)
    np.testing.assert_allclose(mask.geometry.affine, image.geometry.affine, atol=1e-4)
    np.testing.assert_array_equal(mask.channel(0), (image.channel(0) > 100).astype(np.uint8))
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["model"]["name"] == "bright things"


def test_doctor_lists_the_installed_format_and_a_broken_one(toy_plugin, tmp_path):
    broken = toy_plugin / "medseg_broken_format-1.0.dist-info"
    broken.mkdir()
    (broken / "METADATA").write_text("Metadata-Version: 2.1\nName: medseg-broken-format\nVersion: 1.0\n")
    (broken / "entry_points.txt").write_text("[medseg.model_formats]\nbroken = medseg_no_such_module:Format\n")
    report = json.loads(medseg("doctor", "--json", plugin=toy_plugin).stdout)
    names = [f["name"] for f in report["model_formats"]["formats"]]
    assert names == ["medseg", "nnunet", "monai-bundle", "toy-threshold"]
    assert any("broken" in line and "medseg_no_such_module" in line for line in report["model_formats"]["failed"])
    assert any("medseg_no_such_module" in problem for problem in report["problems"])


def test_a_notebook_registers_a_format_in_process(toy_model, tmp_path, monkeypatch):
    (tmp_path / "medseg_toy_format.py").write_text(TOY_MODULE)  # importable, not installed
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registered", [])
    monkeypatch.setattr(registry, "_plugins", None)
    from medseg_toy_format import ThresholdFormat

    with pytest.raises(ModelError, match="not a model medseg knows"):
        format_of(toy_model)
    register_format(ThresholdFormat())
    assert formats()[-1].name == "toy-threshold"
    assert describe_model(toy_model).describe() == "a toy threshold model (bright things)"
    image, _ = phantom_pair()
    labels = load_segmenter(toy_model, device="cpu").segment(image)
    np.testing.assert_allclose(labels.geometry.affine, image.geometry.affine)
    assert labels.geometry.shape == image.geometry.shape and int(labels.array.sum()) == int(
        (image.channel(0) > 100).sum()
    )
    with pytest.raises(ModelError, match="registered already"):
        register_format(ThresholdFormat())
    with pytest.raises(ModelError, match="not a model format"):
        register_format(object())


def test_a_path_no_format_claims_names_what_each_expects(tmp_path):
    with pytest.raises(ModelError) as raised:
        describe_model(tmp_path, ModelOptions())
    message = str(raised.value)
    for model_format in formats():
        assert model_format.expects in message
