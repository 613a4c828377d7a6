"""Small datasets on disk in each layout, with volumes whose channels can be told apart."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.geometry import Geometry
from medseg.io import write_image
from medseg.synthetic import make_phantom
from medseg.volume import Volume
from tests.factories import rotation

NNUNET_LABELS = {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}
MSD_LABELS = {"0": "background", "1": "liver", "2": "spleen", "3": "kidney"}


def case_grid(shift_mm: float = 0.0) -> Geometry:
    """A small oblique, anisotropic, off-origin grid over the phantom's abdomen."""
    return Geometry.from_spacing((30, 26, 13), (9.5, 8.0, 12.0), (-140.0 + shift_mm, -104.0, -78.0), rotation("z", 6))


def mr_pair(seed: int, geometry: Geometry | None = None) -> tuple[list[Volume], Volume]:
    """Two channels that differ everywhere (``T1`` = phantom + 2000, ``T2`` = 5000 - phantom) and the labels."""
    image, labels = make_phantom(seed, geometry=geometry or case_grid())
    hu = image.array[0].astype(np.int32)
    t1 = image.with_array((hu + 2000).astype(np.int16))
    t2 = image.with_array((5000 - hu).astype(np.int16))
    return [t1, t2], labels


def ct_pair(seed: int, geometry: Geometry | None = None) -> tuple[list[Volume], Volume]:
    """One CT channel and its labels."""
    image, labels = make_phantom(seed, geometry=geometry or case_grid())
    return [image], labels


def write_nnunet(
    folder: Path,
    cases: dict[str, tuple[list[Volume], Volume | None]],
    channels: tuple[str, ...],
    *,
    test: dict[str, tuple[list[Volume], Volume | None]] | None = None,
    labels: dict = NNUNET_LABELS,
    ending: str = ".nii.gz",
    **extra,
) -> Path:
    """An nnU-Net v2 raw folder: ``imagesTr/<case>_<XXXX><ending>``, ``labelsTr/<case><ending>``."""
    for split, items in (("Tr", cases), ("Ts", test or {})):
        for case_id, (images, label) in items.items():
            for index, volume in enumerate(images):
                write_image(volume, folder / f"images{split}" / f"{case_id}_{index:04d}{ending}")
            if label is not None:
                write_image(label, folder / f"labels{split}" / f"{case_id}{ending}")
    description = {
        "channel_names": {str(i): name for i, name in enumerate(channels)},
        "labels": labels,
        "numTraining": len(cases),
        "file_ending": ending,
        **extra,
    }
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def write_msd(
    folder: Path,
    cases: dict[str, tuple[list[Volume], Volume]],
    channels: tuple[str, ...],
    *,
    test: dict[str, list[Volume]] | None = None,
) -> Path:
    """A Decathlon folder: channels stacked into one 4D NIfTI per case, listed in ``dataset.json``."""
    training, tests = [], []
    for case_id, (images, label) in cases.items():
        write_image(stack(images), folder / "imagesTr" / f"{case_id}.nii.gz")
        write_image(label, folder / "labelsTr" / f"{case_id}.nii.gz")
        training.append({"image": f"./imagesTr/{case_id}.nii.gz", "label": f"./labelsTr/{case_id}.nii.gz"})
    for case_id, images in (test or {}).items():
        write_image(stack(images), folder / "imagesTs" / f"{case_id}.nii.gz")
        tests.append(f"./imagesTs/{case_id}.nii.gz")
    description = {
        "name": "Tiny",
        "modality": {str(i): name for i, name in enumerate(channels)},
        "labels": MSD_LABELS,
        "numTraining": len(training),
        "training": training,
        "test": tests,
    }
    (folder / "dataset.json").write_text(json.dumps(description))
    return folder


def stack(images: list[Volume]) -> Volume:
    """Channels of one grid as one multi-channel volume."""
    return images[0].with_array(np.concatenate([v.array for v in images]))
