"""Several models, one label map: each runs on the scan and their labels are merged (``--model A --model B``).

The rule, stated once and reported per case:

* **Numbers**: the labels are renumbered in the order the models are given (A's labels first, in
  A's order, then B's new ones), so one map holds them all; names, colours and codes are kept.
* **Same name**: labels of different models with the same name (case, spaces and underscores aside)
  are one structure and become one label: a voxel either model gives it is that label.
* **Overlap**: a voxel that two models give different labels keeps the label of the model given
  first (the order of ``--model`` is the priority), and the case's notes say how many voxels each
  pair of labels disputed.

Confidence is that of the model whose label a voxel kept (background: the least confident model).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from medseg.errors import ModelError
from medseg.inference.engine import InferenceSettings
from medseg.inference.guardrails import ModelFacts
from medseg.inference.window import Progress
from medseg.io.codes import name_key
from medseg.volume import Segment, Volume, VolumeKind

log = logging.getLogger(__name__)


class MergedSegmenter:
    """Segmenters run one after the other, their labels merged into one map (see the module's rule).

    Args:
        parts: loaded segmenters (medseg, nnU-Net, bundle), in priority order.

    Attributes:
        last_notes: what the merge of the last case resolved (overlaps), one line each.

    Raises:
        ModelError: the models take different numbers of input channels.
    """

    fingerprint: dict[str, Any] | None = None

    def __init__(self, parts: Sequence[Any]) -> None:
        self.parts = list(parts)
        counts = {len(p.facts.channels) for p in self.parts}
        if len(counts) > 1:
            described = "; ".join(f"{p.model_identity['name']}: {', '.join(p.facts.channels)}" for p in self.parts)
            raise ModelError(f"the models take different input channels ({described}); merge models of one input")
        self.device = self.parts[0].device
        self.last_notes: list[str] = []
        table: list[Segment] = []
        by_name: dict[str, int] = {}
        self._maps: list[dict[int, int]] = []  # per model: its label -> merged label
        for part in self.parts:
            mapping = {}
            for segment in part.segments:
                key = name_key(segment.name)
                if key not in by_name:
                    by_name[key] = len(table) + 1
                    table.append(replace(segment, number=len(table) + 1))
                mapping[segment.number] = by_name[key]
            self._maps.append(mapping)
        self._segments = tuple(table)

    @property
    def facts(self) -> ModelFacts:
        first = self.parts[0].facts
        modality = next((p.facts.modality for p in self.parts if p.facts.modality), None)
        return ModelFacts(first.channels, modality)

    @property
    def segments(self) -> tuple[Segment, ...]:
        return self._segments

    @property
    def num_classes(self) -> int:
        return len(self._segments) + 1

    @property
    def effective_settings(self) -> InferenceSettings:
        return self.parts[0].effective_settings

    @property
    def model_identity(self) -> dict[str, Any]:
        """The models' names joined by ``+``; the version hashes their identities together."""
        identities = [p.model_identity for p in self.parts]
        digest = hashlib.sha256("\n".join(f"{i['name']}|{i['version']}" for i in identities).encode()).hexdigest()
        return {
            "name": "+".join(i["name"] for i in identities)[:64],
            "version": f"merged+sha256:{digest[:8]}",
            "sha256": digest,
            "models": identities,
        }

    def segment(self, image: Volume, *, progress: Progress | None = None) -> Volume:
        return self.segment_with_confidence(image, progress=progress)[0]

    def segment_with_confidence(self, image: Volume, *, progress: Progress | None = None) -> tuple[Volume, np.ndarray]:
        """Every model's labels on ``image``'s grid, merged by the module's rule; notes in :attr:`last_notes`."""
        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        merged = np.zeros(image.spatial_shape, dtype=dtype)
        confidence = np.full(image.spatial_shape, 255, dtype=np.uint8)
        disputes: dict[tuple[int, int], int] = {}
        for part, mapping in zip(self.parts, self._maps):
            labels, certainty = part.segment_with_confidence(image, progress=progress)
            lookup = np.zeros(max(mapping, default=0) + 1, dtype=dtype)
            for own, number in mapping.items():
                lookup[own] = number
            mine = lookup[labels.array[0]]
            del labels
            found = mine > 0
            taken = found & (merged > 0) & (merged != mine)
            if taken.any():
                pairs, counts = np.unique(np.stack([merged[taken], mine[taken]]), axis=1, return_counts=True)
                for (kept, lost), count in zip(pairs.T, counts):
                    disputes[(int(kept), int(lost))] = disputes.get((int(kept), int(lost)), 0) + int(count)
            free = found & (merged == 0)
            merged[free] = mine[free]
            background = merged == 0
            confidence[free] = certainty[free]
            np.minimum(confidence, np.where(background, certainty, 255).astype(np.uint8), out=confidence)
            del mine, found, taken, free, certainty
        names = {s.number: s.name for s in self._segments}
        self.last_notes = [
            f"{count} voxel(s) {names[lost]} by a later model kept as {names[kept]} (the first model given wins)"
            for (kept, lost), count in sorted(disputes.items())
        ]
        for note in self.last_notes:
            log.info("merge: %s", note)
        volume = image.with_array(merged, kind=VolumeKind.LABEL, segments=self._segments)
        return volume, confidence
