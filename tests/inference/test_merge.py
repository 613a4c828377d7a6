"""Several models merged into one label map: renumbering, same names, overlaps (the first model wins)."""

from __future__ import annotations

import numpy as np
import pytest

from medseg.errors import ModelError
from medseg.inference.engine import InferenceSettings
from medseg.inference.guardrails import ModelFacts
from medseg.inference.merge import MergedSegmenter
from medseg.volume import Segment, Volume, VolumeKind
from tests.factories import oblique_geometry


class Painter:
    """A segmenter that paints fixed boxes: the merge rule is what is under test, not a network."""

    device = "cpu"

    def __init__(self, name: str, boxes: dict[int, tuple[str, tuple[slice, ...]]], confidence: int, channels=1):
        self.boxes, self.value = boxes, confidence
        self.segments = tuple(Segment(n, label) for n, (label, _) in sorted(boxes.items()))
        self.facts = ModelFacts(tuple(f"c{i}" for i in range(channels)), "CT")
        self.model_identity = {"name": name, "version": "1", "sha256": None}
        self.effective_settings = InferenceSettings()

    def segment_with_confidence(self, image: Volume, *, progress=None):
        labels = np.zeros(image.spatial_shape, dtype=np.uint8)
        for number, (_, box) in self.boxes.items():
            labels[box] = number
        confidence = np.full(image.spatial_shape, self.value, dtype=np.uint8)
        return image.with_array(labels, kind=VolumeKind.LABEL, segments=self.segments), confidence


def test_labels_are_renumbered_same_names_joined_and_the_first_model_wins_overlaps():
    image = Volume(np.zeros((1, 23, 17, 9), dtype=np.float32), oblique_geometry())
    organs = Painter("organs", {1: ("Liver", np.s_[0:10, :, :]), 2: ("spleen", np.s_[15:20, 0:5, :])}, 200)
    lesions = Painter("lesions", {1: ("tumour", np.s_[8:12, 0:4, 0:2]), 2: ("liver", np.s_[10:13, :, :])}, 100)
    merged = MergedSegmenter([organs, lesions])
    assert [(s.number, s.name) for s in merged.segments] == [(1, "Liver"), (2, "spleen"), (3, "tumour")]
    labels, confidence = merged.segment_with_confidence(image)
    array = labels.array[0]
    assert labels.geometry == image.geometry and labels.segments == merged.segments
    assert (array[0:10] == 1).all() and (array[10:13] == 1).all()  # "liver" from B joins A's "Liver"
    assert (array[15:20, 0:5] == 2).all()
    assert (array[10:12, 0:4, 0:2] == 1).all() and not (array[8:10, 0:4, 0:2] == 3).any()  # tumour lost to liver
    assert (array == 3).sum() == 0
    (note,) = merged.last_notes
    assert (
        note.startswith(f"{2 * 4 * 2} voxel(s) tumour") and "kept as Liver" in note
    )  # rows 8-9: B painted its liver over rows 10-11
    assert confidence[0, 0, 0] == 200 and confidence[11, 10, 5] == 100 and confidence[21, 16, 8] == 100
    assert merged.model_identity["name"] == "organs+lesions"


def test_models_of_different_inputs_are_refused():
    one = Painter("ct", {1: ("liver", np.s_[0:2])}, 255)
    two = Painter("mr", {1: ("liver", np.s_[0:2])}, 255, channels=2)
    with pytest.raises(ModelError, match="different input channels"):
        MergedSegmenter([one, two])
