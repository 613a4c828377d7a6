"""Segmenter: labels on the scan's own grid, equal to full class scores restored and argmaxed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from medseg.config import parse_pipeline
from medseg.errors import ConfigError, InputError
from medseg.inference.engine import CPU_OVERLAP, InferenceSettings, Segmenter, segments_of
from medseg.inference.postprocess import postprocess
from medseg.inference.window import cpu_window_batch, slices_per_batch
from medseg.models.networks import build_network
from medseg.models.folder import export_model_folder
from medseg.synthetic import make_phantom
from medseg.transforms.prepare import prepare_case
from medseg.transforms.resample import restore_to_source
from medseg.volume import VolumeKind
from tests import factories

REPO = Path(__file__).resolve().parents[2]

PIPELINE = """\
version: 1
name: engine-test
modality: CT
labels:
  1:
    name: liver
    color: [221, 130, 101]
    category: ["123037004", "SCT", "Anatomical Structure"]
    type: ["10200004", "SCT", "Liver"]
  2: spleen
  3: kidney
preprocessing:
  spacing: [6.0, 6.0, 8.0]
  crop_to_nonzero: {crop}
  crop_to_body: {body}
  channels:
    - {{name: CT, normalization: {{scheme: ct, clip: [-160.0, 240.0], mean: 60.0, std: 50.0}}}}
network:
  dimensions: {dimensions}
  filters: [4, 8, 8]
  kernel_sizes: {kernels}
  strides: {strides}
  deep_supervision_heads: 1
training:
  patch_size: {patch}
  augmentation: {{flip_axes: {mirror}}}
inference:
  overlap: 0.5
  mirror_axes: {mirror}
  postprocessing: {postprocessing}
"""



def make_pipeline(*, dimensions: int = 3, crop: bool = False, body: bool = False, postprocessing: str = "{}"):
    if dimensions == 3:
        values = dict(
            kernels=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], patch=[32, 32, 16], mirror=[0, 1, 2]
        )
    else:
        values = dict(kernels=[[3, 3]] * 3, strides=[[1, 1], [2, 2], [2, 2]], patch=[32, 32], mirror=[0, 1])
    text = PIPELINE.format(
        dimensions=dimensions, crop=str(crop).lower(), body=str(body).lower(), postprocessing=postprocessing, **values)
    return parse_pipeline(text)


def make_segmenter(pipeline, **settings) -> Segmenter:
    torch.manual_seed(0)
    network = build_network(pipeline.network, in_channels=1, out_channels=pipeline.num_classes)
    return Segmenter(network, pipeline, device="cpu", settings=InferenceSettings(**settings))


def oblique_phantom():
    geometry = factories.oblique_geometry(shape=(47, 39, 13), spacing=(5.5, 6.5, 9.0), origin=(-120.0, -110.0, -50.0))
    image, _ = make_phantom(3, geometry=geometry)
    return image


def reference_scores(segmenter: Segmenter, image) -> np.ndarray:
    """What the naive path gives: full class scores on the prepared grid, restored linearly to the scan's grid."""
    prepared = prepare_case(image, None, segmenter.pipeline)
    logits = segmenter.window().logits(prepared.image).numpy()
    return restore_to_source(logits, prepared.geometry, image.geometry, order="linear")


def assert_equal_up_to_ties(labels: np.ndarray, scores: np.ndarray) -> None:
    """Equal wherever the reference's best class wins by more than 1e-4; background where it has no scores."""
    filled = ~scores.any(axis=0)  # outside the prepared grid: no scores at all
    assert not labels[filled].any()
    top = np.sort(scores[:, ~filled], axis=0)
    decided = top[-1] - top[-2] > 1e-4
    expected = scores[:, ~filled].argmax(0)
    assert decided.mean() > 0.99
    assert len(np.unique(expected)) >= 2  # not a trivial, all-one-class prediction
    np.testing.assert_array_equal(labels[~filled][decided], expected[decided])


def test_segment_is_on_the_scan_grid_and_equals_the_full_reference():
    image = oblique_phantom()
    segmenter = make_segmenter(make_pipeline(), overlap=0.5)
    labels = segmenter.segment(image)
    assert labels.kind is VolumeKind.LABEL and labels.dtype == np.uint8
    assert labels.geometry == image.geometry and labels.source == image.source
    assert [s.name for s in labels.segments] == ["liver", "spleen", "kidney"]
    assert labels.segments[0].type == ("10200004", "SCT", "Liver") and labels.segments[0].color == (221, 130, 101)
    assert_equal_up_to_ties(labels.channel(0), reference_scores(segmenter, image))


def test_crop_to_nonzero_leaves_the_cut_away_parts_background():
    image = oblique_phantom()
    values = np.array(image.channel(0))
    values[:7], values[:, -9:], values[:, :, :2] = 0, 0, 0
    image = image.with_array(values)
    segmenter = make_segmenter(make_pipeline(crop=True), overlap=0.5)
    labels = segmenter.segment(image).channel(0)
    # The prepared grid covers the non-zero box [7:, :-9, 2:] and at most half a prepared voxel beyond it.
    outside = np.ones(values.shape, dtype=bool)
    outside[6:, :-8, 1:] = False
    assert not labels[outside].any()
    uncropped = make_segmenter(make_pipeline(crop=False), overlap=0.5).segment(image).channel(0)
    assert uncropped[outside].any()  # without the crop the network does label those zeros
    assert_equal_up_to_ties(labels, reference_scores(segmenter, image))


def test_crop_to_body_leaves_the_air_around_a_ct_background():
    image = oblique_phantom()
    values = np.array(image.channel(0))
    values[:7], values[:, -9:], values[:, :, :2] = -1000, -1000, -1000
    image = image.with_array(values)
    segmenter = make_segmenter(make_pipeline(body=True), overlap=0.5)
    labels = segmenter.segment(image).channel(0)
    assert labels.shape == values.shape  # on the scan's own grid
    outside = np.ones(values.shape, dtype=bool)
    outside[6:, :-8, 1:] = False
    assert not labels[outside].any() and labels.any()
    assert make_segmenter(make_pipeline(body=False), overlap=0.5).segment(image).channel(0)[outside].any()
    assert_equal_up_to_ties(labels, reference_scores(segmenter, image))


def test_confidence_is_the_winning_softmax_of_the_same_scores():
    image = oblique_phantom()
    values = np.array(image.channel(0))
    values[:7] = 0  # cropped away below: certain background there
    image = image.with_array(values)
    segmenter = make_segmenter(make_pipeline(crop=True), overlap=0.5)
    labels, confidence = segmenter.segment_with_confidence(image)
    np.testing.assert_array_equal(labels.channel(0), segmenter.segment(image).channel(0))
    assert confidence.dtype == np.uint8 and confidence.shape == image.spatial_shape

    scores = reference_scores(segmenter, image)
    covered = scores.any(axis=0)
    softmax = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
    expected = np.rint(255 * softmax.max(0)).astype(int)
    assert np.abs(confidence[covered].astype(int) - expected[covered]).max() <= 1
    assert (confidence[~covered] == 255).all() and (~covered).sum() > 1000
    assert confidence[covered].min() < 200  # an untrained network is unsure somewhere: the map is not constant


def test_2d_pipeline():
    geometry = factories.axial_geometry(
        shape=(45, 37, 6), spacing=(5.5, 6.5, 9.0), origin=(-120.0, -110.0, -20.0), feet_first=True
    )
    image, _ = make_phantom(4, geometry=geometry)
    segmenter = make_segmenter(make_pipeline(dimensions=2), overlap=0.5)
    labels = segmenter.segment(image)
    assert labels.geometry == image.geometry
    assert_equal_up_to_ties(labels.channel(0), reference_scores(segmenter, image))


def test_segment_prepared_gives_labels_on_the_prepared_grid():
    image = oblique_phantom()
    segmenter = make_segmenter(make_pipeline())
    prepared = prepare_case(image, None, segmenter.pipeline)
    labels = segmenter.segment_prepared(prepared.image)
    assert labels.shape == prepared.spatial_shape and labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, segmenter.window().logits(prepared.image).argmax(0).numpy())


def test_postprocessing_from_the_pipeline_is_applied_on_the_scan_grid():
    image = oblique_phantom()
    pipeline = make_pipeline(postprocessing="{largest_component: [1, 2, 3], fill_holes: [1]}")
    raw = make_segmenter(pipeline, postprocess=False).segment(image).channel(0)
    cleaned = make_segmenter(pipeline).segment(image).channel(0)
    full = ndimage.generate_binary_structure(3, 3)
    assert max(ndimage.label(raw == label, structure=full)[1] for label in (1, 2, 3)) > 1  # there was work to do
    for label in (1, 2, 3):
        assert ndimage.label(cleaned == label, structure=full)[1] <= 1
    settings, voxel_ml = pipeline.inference.postprocessing, image.geometry.voxel_volume_ml
    expected = postprocess(np.array(raw), settings, voxel_volume_ml=voxel_ml)
    np.testing.assert_array_equal(cleaned, expected)


def test_settings_defaults_on_the_cpu_and_overrides():
    pipeline = make_pipeline()
    default = make_segmenter(pipeline)
    # 32 x 32 x 16 windows run four at a time on the CPU (three times as fast there, the same scores).
    assert default.overlap == min(0.5, CPU_OVERLAP) and default.mirror_axes == () and default.batch_size == 4
    image = np.random.default_rng(0).normal(size=(1, 70, 50, 30)).astype(np.float32)
    one_by_one = make_segmenter(pipeline, batch_size=1).window().logits(image)
    assert torch.allclose(default.window().logits(image), one_by_one, atol=1e-5)
    assert cpu_window_batch([128, 128, 64], 1) == 1 and cpu_window_batch([32, 32], 1) == 1
    assert cpu_window_batch([32, 32, 16], 2) == 4 and cpu_window_batch([32, 32, 16], 8) == 8
    # 2D: on the CPU, slices per pass only up to 64^3 voxels; on a GPU, 16.
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert slices_per_batch([256, 224], cpu) == 4 and slices_per_batch([64, 64], cpu) == 16
    assert slices_per_batch([1024, 1024], cpu) == 1 and slices_per_batch([256, 224], gpu) == 16
    chosen = make_segmenter(pipeline, overlap=0.6, tta=True, batch_size=3)
    assert chosen.overlap == 0.6 and chosen.mirror_axes == (0, 1, 2) and chosen.batch_size == 3
    for bad in ({"overlap": 1.0}, {"overlap": -0.1}, {"batch_size": 0}, {"batch_size": 1.5}):
        with pytest.raises(ConfigError):
            InferenceSettings(**bad)


def test_from_folder_loads_the_model_once_and_segments(tmp_path):
    pipeline = make_pipeline()
    segmenter = make_segmenter(pipeline)
    folder = export_model_folder(
        tmp_path / "model", weights=segmenter.network.state_dict(), pipeline=pipeline, metadata={"dataset": "phantom"}
    )
    loaded = Segmenter.from_folder(folder, device="cpu")
    assert loaded.metadata["dataset"] == "phantom" and loaded.metadata["num_classes"] == 4
    assert loaded.pipeline == pipeline and loaded.device == torch.device("cpu")
    image = oblique_phantom()
    np.testing.assert_array_equal(loaded.segment(image).array, segmenter.segment(image).array)
    assert segments_of(pipeline) == loaded.segment(image).segments


def test_bad_inputs_are_refused():
    segmenter = make_segmenter(make_pipeline())
    image = oblique_phantom()
    with pytest.raises(InputError, match="label map"):
        segmenter.segment(image.replace(array=np.zeros(image.spatial_shape, np.uint8), kind=VolumeKind.LABEL))
    with pytest.raises(InputError, match="channel"):
        segmenter.segment(image.with_array(np.stack([image.channel(0)] * 2)))


MEMORY_SCRIPT = """
import re
import numpy as np, torch
torch.set_num_threads(1)
from medseg.config import parse_pipeline
from medseg.geometry import Geometry
from medseg.inference.engine import InferenceSettings, Segmenter
from medseg.volume import Volume

labels = "{" + ", ".join(f"{n}: l{n}" for n in range(1, 81)) + "}"
pipeline = parse_pipeline('''
version: 1
name: memory
modality: CT
labels: LABELS
preprocessing:
  spacing: [1.5, 1.5, 2.0]
  channels: [{name: CT, normalization: {scheme: none}}]
network: {dimensions: 3, filters: [4, 4, 4], kernel_sizes: [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
          strides: [[1, 1, 1], [2, 2, 2], [2, 2, 2]], deep_supervision_heads: 1}
training: {patch_size: [32, 32, 16]}
'''.replace("LABELS", labels))
torch.manual_seed(0)
network = torch.nn.Conv3d(1, pipeline.num_classes, 1)  # cheap: the test is about the scores, not the network
segmenter = Segmenter(network, pipeline, device="cpu", settings=InferenceSettings(overlap=0.0))

def volume(shape):
    geometry = Geometry.from_spacing(shape, (1.2, 1.2, 2.0), (-10.0, 5.0, 20.0))
    return Volume(np.random.default_rng(0).integers(-100, 100, size=shape, dtype=np.int16), geometry)

def peak_kib():
    return int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

segmenter.segment(volume((40, 30, 20)))  # warm-up: lazy imports and the allocator
image = volume((640, 80, 48))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak resident size
before = peak_kib()
result = segmenter.segment(image)
assert result.geometry == image.geometry
print((peak_kib() - before) * 1024, pipeline.num_classes * int(np.prod(image.spatial_shape)) * 4)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to measure peak memory")
def test_peak_memory_is_far_below_class_scores_times_voxels():
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(MEMORY_SCRIPT)], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    peak, full = (int(v) for v in result.stdout.split())
    # 81 classes x 2.5 M voxels x 4 bytes = 796 MB; the prepared grid alone would hold 510 MB of scores.
    # Measured here: about 90 MB (11 %), most of it preparing the image, not class scores.
    assert peak < 0.25 * full, f"peak {peak / 1e6:.0f} MB for {full / 1e6:.0f} MB of class scores"


def in_lps(pipeline):
    """``pipeline`` trained and run in the canonical LPS voxel order."""
    return pipeline.model_copy(update={"preprocessing": pipeline.preprocessing.model_copy(update={"orientation": "LPS"})})


@pytest.mark.parametrize(("axes", "flips"), [((0, 1, 2), (True, False, True)), ((1, 0, 2), (False, True, False))])
def test_an_lps_pipeline_segments_every_stored_order_alike_and_writes_on_the_stored_grid(axes, flips):
    image, _ = make_phantom(3, geometry=factories.axial_geometry(shape=(41, 37, 13), spacing=(5.5, 6.0, 9.0)))
    stored = factories.stored_as(image, axes, flips)  # the same anatomy, stored feet-first / transposed
    segmenter = make_segmenter(in_lps(make_pipeline()), overlap=0.5)
    labels, confidence = segmenter.segment_with_confidence(stored)
    assert labels.geometry == stored.geometry and labels.channel(0).flags.c_contiguous
    reference, reference_confidence = segmenter.segment_with_confidence(image)
    assert len(np.unique(reference.channel(0))) >= 2
    again = factories.stored_as(reference, axes, flips)
    np.testing.assert_array_equal(labels.channel(0), again.channel(0))
    np.testing.assert_array_equal(confidence, factories.stored_as(image.with_array(reference_confidence), axes, flips).channel(0))
    # the stored order, as pipelines made before the setting run: the network sees another array
    as_stored = make_segmenter(make_pipeline(), overlap=0.5).segment(stored).channel(0)
    assert (as_stored != labels.channel(0)).any()
