"""medseg runs nnU-Net v2 models as ``nnUNetv2_predict`` does: models trained by nnU-Net's own tools
(custom trainer name), the same NIfTI inputs, at least 99.9% of voxels identical per case."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest

from medseg.cli import main
from medseg.inference.engine import InferenceSettings
from medseg.io import read_image, read_nifti
from medseg.io.seg import read_seg
from medseg.model_formats import ModelOptions, describe_model, load_segmenter
from tests.factories import write_series

pytest.importorskip("nnunetv2")

#: The share of voxels that must equal nnU-Net's labels, per case.
AGREEMENT = 0.999


def _agreement(segmenter, reference, predictions=None) -> dict[str, float]:
    figures = {}
    for case in reference.cases:
        image = read_image(reference.inputs / f"{case}_0000.nii.gz")
        labels = segmenter.segment(image)
        expected = read_nifti((predictions or reference.predictions) / f"{case}.nii.gz")
        assert labels.geometry.is_close(expected.geometry)
        figures[case] = float(np.mean(labels.array[0] == expected.array[0]))
    print(f"agreement with nnUNetv2_predict per case: {figures}")
    return figures


def test_a_3d_model_agrees_with_nnunetv2_predict(nnunet_model):
    segmenter = load_segmenter(nnunet_model.model_folder, device="cpu")
    assert segmenter.model.trainer == nnunet_model.model_folder.name.split("__")[0]  # a custom trainer's model
    assert segmenter.mirror_axes == (0, 1, 2) and segmenter.overlap == 0.5
    described = describe_model(nnunet_model.model_folder)  # `medseg model` counts nnU-Net's own checkpoint
    assert described.parameters == sum(p.numel() for p in segmenter.model.network.parameters())
    figures = _agreement(segmenter, nnunet_model)
    assert min(figures.values()) >= AGREEMENT, figures
    names = {s.name: s for s in segmenter.segments}
    assert names["liver"].type == ("10200004", "SCT", "Liver")


def test_without_mirroring_it_agrees_with_disable_tta(nnunet_model, tmp_path):
    from tests.nnunet_reference import predict_reference

    out = predict_reference(
        nnunet_model.env, nnunet_model.model_folder, nnunet_model.inputs, tmp_path / "no_tta", use_mirroring=False
    )
    segmenter = load_segmenter(nnunet_model.model_folder, device="cpu", settings=InferenceSettings(tta=False))
    assert segmenter.mirror_axes == ()
    figures = _agreement(segmenter, nnunet_model, out)
    assert min(figures.values()) >= AGREEMENT, figures


def test_folds_are_averaged_and_a_missing_fold_is_one_line(nnunet_model, tmp_path, capsys):
    model = tmp_path / nnunet_model.model_folder.parent.name / nnunet_model.model_folder.name
    shutil.copytree(nnunet_model.model_folder, model)
    shutil.copytree(model / "fold_0", model / "fold_1")
    both = load_segmenter(model, device="cpu", settings=InferenceSettings(tta=False))
    assert both.folds == (0, 1)
    one = load_segmenter(model, device="cpu", settings=InferenceSettings(tta=False), options=ModelOptions(folds=(1,)))
    image = read_image(next(nnunet_model.inputs.glob("*.nii.gz")))
    np.testing.assert_array_equal(both.segment(image).array, one.segment(image).array)  # the same weights twice
    code = main(
        ["predict", str(nnunet_model.inputs), "--model", str(model), "--folds", "0,3", "-o", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no fold 3 with checkpoint_final.pth (folds present: 0, 1)" in err


def test_a_dicom_series_through_predict_gives_nnunets_labels_and_a_seg(nnunet_model, tmp_path):
    case = nnunet_model.cases[0]
    image = read_image(nnunet_model.inputs / f"{case}_0000.nii.gz")
    dicom = tmp_path / "dicom" / case
    write_series(image, dicom)
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(dicom),
            "--model",
            str(nnunet_model.model_folder),
            "-o",
            str(out),
            "--format",
            "nifti,seg",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    mask = read_nifti(out / case / f"{case}.nii.gz")
    expected = read_nifti(nnunet_model.predictions / f"{case}.nii.gz")
    agreement = float(np.mean(mask.array[0] == expected.array[0]))
    print(f"DICOM route vs nnUNetv2_predict on the NIfTI: {agreement:.6f}")
    assert mask.geometry.is_close(expected.geometry, tolerance_mm=1e-3) and agreement >= AGREEMENT
    seg = read_seg(out / case / f"{case}.seg.dcm", reference=mask.geometry)
    np.testing.assert_array_equal(seg.array[0], mask.array[0])  # the SEG holds the same labels, same numbers
    assert {s.name for s in seg.segments} <= {"liver", "spleen", "kidney"} and seg.segments
    algorithm = pydicom.dcmread(out / case / f"{case}.seg.dcm").SegmentSequence[0]
    assert (
        algorithm.SegmentationAlgorithmIdentificationSequence[0].AlgorithmName == nnunet_model.model_folder.parent.name
    )


@pytest.mark.parametrize("variant", ["2d", "regions", "mr"])
def test_2d_region_based_and_mr_models_agree_too(nnunet_models, variant):
    """A 2D configuration (slice by slice), regions painted in regions_class_order, z-scores of an MR."""
    reference = nnunet_models(variant)
    segmenter = load_segmenter(reference.model_folder, device="cpu")
    plan = segmenter.model.plan
    assert {
        "2d": plan.is_2d,
        "regions": plan.regions is not None,
        "mr": plan.normalization[0] == "ZScoreNormalization",
    }[variant]
    figures = _agreement(segmenter, reference)
    assert min(figures.values()) >= AGREEMENT, figures


def test_a_scan_with_other_channels_is_one_failed_case(nnunet_model, tmp_path):
    from medseg.io import write_image
    from medseg.volume import Volume

    image = read_image(next(nnunet_model.inputs.glob("*.nii.gz")))
    two = Volume(np.concatenate([image.array, image.array]), image.geometry)
    write_image(two, tmp_path / "in" / "two.nii.gz")
    code = main(["predict", str(tmp_path / "in"), "--model", str(nnunet_model.model_folder), "-o", str(tmp_path / "o")])
    assert code == 4
    manifest = (tmp_path / "o" / "manifest.csv").read_text()
    assert "the image has 2 channel(s); the model takes 1 (CT)" in manifest


def test_several_models_merge_into_one_map(nnunet_model, tmp_path, capsys):
    """The bundled phantom model and the nnU-Net model name the same organs: one label each, the bundled model first."""
    case = nnunet_model.cases[0]
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(nnunet_model.inputs / f"{case}_0000.nii.gz"),
            "--model",
            "bundled",
            "--model",
            str(nnunet_model.model_folder),
            "-o",
            str(out),
            "--device",
            "cpu",
            "--json",
        ]
    )
    assert code == 0
    (result,) = json.loads(capsys.readouterr().out)["cases"]
    assert set(result["volumes_ml"]) <= {"liver", "spleen", "kidney"} and result["volumes_ml"]
    merged = read_nifti(out / f"{case}.nii.gz")
    alone = read_nifti(nnunet_model.predictions / f"{case}.nii.gz")
    assert set(np.unique(merged.array[0])) <= {0, 1, 2, 3}
    # wherever nnU-Net found an organ, the merged map has an organ (the bundled model's where they disagree)
    assert np.all(merged.array[0][alone.array[0] > 0] > 0)
