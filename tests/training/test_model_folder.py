"""The model folder: written complete, read back alone, refused when damaged."""

from __future__ import annotations

import json

import pytest
import torch

from medseg.config import parse_pipeline
from medseg.errors import ModelError
from medseg.models.networks import build_network
from medseg.models.folder import export_model_folder, load_model
from tests.training.conftest import TINY


@pytest.fixture()
def folder(tmp_path):
    pipeline = parse_pipeline(
        TINY.replace("{1: liver, 2: spleen, 3: kidney}", "{1: liver, 2: {name: spleen, color: [1, 2, 3]}, 3: kidney}")
    )
    torch.manual_seed(0)
    network = build_network(pipeline.network, in_channels=1, out_channels=4)
    export_model_folder(
        tmp_path / "model",
        weights=network.state_dict(),
        pipeline=pipeline,
        pipeline_yaml="# not this pipeline\nname: other\n",  # does not describe it: written anew
        fingerprint={"num_cases": 6},
        metadata={"dataset": "Phantom", "best_epoch": 7},
    )
    return tmp_path / "model"


def test_a_model_folder_loads_with_nothing_else(folder):
    network, pipeline, facts = load_model(folder)
    assert not network.training and next(network.parameters()).device.type == "cpu"
    assert pipeline.name == "tiny" and facts["best_epoch"] == 7 and facts["num_classes"] == 4
    assert json.loads((folder / "labels.json").read_text())["2"] == {"name": "spleen", "color": [1, 2, 3]}
    assert json.loads((folder / "fingerprint.json").read_text()) == {"num_cases": 6}
    with torch.no_grad():
        assert network(torch.zeros(1, 1, 32, 32, 16)).shape == (1, 4, 32, 32, 16)


def test_replaced_weights_are_refused(folder):
    state = torch.load(folder / "model.pt", weights_only=True)
    state = {name: value + 1 for name, value in state.items()}
    torch.save(state, folder / "model.pt")
    with pytest.raises(ModelError, match="damaged or replaced"):
        load_model(folder)


def test_weights_that_do_not_fit_the_pipeline_are_refused(folder):
    facts = json.loads((folder / "model.json").read_text())
    del facts["model_sha256"]
    (folder / "model.json").write_text(json.dumps(facts))
    (folder / "pipeline.yaml").write_text((folder / "pipeline.yaml").read_text().replace("[8, 16, 32]", "[8, 16, 64]"))
    with pytest.raises(ModelError, match="do not fit the pipeline's network"):
        load_model(folder)


@pytest.mark.parametrize("missing", ["model.pt", "pipeline.yaml", "model.json"])
def test_an_incomplete_folder_is_refused(folder, missing):
    (folder / missing).unlink()
    with pytest.raises(ModelError, match=f"{missing} is missing"):
        load_model(folder)


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(ModelError, match="no model folder there"):
        load_model(tmp_path / "nothing")
