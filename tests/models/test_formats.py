"""``medseg model``: medseg models, nnU-Net v2 trained-model folders and MONAI bundles, told apart by content."""

from __future__ import annotations

import json
import shutil
import zipfile

import pytest
import torch

from medseg.cli import main
from medseg.errors import ModelError
from medseg.model_formats import ModelOptions, describe_model
from medseg.models.bundled import bundled_model_path

# As nnU-Net v2 writes them (nnUNetv2_plan_and_preprocess; trimmed to what medseg reads and a little more).
PLANS = {
    "dataset_name": "Dataset017_Abdomen",
    "plans_name": "nnUNetPlans",
    "original_median_spacing_after_transp": [2.5, 0.8, 0.8],
    "image_reader_writer": "SimpleITKIO",
    "transpose_forward": [0, 1, 2],
    "transpose_backward": [0, 1, 2],
    "configurations": {
        "2d": {
            "data_identifier": "nnUNetPlans_2d",
            "batch_size": 12,
            "patch_size": [448, 448],
            "spacing": [0.8, 0.8],
            "normalization_schemes": ["CTNormalization"],
        },
        "3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres",
            "batch_size": 2,
            "patch_size": [96, 160, 160],
            "spacing": [2.5, 0.8, 0.8],
            "normalization_schemes": ["CTNormalization"],
        },
    },
}
DATASET = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "liver": 1, "kidney": 2, "tumour": [3]},
    "numTraining": 30,
    "file_ending": ".nii.gz",
}
METADATA = {  # as the MONAI Model Zoo's CT bundles lay it out
    "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema.json",
    "version": "0.5.1",
    "name": "Spleen CT segmentation",
    "task": "Decathlon spleen segmentation",
    "authors": "MONAI team",
    "network_data_format": {
        "inputs": {
            "image": {
                "type": "image",
                "format": "hounsfield",
                "modality": "CT",
                "num_channels": 1,
                "spatial_shape": [96, 96, 96],
                "channel_def": {"0": "image"},
            }
        },
        "outputs": {
            "pred": {
                "type": "image",
                "format": "segmentation",
                "num_channels": 2,
                "spatial_shape": [96, 96, 96],
                "channel_def": {"0": "background", "1": "spleen"},
            }
        },
    },
}


def small_state() -> dict:
    return torch.nn.Conv3d(1, 4, 3).state_dict()  # 4 x 27 + 4 = 112 weights


@pytest.fixture()
def nnunet(tmp_path):
    folder = tmp_path / "Dataset017_Abdomen" / "nnUNetTrainerNoMirroring__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    (folder / "fold_3").mkdir()
    (folder / "plans.json").write_text(json.dumps(PLANS))
    (folder / "dataset.json").write_text(json.dumps(DATASET))
    checkpoint = {"network_weights": small_state(), "trainer_name": "nnUNetTrainerNoMirroring", "current_epoch": 5}
    torch.save(checkpoint, folder / "fold_0" / "checkpoint_final.pth")
    torch.save(checkpoint, folder / "fold_3" / "checkpoint_best.pth")
    return folder


@pytest.fixture()
def bundle(tmp_path):
    folder = tmp_path / "spleen_ct_segmentation"
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "metadata.json").write_text(json.dumps(METADATA))
    (folder / "configs" / "inference.json").write_text(json.dumps({"network_def": {"_target_": "UNet"}}))
    torch.save(small_state(), folder / "models" / "model.pt")
    return folder


def test_a_medseg_model_and_its_run_folder(tmp_path):
    info = describe_model(bundled_model_path())
    assert info.kind == "medseg" and info.runnable and info.name == "medseg-phantom"
    assert info.labels == {1: "liver", 2: "spleen", 3: "kidney"} and info.channels == ["CT"]
    assert info.dimensions == 3 and info.patch_size == [48, 40, 20] and info.parameters > 500_000
    run = tmp_path / "run"
    shutil.copytree(bundled_model_path(), run / "model")
    assert describe_model(run).path == str(run / "model")


def test_an_nnunet_trained_model_folder(nnunet):
    info = describe_model(nnunet)
    assert info.kind == "nnunet" and info.runnable
    assert info.trainer == "nnUNetTrainerNoMirroring" and info.configuration == "3d_fullres"
    assert info.name == "Dataset017_Abdomen" and info.labels == {1: "liver", 2: "kidney", 3: "tumour"}
    assert info.channels == ["CT"] and info.modality == "CT" and info.dimensions == 3
    assert info.spacing == [2.5, 0.8, 0.8] and info.patch_size == [96, 160, 160]
    assert info.folds == [0] and info.parameters == 112  # fold 3 has only its best checkpoint
    assert describe_model(nnunet, ModelOptions(checkpoint="best")).folds == [3]
    assert "an nnU-Net v2 model (Dataset017_Abdomen; 3d_fullres; fold 0)" == info.describe()


def test_a_monai_bundle_folder_and_zip(bundle, tmp_path):
    info = describe_model(bundle)
    assert info.kind == "monai-bundle" and info.name == "Spleen CT segmentation" and info.version == "0.5.1"
    assert info.labels == {1: "spleen"} and info.modality == "CT" and info.patch_size == [96, 96, 96]
    assert info.parameters == 112 and info.source["authors"] == "MONAI team"
    archive = tmp_path / "spleen.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in bundle.rglob("*"):
            if path.is_file():
                zf.write(path, f"spleen_ct_segmentation/{path.relative_to(bundle)}")
    zipped = describe_model(archive)
    assert zipped.kind == "monai-bundle" and zipped.labels == {1: "spleen"}
    assert zipped.checkpoints == [f"{archive}!spleen_ct_segmentation/models/model.pt"]


def test_bad_models_are_one_line(tmp_path, nnunet):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="not a model medseg knows: expected a medseg model folder"):
        describe_model(tmp_path / "empty")
    with pytest.raises(ModelError, match="no model folder there"):
        describe_model(tmp_path / "nothing")
    (nnunet / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(ModelError, match=r"without any fold_\*/checkpoint_final.pth"):
        describe_model(nnunet)


def test_the_cli_describes_models_of_every_kind(nnunet, capsys):
    assert main(["model", str(nnunet), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["kind"] == "nnunet" and data["labels"] == {"1": "liver", "2": "kidney", "3": "tumour"}
    assert main(["model", "bundled"]) == 0
    text = capsys.readouterr().out
    assert "a medseg model (medseg-phantom)" in text and "1 liver, 2 spleen, 3 kidney" in text
