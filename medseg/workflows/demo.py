"""The demo: the bundled model segments the sample CT, end to end, and is scored against the truth.

:func:`run_demo` regenerates the sample scan of ``sample_data/ct_phantom`` from its
seed (an installed package has no repository folder, and the generator is small and
deterministic), runs the whole prediction pipeline on its DICOM series with the
model bundled in the package (:func:`medseg.models.bundled.bundled_model_path`), and
scores the DICOM SEG it wrote against the phantom's known labels. Layout of ``OUT``::

    OUT/input/ct_phantom/IM00000 ...       the sample DICOM series (48 slices)
    OUT/input/ct_phantom_labels.nii.gz     its true label map (1 liver, 2 spleen, 3 kidney)
    OUT/masks/ct_phantom/ct_phantom.nii.gz the predicted mask on the scan's grid
    OUT/masks/ct_phantom/ct_phantom.seg.dcm          ... as a DICOM SEG
    OUT/masks/ct_phantom/ct_phantom.stats.json/.csv  volumes (mL) and HU per label
    OUT/masks/ct_phantom/ct_phantom.preview.png      the mask over three slices
    OUT/masks/manifest.csv, OUT/masks/run.json       what medseg predict records
    OUT/evaluation.csv/.json/.png          Dice, IoU, HD95, ... of the SEG against the truth
    OUT/summary.json                       files, Dice per label, seconds, device, model

The same as, on the command line, ``medseg predict --model <bundled> OUT/input --output
OUT/masks --format nifti,seg --stats --preview`` followed by ``medseg evaluate``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import InputError, ModelError
from medseg.geometry import Geometry
from medseg.io import write_nifti
from medseg.io.dicom.writer import write_dicom_series
from medseg.io.files import write_atomically
from medseg.models.bundled import bundled_model_path
from medseg.synthetic import PhantomSpec, make_phantom

log = logging.getLogger(__name__)

#: The grid of the sample scan (``sample_data/generate.py`` writes the same one).
SAMPLE_SPEC = PhantomSpec(shape=(128, 104, 48), spacing=(2.5, 2.5, 4.0), origin=(-158.75, -128.75, -94.0))
#: The sample scan's seed (``sample_data/generate.py``'s default).
SAMPLE_SEED = 0
#: Name of the sample scan: its DICOM folder, hence its case name in ``masks/``.
SAMPLE_NAME = "ct_phantom"
#: Dice every label must exceed for the demo to pass.
MIN_DICE = 0.8
#: What the demo writes: NIfTI and DICOM SEG (plus statistics and a preview).
DEMO_FORMATS = ("nifti", "seg")

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SampleScan:
    """The sample scan as written by :func:`write_sample_scan`.

    Attributes:
        dicom: the folder holding the DICOM series (one file per slice).
        labels: its true label map (NIfTI).
    """

    dicom: Path
    labels: Path


@dataclass(frozen=True)
class DemoResult:
    """What :func:`run_demo` did.

    Attributes:
        output: the demo folder.
        scan: the sample scan it segmented.
        outputs: kind -> file: ``nifti``, ``seg``, ``stats_json``, ``stats_csv``, ``preview``,
            ``manifest``, ``evaluation`` (CSV; JSON and PNG beside it), ``summary``.
        dice: label name -> Dice of the SEG against the true labels.
        seg_check: the SEG read-back check's one-line result.
        device: where the network ran (``cpu``, ``cuda:0``).
        model: the model folder used.
        seconds: ``sample``, ``predict``, ``evaluate`` and ``total`` wall times.
    """

    output: Path
    scan: SampleScan
    outputs: dict[str, Path]
    dice: dict[str, float]
    seg_check: str
    device: str
    model: Path
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether every label reached a Dice above :data:`MIN_DICE`."""
        return bool(self.dice) and all(value > MIN_DICE for value in self.dice.values())

    def summary(self) -> dict[str, Any]:
        """What OUTPUT/summary.json holds: versions, model, input and output files, Dice, pass/fail, timings."""
        import medseg

        facts: dict[str, Any] = {}
        try:
            facts = json.loads((self.model / "model.json").read_text())
        except (OSError, ValueError):
            pass
        return {
            "medseg_version": medseg.__version__,
            "device": self.device,
            "model": {
                "path": os.fspath(self.model),
                "sha256": facts.get("model_sha256"),
                "trained_by": facts.get("trained_by"),
            },
            "input": {"dicom": os.fspath(self.scan.dicom), "reference": os.fspath(self.scan.labels)},
            "outputs": {kind: os.fspath(path) for kind, path in self.outputs.items()},
            "dice": {name: None if value != value else round(value, 4) for name, value in self.dice.items()},
            "min_dice": MIN_DICE,
            "passed": self.passed,
            "seg_check": self.seg_check,
            "seconds": {stage: round(value, 2) for stage, value in self.seconds.items()},
        }


def write_sample_scan(folder: str | os.PathLike[str], *, seed: int = SAMPLE_SEED) -> SampleScan:
    """Write the sample CT phantom: its DICOM series and its true labels.

    The voxels and grid are those of ``sample_data/ct_phantom`` (for the default
    seed); the DICOM UIDs and dates are new on every call.

    Args:
        folder: where ``ct_phantom/`` (the series) and ``ct_phantom_labels.nii.gz`` go.
        seed: the phantom's seed.

    Returns:
        The paths of the series' folder and of the label map.
    """

    folder = Path(folder)
    spec = SAMPLE_SPEC
    geometry = Geometry.from_spacing(spec.shape, spec.spacing, spec.origin, frame_of_reference_uid=None)
    image, labels = make_phantom(seed, spec, geometry)
    dicom = folder / SAMPLE_NAME
    names = [f"IM{k:05d}" for k in range(geometry.shape[2])]
    write_dicom_series(image, dicom, series_description="Phantom abdomen CT", file_names=names)
    labels_path = folder / f"{SAMPLE_NAME}_labels.nii.gz"
    write_nifti(labels, labels_path)
    return SampleScan(dicom=dicom, labels=labels_path)


def run_demo(
    output: str | os.PathLike[str],
    *,
    device: str = "auto",
    model: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
) -> DemoResult:
    """Segment the sample scan with the bundled model, score it, and write ``OUT/summary.json``.

    Args:
        output: the demo folder: new, empty, or one a previous demo wrote (its
            results are replaced).
        device: ``auto``, ``cpu`` or ``cuda``.
        model: a model folder to use instead of the bundled one.
        progress: ``(stage, done, total)`` callbacks from :func:`medseg.workflows.predict.predict`.

    Returns:
        The files written, Dice per label and timings. A Dice at or below
        :data:`MIN_DICE` is not an error: check :attr:`DemoResult.passed`.

    Raises:
        InputError: ``output`` is a file, or a folder holding other things than a demo's.
        ModelError: the model cannot be loaded, or the sample scan could not be segmented.
    """
    from medseg.workflows.evaluate import evaluate, write_evaluation  # torch: the sample scan needs none
    from medseg.workflows.predict import PredictOptions, predict  # torch and MONAI: the sample scan needs neither

    started = time.monotonic()
    out = _prepare_output(Path(output))
    model_dir = Path(model) if model is not None else bundled_model_path()
    scan = write_sample_scan(out / "input")
    seconds = {"sample": time.monotonic() - started}

    mark = time.monotonic()
    options = PredictOptions(formats=DEMO_FORMATS, device=device, stats=True, preview=True, overwrite=True)
    report = predict([scan.dicom], out / "masks", model=model_dir, options=options, progress=progress)
    seconds["predict"] = time.monotonic() - mark
    done = [r for r in report.results if r.status == "done"]
    if len(done) != 1:
        problems = "; ".join(f"{r.name}: {r.status} {r.message}".strip() for r in report.results) or "no series found"
        raise ModelError(f"{scan.dicom}: the demo could not segment the sample scan ({problems})")
    result = done[0]
    outputs = _outputs(out, result.outputs)

    mark = time.monotonic()
    evaluation = evaluate(outputs["seg"], scan.labels)
    if evaluation.failures:
        raise ModelError(f"{outputs['seg']}: not scored against {scan.labels}: {evaluation.failures[0].message}")
    outputs["evaluation"] = write_evaluation(evaluation, out / "evaluation.csv")[0]
    dice = {s.name: s.metrics["dice"].mean for s in evaluation.summary()}
    seconds["evaluate"] = time.monotonic() - mark
    seconds["total"] = time.monotonic() - started

    device_used = _run_device(out / "masks")
    outputs["summary"] = out / "summary.json"
    demo = DemoResult(out, scan, outputs, dice, result.seg_check, device_used, model_dir, seconds)
    _write_summary(demo)
    log.info("demo: Dice %s in %.1f s -> %s", dice, seconds["total"], out)
    return demo


def _prepare_output(out: Path) -> Path:
    """Create ``out``, or clear the results of a demo run in it; refuse any other folder's contents."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give the demo a new folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "summary.json").is_file() and not (out / "input" / SAMPLE_NAME).is_dir():
            raise InputError(f"{out}: not empty and not a demo folder; give the demo a new or empty folder")
        for name in ("input", "masks"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _outputs(out: Path, written: tuple[str, ...]) -> dict[str, Path]:
    """Kind -> path of what predict wrote for the sample case, plus the manifest."""
    endings = {
        ".seg.dcm": "seg",
        ".stats.json": "stats_json",
        ".stats.csv": "stats_csv",
        ".preview.png": "preview",
        ".nii.gz": "nifti",
    }
    outputs: dict[str, Path] = {}
    for path in map(Path, written):
        kind = next(k for ending, k in endings.items() if path.name.endswith(ending))
        outputs[kind] = path
    outputs["manifest"] = out / "masks" / "manifest.csv"
    return outputs


def _run_device(masks: Path) -> str:
    try:
        return str(json.loads((masks / "run.json").read_text()).get("device", "unknown"))
    except (OSError, ValueError):
        return "unknown"


def _write_summary(demo: DemoResult) -> None:

    text = json.dumps(demo.summary(), indent=2) + "\n"
    write_atomically(demo.output / "summary.json", lambda tmp: tmp.write_text(text))
