"""A label map painted one source segment at a time, recording where segments overlap.

DICOM SEG segments and RT Structure Set ROIs may overlap (a tumour inside its organ,
two spellings of the same organ); a label map holds one label per voxel. The readers
paint each segment in turn onto a :class:`LabelCanvas`, later ones on top, and the
canvas counts the voxels where a segment covers another label, so that the caller
can refuse overlaps that nobody said how to resolve.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Painted:
    """What a reader painted: the label array and what it learnt on the way.

    Attributes:
        array: the label map ``(I, J, K)``.
        names: source segment / ROI number -> its name in the file.
        painted: source numbers painted, in order.
        empty: source numbers that were to be painted but hold no voxel (no frame, no contour).
        overlaps: ``(label underneath, label on top) -> voxels`` where one covered the other.
        notes: what was left out on the way (e.g. point contours), one line each.
    """

    array: np.ndarray
    names: dict[int, str]
    painted: tuple[int, ...]
    empty: tuple[int, ...] = ()
    overlaps: dict[tuple[int, int], int] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


class LabelCanvas:
    """An ``(I, J, K)`` label array of the smallest type for labels up to ``top``.

    Args:
        shape: the grid's shape.
        top: the largest label that will be painted.
    """

    def __init__(self, shape: Sequence[int], top: int) -> None:
        self.array = np.zeros(tuple(int(n) for n in shape), dtype=np.uint8 if top < 256 else np.uint16)
        self.overlaps: Counter[tuple[int, int]] = Counter()

    def paint(self, where: tuple[object, ...], values: np.ndarray | int) -> None:
        """Set ``array[where] = values``, counting voxels that held another label before."""
        under = self.array[where]
        clash = (under != 0) & (under != values)
        if np.any(clash):
            above = np.broadcast_to(np.asarray(values), under.shape)[clash]
            pairs, counts = np.unique(np.stack([under[clash], above]), axis=1, return_counts=True)
            for (low, high), count in zip(pairs.T.tolist(), counts.tolist()):
                self.overlaps[(int(low), int(high))] += int(count)
        self.array[where] = values


def paint_order(numbers: Sequence[int], paint: Sequence[tuple[int, int]] | None) -> list[tuple[int, int]]:
    """``(source number, label)`` pairs to paint, in order: ``paint`` as given, else each number as its own label."""
    if paint is not None:
        return [(int(n), int(label)) for n, label in paint]
    return [(int(n), int(n)) for n in sorted(numbers)]
