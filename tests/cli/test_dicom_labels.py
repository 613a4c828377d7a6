"""A DICOM CT export with RTSTRUCT labels plans, trains and evaluates as the same data given as NIfTI does.

Four CT series (oblique, feet-first, plain axial, rotated), their ROIs named as four
institutions might ("LIVER", "liver_contour", "Leber"; "Milz"; "Niere links"), a liver
with a hole: ``medseg plan`` / ``train`` / ``predict`` / ``evaluate`` run on the folder
tree as exported, with no conversion step, and give what they give on the same scans
and label maps as an nnU-Net NIfTI dataset: the same plan, the same weights, the same
masks, the same scores against RTSTRUCT or NIfTI references.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medseg.cli import main
from medseg.config import parse_pipeline
from medseg.geometry import Geometry
from medseg.io import read_image
from medseg.io.dicom import read_dicom
from medseg.io.dicom_outputs import AlgorithmIdentity
from medseg.io.nifti import write_nifti
from medseg.io.rtstruct import write_rtstruct
from medseg.synthetic import PhantomSpec, make_phantom
from medseg.volume import Segment, Volume, VolumeKind
from tests import factories
from tests.training.conftest import TINY

LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
LABEL_NAMES = {"liver": ["liver*", "leber"], "spleen": ["spleen", "milz"], "kidney": ["kidney*", "niere*"]}
CASES = {  # case -> (grid, its ROI names for liver, spleen, kidney)
    "p1": (
        Geometry.from_spacing(
            (48, 40, 14),
            (5.5, 6.0, 8.0),
            (-132.0, -118.5, -52.0),
            factories.rotation("z", 17) @ factories.rotation("x", -9),
        ),
        ("Liver", "Spleen", "Kidney"),
    ),
    "p2": (
        factories.axial_geometry((46, 42, 14), (5.8, 5.7, 8.0), (130.0, -118.0, 52.0), feet_first=True),
        ("LIVER", "Milz", "Niere links"),
    ),
    "p3": (
        factories.axial_geometry((50, 40, 13), (5.3, 6.1, 8.5), (-132.0, -122.0, -50.0)),
        ("liver_contour", "spleen", "KIDNEY"),
    ),
    "p4": (None, ("Leber", "SPLEEN", "kidney_r")),  # phantom_pair's grid, rotated about z
    "p5": (
        factories.axial_geometry((48, 40, 14), (5.5, 6.0, 8.0), (-130.0, -120.0, -52.0)),
        ("Liver", "Spleen", "Kidney"),
    ),
}
TRAINING, TEST = ("p1", "p2", "p3", "p4"), "p5"


def _case(name: str, seed: int) -> tuple[Volume, np.ndarray]:
    geometry, _ = CASES[name]
    image, labels = (
        factories.phantom_pair(geometry, seed=seed) if geometry is None else make_phantom(seed, PhantomSpec(), geometry)
    )
    truth = labels.channel(0).astype(np.uint8)
    if name == "p1":  # a hole through the liver: an inner contour on every slice it crosses
        liver = np.argwhere(truth == 1)
        i, j, _ = np.rint(liver.mean(axis=0)).astype(int)
        hole = np.zeros_like(truth, dtype=bool)
        hole[i - 1 : i + 2, j - 1 : j + 2, :] = True
        truth[hole & (truth == 1)] = 0
    return image, truth


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> dict[str, Path]:
    """The DICOM tree (series + RTSTRUCT per case), the same data as NIfTI, and references of the test case."""
    root = tmp_path_factory.mktemp("dicom-labels")
    tree, nifti, refs = root / "export", root / "Dataset042_Nifti", root / "refs"
    for index, name in enumerate(CASES):
        image, truth = _case(name, seed=20 + index)
        factories.write_series(image, tree / name / "CT")
        scan = read_dicom(tree / name / "CT")
        names = CASES[name][1]
        spelled = scan.with_array(
            truth, kind=VolumeKind.LABEL, segments=tuple(Segment(n, s) for n, s in zip((1, 2, 3), names))
        )
        # The test case's references are named as `medseg predict` names its output: after the series' folder.
        rtstruct = tree / name / "RS.dcm" if name in TRAINING else refs / "dicom" / "CT.dcm"
        write_rtstruct(spelled, rtstruct, algorithm=AlgorithmIdentity("planning system", "1"))
        plain = scan.with_array(truth, kind=VolumeKind.LABEL)
        if name in TRAINING:
            write_nifti(scan, nifti / "imagesTr" / f"{name}_0000.nii.gz")
            write_nifti(plain, nifti / "labelsTr" / f"{name}.nii.gz")
        else:
            write_nifti(plain, refs / "nifti" / "CT.nii.gz")
    (tree / "dataset.json").write_text(json.dumps({"labels": LABELS, "label_names": LABEL_NAMES}))
    (refs / "dicom" / "dataset.json").write_text(json.dumps({"labels": LABELS, "label_names": LABEL_NAMES}))
    (nifti / "dataset.json").write_text(
        json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS, "numTraining": 4, "file_ending": ".nii.gz"})
    )
    return {"tree": tree, "nifti": nifti, "refs": refs, "root": root}


def test_a_dicom_export_with_rtstructs_trains_and_scores_as_its_nifti_twin(export, capsys):
    root = export["root"]
    runs = {}
    for form in ("tree", "nifti"):
        plan = root / f"{form}.yaml"
        assert main(["plan", str(export[form]), "--device", "cpu", "--cpu-speed", "1", "--output", str(plan)]) == 0
        runs[form] = plan.read_text()
    # The same plan but for the dataset's name: the fingerprints are the same.
    tree, nifti = (parse_pipeline(runs[form]) for form in ("tree", "nifti"))
    assert tree.model_copy(update={"name": nifti.name}) == nifti

    pipeline = root / "tiny.yaml"
    pipeline.write_text(TINY.replace("iterations_per_epoch: 3", "iterations_per_epoch: 2"))
    models = {}
    for form in ("tree", "nifti"):
        run = root / f"run-{form}"
        args = ["train", str(export[form]), "--output", str(run), "--pipeline", str(pipeline), "--device", "cpu"]
        assert main([*args, "--epochs", "1"]) == 0, capsys.readouterr().err
        models[form] = run / "model"
    # The scans' geometry reaches the two forms by different roads (DICOM positions; a NIfTI float32 affine), so
    # resampling differs in the last bits: the weights agree to float precision, not bit for bit.
    weights = {form: torch.load(models[form] / "model.pt", map_location="cpu", weights_only=True) for form in models}
    tree_state, nifti_state = (w.get("state_dict", w) for w in (weights["tree"], weights["nifti"]))
    assert tree_state.keys() == nifti_state.keys()
    for key in tree_state:
        torch.testing.assert_close(tree_state[key], nifti_state[key], rtol=1e-3, atol=1e-4, msg=key)

    scores = {}
    test_series = export["tree"] / TEST / "CT"
    for form in ("tree", "nifti"):
        out = root / f"pred-{form}"
        assert (
            main(["predict", "--model", str(models[form]), str(test_series), "--output", str(out), "--device", "cpu"])
            == 0
        )
        for reference in ("dicom", "nifti"):
            csv = root / f"eval-{form}-{reference}.csv"
            assert main(["evaluate", str(out), str(export["refs"] / reference), "--output", str(csv)]) == 0
            summary = json.loads(csv.with_suffix(".json").read_text())
            scores[form, reference] = summary
    masks = [read_image(next((root / f"pred-{form}").glob("*/*.nii.gz"))).channel(0) for form in ("tree", "nifti")]
    assert masks[0].shape == masks[1].shape and np.mean(masks[0] == masks[1]) >= 0.999
    # The test case scored against its RTSTRUCT gives the numbers its NIfTI label map gives, and either model the same.
    dice = {key: [label["metrics"]["dice"]["mean"] for label in summary["labels"]] for key, summary in scores.items()}
    assert dice["tree", "dicom"] == dice["tree", "nifti"] and dice["nifti", "dicom"] == dice["nifti", "nifti"]
    assert dice["tree", "dicom"] == pytest.approx(dice["nifti", "dicom"], abs=0.01)
    assert [label["name"] for label in scores["tree", "dicom"]["labels"]] == ["liver", "spleen", "kidney"]
