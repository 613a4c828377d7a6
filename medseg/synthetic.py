"""CT-like phantoms with known ground truth: for the sample data, tests and training demos.

A phantom is an abdomen-like ellipse of soft tissue in air with a fat layer, a
spine, and three labelled organs whose size, position and contrast vary with
the seed. Everything is deterministic for a given seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medseg.geometry import Geometry
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
