"""Loading nnU-Net v2 folders: plans of every vintage, regions, and one line for what medseg does not run."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from medseg.errors import ModelError
from medseg.model_formats import describe_model, load_segmenter
from medseg.models.nnunet import build_network, read_plan
from tests.models.test_formats import DATASET, PLANS

pytest.importorskip("dynamic_network_architectures")

# A 3-stage plain U-Net in the plans layout nnU-Net wrote before 2.4 (no "architecture" entry).
OLD_STYLE = {
    "patch_size": [16, 32, 32],
    "spacing": [2.5, 0.8, 0.8],
    "normalization_schemes": ["CTNormalization"],
    "use_mask_for_norm": [False],
    "UNet_class_name": "PlainConvUNet",
    "UNet_base_num_features": 4,
    "unet_max_num_features": 16,
    "n_conv_per_stage_encoder": [2, 2, 2],
    "n_conv_per_stage_decoder": [2, 2],
    "num_pool_per_axis": [2, 2, 2],
    "conv_kernel_sizes": [[3, 3, 3]] * 3,
    "pool_op_kernel_sizes": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
}


def _model(tmp_path, config: dict, dataset: dict = DATASET, name: str = "3d_fullres", weights=None):
    plans = copy.deepcopy(PLANS)
    plans["configurations"][name] = config
    plans["foreground_intensity_properties_per_channel"] = {
        "0": {"mean": 50.0, "std": 100.0, "percentile_00_5": -900.0, "percentile_99_5": 900.0}
    }
    folder = tmp_path / "Dataset017_Abdomen" / f"nnUNetTrainerCustom__nnUNetPlans__{name}"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    if weights is None:
        weights = build_network(read_plan(folder, name)).state_dict()
    checkpoint = {
        "network_weights": weights,
        "trainer_name": "nnUNetTrainerCustom",
        "init_args": {"configuration": name},
        "inference_allowed_mirroring_axes": (1, 2),
    }
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    return folder


def test_plans_from_before_the_architecture_entry_build_the_same_plain_unet(tmp_path):
    folder = _model(tmp_path, OLD_STYLE)
    segmenter = load_segmenter(folder, device="cpu")
    network = segmenter.model.network
    assert type(network).__name__ == "PlainConvUNet" and segmenter.mirror_axes == (1, 2)
    assert segmenter.model.trainer == "nnUNetTrainerCustom" and segmenter.num_classes == 4
    assert [s.name for s in segmenter.segments] == ["liver", "kidney", "tumour"]
    assert sum(p.numel() for p in network.parameters()) == describe_model(folder).parameters


def test_weights_that_do_not_fit_the_plans_are_one_line(tmp_path):
    other = dict(OLD_STYLE, UNet_base_num_features=8)
    weights = build_network(read_plan(_model(tmp_path / "a", other), "3d_fullres")).state_dict()
    folder = _model(tmp_path / "b", OLD_STYLE, weights=weights)
    with pytest.raises(ModelError, match=r"checkpoint_final.pth: the weights do not fit the network plans.json") as err:
        load_segmenter(folder, device="cpu")
    assert "\n" not in str(err.value)


def test_a_plans_file_cannot_name_code_outside_the_network_package(tmp_path):
    folder = _model(tmp_path, OLD_STYLE)
    plans = json.loads((folder / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["architecture"] = {
        "network_class_name": "os.system",
        "arch_kwargs": {},
        "_kw_requires_import": [],
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    with pytest.raises(ModelError, match="'os.system' is not from dynamic-network-architectures or torch.nn"):
        load_segmenter(folder, device="cpu")


def test_a_cascade_stage_is_refused_in_one_line(tmp_path):
    weights = build_network(read_plan(_model(tmp_path / "a", OLD_STYLE), "3d_fullres")).state_dict()
    folder = _model(
        tmp_path / "b", dict(OLD_STYLE, previous_stage="3d_lowres"), name="3d_cascade_fullres", weights=weights
    )
    with pytest.raises(ModelError, match="second stage of a cascade"):
        load_segmenter(folder, device="cpu")


def test_region_based_labels_are_named_by_the_region_each_channel_paints(tmp_path):
    dataset = dict(
        DATASET,
        labels={"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing": [3]},
        regions_class_order=[1, 2, 3],
    )
    plan = read_plan(_model(tmp_path, OLD_STYLE, dataset=dataset), "3d_fullres")
    assert plan.regions == (1, 2, 3) and plan.outputs == 3
    assert plan.labels == {1: "whole tumour", 2: "tumour core", 3: "enhancing"}
