"""CT-like phantoms with known ground truth: for the sample data, tests and training demos.

A phantom is an abdomen-like ellipse of soft tissue in air with a fat layer, a
spine, and three labelled organs whose size, position and contrast vary with
the seed. Everything is deterministic for a given seed.

:func:`write_phantom_dataset` writes a training set of them (nnU-Net or
Decathlon layout) on grids that vary from case to case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.io import write_nifti
from medseg.volume import Segment, Volume, VolumeKind

#: The labels every phantom carries.
PHANTOM_SEGMENTS = (
    Segment(1, "liver", (221, 130, 101)),
    Segment(2, "spleen", (157, 108, 162)),
    Segment(3, "kidney", (185, 102, 83)),
)


@dataclass(frozen=True)
class PhantomSpec:
    """Size and grid of a phantom; the defaults make a small abdominal CT."""

    shape: tuple[int, int, int] = (96, 80, 40)
    spacing: tuple[float, float, float] = (3.0, 3.0, 4.0)
    origin: tuple[float, float, float] = (-144.0, -150.0, -80.0)
    noise_hu: float = 12.0


def make_phantom(seed: int = 0, spec: PhantomSpec | None = None, geometry: Geometry | None = None) -> tuple[Volume, Volume]:
    """An image (int16 HU) and its label map on the same grid.

    Organs are placed in patient space (LPS mm), so any ``geometry`` (oblique,
    flipped, anisotropic) gives the same anatomy sampled differently.
    """
    spec = spec or PhantomSpec()
    geometry = geometry or Geometry.from_spacing(spec.shape, spec.spacing, spec.origin)
    rng = np.random.default_rng(seed)
    i, j, k = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in geometry.shape), indexing="ij")
    index = np.stack([i, j, k], axis=-1).reshape(-1, 3)
    points = geometry.index_to_physical(index).reshape(*geometry.shape, 3).astype(np.float32)
    x, y, z = points[..., 0], points[..., 1], points[..., 2]

    def jitter(scale: float) -> float:
        return float(rng.uniform(-scale, scale))

    def ellipsoid(center: Sequence[float], radii: Sequence[float]) -> np.ndarray:
        return (
            ((x - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2 + ((z - center[2]) / radii[2]) ** 2
        ) <= 1.0

    body_r = (125 + jitter(10), 95 + jitter(8))
    body = ((x / body_r[0]) ** 2 + (y / body_r[1]) ** 2) <= 1.0
    inner = ((x / (body_r[0] - 12)) ** 2 + (y / (body_r[1] - 12)) ** 2) <= 1.0
    image = np.full(geometry.shape, -1000.0, dtype=np.float32)
    image[body] = -90.0  # subcutaneous fat
    image[inner] = 30.0 + jitter(5)  # soft tissue
    spine = ((x / 14) ** 2 + ((y - 55) / 14) ** 2) <= 1.0
    image[spine & inner] = 450.0 + jitter(50)

    labels = np.zeros(geometry.shape, dtype=np.uint8)
    organs = [
        (1, (-55 + jitter(8), -10 + jitter(8), 10 + jitter(8)), (48 + jitter(6), 42 + jitter(6), 45 + jitter(6)), 110),
        (2, (70 + jitter(8), 15 + jitter(8), 20 + jitter(8)), (26 + jitter(4), 22 + jitter(4), 30 + jitter(5)), 75),
        (3, (-45 + jitter(5), 45 + jitter(5), -25 + jitter(6)), (18 + jitter(3), 16 + jitter(3), 28 + jitter(4)), 190),
        (3, (45 + jitter(5), 45 + jitter(5), -25 + jitter(6)), (18 + jitter(3), 16 + jitter(3), 28 + jitter(4)), 190),
    ]
    for label, center, radii, hu in organs:
        mask = ellipsoid(center, radii) & inner & (labels == 0)
        labels[mask] = label
        image[mask] = hu + jitter(10)
    image += rng.normal(0.0, spec.noise_hu, geometry.shape).astype(np.float32) * body
    hu = np.clip(np.rint(image), -1024, 3071).astype(np.int16)
    image_volume = Volume(hu, geometry, kind=VolumeKind.IMAGE)
    label_volume = Volume(labels, geometry, kind=VolumeKind.LABEL, segments=PHANTOM_SEGMENTS)
    return image_volume, label_volume


#: Folder names :func:`write_phantom_dataset` is meant to write into, by layout.
PHANTOM_DATASET_NAMES = {"nnunet": "Dataset001_Phantom", "msd": "Task01_Phantom"}


def phantom_case_grid(seed: int) -> Geometry:
    """A small abdominal CT grid, jittered by ``seed``: 2.8-3.8 mm in-plane, 3.5-4.5 mm slices.

    The field of view (300 x 240 x 170 mm, each +-7%: 73-115 x 56-97 x 35-52
    voxels) moves by up to 10 mm, and one grid in three is turned 2-6 degrees
    about the patient's z axis.
    """
    rng = np.random.default_rng(seed)
    in_plane = rng.uniform(2.8, 3.8)
    spacing = np.array([in_plane, in_plane * rng.uniform(0.95, 1.05), rng.uniform(3.5, 4.5)])
    extent = np.array([300.0, 240.0, 170.0]) * rng.uniform(0.93, 1.07, size=3)
    shape = np.maximum(np.rint(extent / spacing).astype(int), 8)
    centre = np.array([0.0, 0.0, -5.0]) + rng.uniform(-10.0, 10.0, size=3)
    direction = np.eye(3)
    if rng.uniform() < 1 / 3:
        angle = np.deg2rad(rng.uniform(2.0, 6.0) * rng.choice([-1.0, 1.0]))
        c, s = np.cos(angle), np.sin(angle)
        direction = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    origin = centre - direction @ (spacing * (shape - 1) / 2)
    return Geometry.from_spacing(tuple(int(n) for n in shape), spacing, origin, direction)


def write_phantom_dataset(
    folder: str | os.PathLike[str],
    *,
    num_training: int = 24,
    num_test: int = 0,
    layout: Literal["nnunet", "msd"] = "nnunet",
    seed: int = 0,
) -> Path:
    """Write a CT phantom dataset with ground truth, ready for :func:`medseg.datasets.open_dataset`.

    Cases are named ``phantom_001``, ``phantom_002``, ...; the test cases follow
    the training cases, and their ground truth goes to ``labelsTs/``. Every case
    has its own anatomy and grid (:func:`phantom_case_grid`), both derived from
    ``seed`` and the case number, so the dataset is the same on every run.

    Args:
        folder: the dataset folder to create, e.g. ``.../Dataset001_Phantom``
            (see :data:`PHANTOM_DATASET_NAMES`); it must be absent or empty.
        num_training: labelled training cases (``imagesTr``/``labelsTr``).
        num_test: test cases (``imagesTs``, with ground truth in ``labelsTs``).
        layout: ``"nnunet"`` (nnU-Net v2 raw: ``<case>_0000.nii.gz``) or ``"msd"``
            (Decathlon: files listed in ``dataset.json``).
        seed: varies every case at once.

    Returns:
        ``folder``.

    Raises:
        InputError: ``folder`` holds files already, or the layout or counts are invalid.
    """
    folder = Path(folder)
    if layout not in PHANTOM_DATASET_NAMES:
        raise InputError(f"layout must be one of {sorted(PHANTOM_DATASET_NAMES)}, got {layout!r}")
    if num_training < 0 or num_test < 0:
        raise InputError(f"case counts must be 0 or more, got {num_training} training and {num_test} test")
    if folder.exists() and any(folder.iterdir()):
        raise InputError(f"{folder}: not empty; write a phantom dataset into a new or empty folder")
    training, test = [], []
    for number in range(1, num_training + num_test + 1):
        case_id = f"phantom_{number:03d}"
        is_test = number > num_training
        case_seed = int(np.random.default_rng([seed, number]).integers(2**31))
        image, labels = make_phantom(case_seed, geometry=phantom_case_grid(case_seed))
        image_name = f"{case_id}_0000.nii.gz" if layout == "nnunet" else f"{case_id}.nii.gz"
        images, label_dir = ("imagesTs", "labelsTs") if is_test else ("imagesTr", "labelsTr")
        write_nifti(image, folder / images / image_name)
        write_nifti(labels, folder / label_dir / f"{case_id}.nii.gz")
        entry = {"image": f"./{images}/{case_id}.nii.gz", "label": f"./{label_dir}/{case_id}.nii.gz"}
        (test if is_test else training).append(entry)
    names = {s.name: s.number for s in PHANTOM_SEGMENTS}
    description = f"CT phantoms made by medseg.synthetic.write_phantom_dataset (seed {seed})"
    if layout == "nnunet":
        manifest = {
            "name": "Phantom",
            "description": description,
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **names},
            "numTraining": num_training,
            "file_ending": ".nii.gz",
        }
    else:
        manifest = {
            "name": "Phantom",
            "description": description,
            "tensorImageSize": "3D",
            "modality": {"0": "CT"},
            "labels": {"0": "background", **{str(n): name for name, n in names.items()}},
            "numTraining": num_training,
            "numTest": num_test,
            "training": training,
            "test": [entry["image"] for entry in test],
        }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dataset.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


#: What :func:`write_review_batch` does to its damaged scans, by case name.
REVIEW_DAMAGE = {
    "cut-off": "the scan ends inside the liver and spleen (the top of the field of view cut off)",
    "head": "another body part: a head (brain in a skull), not an abdomen",
    "noisy": "an abdomen under heavy noise (sigma 250 HU)",
}


def write_review_batch(folder: str | os.PathLike[str], *, good: int = 20, seed: int = 1000) -> dict[str, str]:
    """Write a batch of CT phantoms to segment, a few of them damaged, for trying quality flags and reviews.

    Good scans are ``good-<n>.nii.gz`` (new anatomy and grids, none of the training set's); the
    damaged ones are named after their damage (:data:`REVIEW_DAMAGE`).

    Args:
        folder: where the scans go (created).
        good: how many good scans.
        seed: the first good scan's seed; the damaged scans use the seeds after the good ones.

    Returns:
        Case name -> what is wrong with it ("" for the good scans).
    """
    folder = Path(folder)
    cases: dict[str, str] = {}
    for number in range(good):
        image, _ = make_phantom(seed + number, geometry=phantom_case_grid(seed + number))
        write_nifti(image, folder / f"good-{seed + number}.nii.gz")
        cases[f"good-{seed + number}"] = ""
    damaged = seed + good
    image, _ = make_phantom(damaged, geometry=phantom_case_grid(damaged))
    top = image.geometry.index_to_physical(np.array([[0, 0, k] for k in range(image.spatial_shape[2])], float))[:, 2]
    keep = np.flatnonzero(top <= 15.0)  # through the liver (centred near z = 10 mm) and the spleen
    cut = Geometry.from_spacing(
        (*image.spatial_shape[:2], int(keep.size)),
        image.geometry.spacing,
        image.geometry.index_to_physical(np.array([[0.0, 0.0, float(keep[0])]]))[0],
        image.geometry.direction,
    )
    write_nifti(Volume(image.array[..., keep[0] : keep[-1] + 1], cut), folder / "cut-off.nii.gz")
    geometry = phantom_case_grid(damaged + 1)
    points = geometry.index_to_physical(np.indices(geometry.shape).reshape(3, -1).T.astype(float))
    radius = np.sqrt(((points / [75.0, 90.0, 80.0]) ** 2).sum(axis=1)).reshape(geometry.shape)
    head = np.full(geometry.shape, -1000, dtype=np.int16)
    head[radius <= 1.0], head[radius <= 0.9] = 900, 35  # skull, brain
    write_nifti(Volume(head[None], geometry), folder / "head.nii.gz")
    image, _ = make_phantom(damaged + 2, geometry=phantom_case_grid(damaged + 2))
    noise = np.random.default_rng(damaged + 2).normal(0.0, 250.0, image.array.shape)
    noisy = np.clip(image.array + noise, -1024, 3071).astype(np.int16)
    write_nifti(image.with_array(noisy), folder / "noisy.nii.gz")
    cases.update(REVIEW_DAMAGE)
    return cases
