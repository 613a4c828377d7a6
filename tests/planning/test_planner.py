"""Planning a pipeline: nnU-Net's heuristics, self-consistency, comments, determinism."""

from __future__ import annotations

import dataclasses
import json
import math
import re

import numpy as np
import pytest

from medseg.config import dump_pipeline, parse_pipeline
from medseg.errors import ConfigError
from medseg.planning import (
    Fingerprint,
    compute_fingerprint,
    pipeline_memory_gb,
    pipeline_step_seconds,
    plan_pipeline,
)
from medseg.planning.context import CPU_CONTEXT_SHARE, MIN_LABEL_VOXELS
from medseg.planning.spacing import choose_spacing
from medseg.planning.budget import CPU_BASE_FILTERS, CPU_STEP_SECONDS, CPU_TRAINING_HOURS
from medseg.planning.topology import round_up
from medseg.synthetic import PhantomSpec, make_phantom
from tests.planning.fingerprints import CT_STATS, abdominal_ct, fingerprint, prostate_mr

LABELS = {1: "liver", 2: "spleen", 3: "kidney"}


@pytest.fixture(scope="module")
def phantom_fingerprint() -> Fingerprint:
    """Eight small CT phantoms (about 3 x 3 x 4 mm) on slightly different grids."""
    cases = (
        make_phantom(
            seed, PhantomSpec(shape=(96 - 2 * seed, 80 + seed, 40 - seed), spacing=(3.0, 3.0 + seed / 20, 4.0))
        )
        for seed in range(8)
    )
    return compute_fingerprint(cases, modality="CT", channel_names=["CT"], labels=LABELS)


def _consistent(pipeline, fp: Fingerprint, memory_gb: float, *, base_filters: int | dict[int, int] = 32) -> None:
    """What every plan must satisfy."""
    network, training = pipeline.network, pipeline.training
    dims = network.dimensions
    patch = training.patch_size
    divisor = [math.prod(s[a] for s in network.strides) for a in range(dims)]
    assert all(p % d == 0 for p, d in zip(patch, divisor)), (patch, divisor)
    levels = len(network.filters)
    assert len(network.strides) == len(network.kernel_sizes) == levels >= 3
    assert network.strides[0] == [1] * dims
    assert all(k == 3 for ks, ss in zip(network.kernel_sizes, network.strides) for k, s in zip(ks, ss) if s > 1)
    assert all(p // d >= 4 for p, d in zip(patch, divisor))  # the bottleneck is at least 4 voxels wide
    base = base_filters[dims] if isinstance(base_filters, dict) else base_filters
    assert network.filters[0] == base and max(network.filters) <= {2: 512, 3: 320}[dims]
    median = fp.median_shape_at(pipeline.preprocessing.spacing)[:dims]
    assert all(p <= m for p, m in zip(patch, round_up(median, divisor)))  # never beyond the median image
    assert math.prod(patch) <= {2: 2048**2, 3: 256**3}[dims]
    assert training.batch_size >= 2
    with_two = pipeline.model_copy(update={"training": training.model_copy(update={"batch_size": 2})})
    assert pipeline_memory_gb(with_two) <= memory_gb
    if training.batch_size > 2:
        assert pipeline_memory_gb(pipeline) <= memory_gb
    assert pipeline.inference.mirror_axes == training.flip_axes
    assert set(training.flip_axes) <= set(range(dims))
    if not fp.label_positions:
        assert training.flip_axes == list(range(dims))
    text = dump_pipeline(pipeline)
    assert parse_pipeline(text) == pipeline


CASES = {
    "phantom-like": lambda: fingerprint([(3.0, 3.0, 4.0)] * 5, [(96, 80, 40)] * 5),
    "abdominal-ct": abdominal_ct,
    "prostate-mr": prostate_mr,
    "thick-slices": lambda: fingerprint([(0.5, 0.5, 8.0)] * 6, [(384, 384, 24)] * 6, modality="MR", channels=("T2",)),
    "two-channels": lambda: fingerprint(
        [(1.0, 1.0, 1.0)] * 4, [(160, 192, 150)] * 4, modality="MR", channels=("T1", "FLAIR")
    ),
    "single-slices": lambda: fingerprint([(0.5, 0.5, 1.0)] * 10, [(640, 480, 1)] * 10),
}


@pytest.mark.parametrize("memory_gb", [2.0, 8.0, 40.0])
@pytest.mark.parametrize("case", sorted(CASES))
def test_every_plan_is_self_consistent(case, memory_gb):
    fp = CASES[case]()
    pipeline, _comments = plan_pipeline(fp, name=case, memory_gb=memory_gb)
    _consistent(pipeline, fp, memory_gb)
    forced, _ = plan_pipeline(fp, name=case, memory_gb=memory_gb, dimensions=2)
    _consistent(forced, fp, memory_gb)


def test_phantoms_plan_a_3d_net_on_the_median_grid(phantom_fingerprint):
    fp = phantom_fingerprint
    pipeline, _comments = plan_pipeline(fp, name="phantom")
    assert pipeline.name == "phantom" and pipeline.modality == "CT"
    assert {k: v.name for k, v in pipeline.labels.items()} == LABELS
    assert pipeline.preprocessing.spacing == tuple(round(v, 4) for v in fp.median_spacing)
    assert pipeline.network.dimensions == 3
    # The whole median image fits in memory: the patch is the median shape, rounded up to the strides' product.
    median = fp.median_shape_at(pipeline.preprocessing.spacing)
    assert median == (89, 84, 36)
    assert pipeline.training.patch_size == [96, 96, 40]
    assert pipeline.network.kernel_sizes == [[3, 3, 3]] * len(pipeline.network.filters)
    assert pipeline.network.deep_supervision and pipeline.network.deep_supervision_heads == 2
    assert (pipeline.training.epochs, pipeline.training.iterations_per_epoch) == (1000, 250)
    assert pipeline.training.optimizer.name == "sgd" and pipeline.training.schedule == "poly"
    _consistent(pipeline, fp, 8.0)


def test_comments_explain_each_choice_with_its_numbers(phantom_fingerprint):
    pipeline, comments = plan_pipeline(phantom_fingerprint, name="phantom")
    for key in (
        "preprocessing.spacing",
        "preprocessing.channels",
        "network.dimensions",
        "network.filters",
        "network.strides",
        "network.kernel_sizes",
        "training.patch_size",
        "training.batch_size",
        "training.epochs",
    ):
        assert re.search(r"\d", comments[key]), key
        assert 1 <= len(comments[key].splitlines()) <= 3, key
    assert "median spacing of 8 case(s)" in comments["preprocessing.spacing"]
    assert "median image shape 89 x 84 x 36" in comments["training.patch_size"]
    assert "GiB" in comments["training.batch_size"] and "5%" in comments["training.batch_size"]
    stats = phantom_fingerprint.channels[0]
    assert f"{stats.mean:.1f}" in comments["preprocessing.channels"]
    text = dump_pipeline(pipeline, comments=comments)
    for key, comment in comments.items():
        first = comment.splitlines()[0]
        assert f"# {first}" in text, key  # every comment lands in the YAML, above a key that exists
    assert parse_pipeline(text) == pipeline


def test_same_fingerprint_same_yaml(phantom_fingerprint):
    reloaded = Fingerprint.from_dict(json.loads(json.dumps(phantom_fingerprint.to_dict())))
    texts = [
        dump_pipeline(pipeline, comments=comments)
        for pipeline, comments in (
            plan_pipeline(phantom_fingerprint, name="p", memory_gb=3.0),
            plan_pipeline(phantom_fingerprint, name="p", memory_gb=3.0),
            plan_pipeline(reloaded, name="p", memory_gb=3.0),
        )
    ]
    assert texts[0] == texts[1] == texts[2]


def test_ct_is_clipped_and_standardised_with_foreground_statistics():
    pipeline, comments = plan_pipeline(abdominal_ct(), name="ct")
    (channel,) = pipeline.preprocessing.channels
    assert channel.name == "CT"
    norm = channel.normalization
    assert norm.scheme == "ct"
    assert norm.clip == (CT_STATS.percentile_00_5, CT_STATS.percentile_99_5)
    assert (norm.mean, norm.std) == (CT_STATS.mean, CT_STATS.std)
    assert pipeline.preprocessing.crop_to_nonzero is False
    assert "[-80.5, 260.25]" in comments["preprocessing.channels"]


def test_a_2d_cpu_plan_crops_ct_to_the_body_only_where_every_label_lies_inside_it(phantom_fingerprint):
    options = dict(name="p", memory_gb=2.0, device="cpu", dimensions=2)
    cpu, comments = plan_pipeline(phantom_fingerprint, **options)
    assert cpu.preprocessing.crop_to_body and "labels lie inside its box" in comments["preprocessing.crop_to_body"]
    assert comments["preprocessing.crop_to_body"].startswith("on: crop to the box of voxels above -500 HU")
    stray = dataclasses.replace(phantom_fingerprint, labels_outside_body=(0, 2))
    cpu, comments = plan_pipeline(stray, **options)
    assert not cpu.preprocessing.crop_to_body
    assert comments["preprocessing.crop_to_body"].startswith("off: in 2 training case(s) (index 0, 2) labels lie")
    unmeasured = dataclasses.replace(phantom_fingerprint, body_shapes=())
    assert not plan_pipeline(unmeasured, **options)[0].preprocessing.crop_to_body
    assert not plan_pipeline(phantom_fingerprint, **{**options, "device": "cuda"})[0].preprocessing.crop_to_body
    mr, comments = plan_pipeline(prostate_mr(), name="mr", device="cpu")
    assert not mr.preprocessing.crop_to_body and comments["preprocessing.crop_to_body"] == "off: not CT"


def test_mr_is_standardised_per_image():
    pipeline, comments = plan_pipeline(prostate_mr(), name="mr")
    (channel,) = pipeline.preprocessing.channels
    assert channel.normalization.scheme == "zscore" and channel.normalization.clip is None
    assert pipeline.preprocessing.crop_to_nonzero is True
    assert "z-score per image" in comments["preprocessing.channels"]


def test_a_ct_channel_beside_others_is_still_ct():
    fp = fingerprint([(1.0, 1.0, 1.0)] * 3, [(128, 128, 128)] * 3, modality="PET/CT", channels=("CT", "PET"))
    pipeline, _ = plan_pipeline(fp, name="petct")
    schemes = [c.normalization.scheme for c in pipeline.preprocessing.channels]
    assert schemes == ["ct", "zscore"]


def test_anisotropic_axis_takes_its_10th_percentile_and_thin_kernels():
    fp = prostate_mr()  # 0.7 x 0.7 mm, 17 of 20 cases at 5 mm, three at 3-3.5 mm
    pipeline, comments = plan_pipeline(fp, name="mr")
    expected = float(np.percentile([c[2] for c in fp.spacings], 10))
    assert fp.median_spacing[2] == 5.0 and expected < 4.0
    assert pipeline.preprocessing.spacing == (0.7, 0.7, round(expected, 4))
    assert "10th percentile" in comments["preprocessing.spacing"]
    assert pipeline.network.dimensions == 3  # 4.9x after the rule: anisotropic, not extreme
    assert pipeline.network.kernel_sizes[0] == [3, 3, 1]  # no convolution across thick slices at full resolution
    assert pipeline.network.strides[1] == [2, 2, 1]  # k is not halved until i and j have caught up
    assert "1 along axis [2]" in comments["network.kernel_sizes"]


def test_isotropic_or_few_anisotropic_voxels_keep_the_median():
    fp = fingerprint([(0.8, 0.8, 3.0)] * 4 + [(0.8, 0.8, 1.0)], [(200, 200, 120)] * 5)
    pipeline, comments = plan_pipeline(fp, name="x")
    assert pipeline.preprocessing.spacing == (0.8, 0.8, 3.0)  # k 3.75x coarser, but not 3x fewer voxels
    assert "has enough voxels" in comments["preprocessing.spacing"]


def test_extreme_slices_plan_2d():
    fp = CASES["thick-slices"]()  # 0.5 x 0.5 x 8 mm: 16x
    pipeline, comments = plan_pipeline(fp, name="thick")
    assert pipeline.network.dimensions == 2
    assert len(pipeline.training.patch_size) == 2 and pipeline.training.patch_size[0] > 100
    assert pipeline.inference.mirror_axes == [0, 1]
    assert "2D" in comments["network.dimensions"] and "16.0" in comments["network.dimensions"]
    assert pipeline.network.filters[-1] == 512


def test_single_slice_images_plan_2d():
    pipeline, comments = plan_pipeline(CASES["single-slices"](), name="xray")
    assert pipeline.network.dimensions == 2 and "single slices" in comments["network.dimensions"]


def test_a_coarse_axis_other_than_k_stays_3d():
    fp = fingerprint([(8.0, 0.5, 0.5)] * 4, [(24, 384, 384)] * 4)
    pipeline, comments = plan_pipeline(fp, name="sagittal")
    assert pipeline.network.dimensions == 3
    assert "the coarse axis is i" in comments["network.dimensions"]
    assert pipeline.network.kernel_sizes[0] == [1, 3, 3]


def test_dimensions_can_be_forced():
    fp = abdominal_ct()
    assert plan_pipeline(fp, name="a", dimensions=2)[0].network.dimensions == 2
    assert plan_pipeline(CASES["thick-slices"](), name="b", dimensions=3)[0].network.dimensions == 3


def test_a_small_memory_budget_shrinks_the_patch():
    fp = abdominal_ct()
    big, _big_comments = plan_pipeline(fp, name="big", memory_gb=24.0)
    small, small_comments = plan_pipeline(fp, name="small", memory_gb=1.0)
    assert math.prod(small.training.patch_size) < math.prod(big.training.patch_size) / 4
    assert pipeline_memory_gb(small) <= 1.0 < pipeline_memory_gb(big)
    assert small.training.batch_size == 2
    assert "shrunk" in small_comments["training.patch_size"] and "<= 1 GiB" in small_comments["training.patch_size"]
    assert len(small.network.filters) < len(big.network.filters)  # fewer levels fit a smaller patch


def test_spare_memory_goes_to_batch_size_up_to_5_percent_of_the_data():
    fp = fingerprint([(1.0, 1.0, 1.0)] * 200, [(64, 64, 64)] * 200)
    pipeline, _comments = plan_pipeline(fp, name="small-images", memory_gb=40.0)
    assert pipeline.training.patch_size == [64, 64, 64]
    by_dataset = round(0.05 * 200 * 64**3 / 64**3)
    assert pipeline.training.batch_size == by_dataset == 10
    few, _ = plan_pipeline(fingerprint([(1.0, 1.0, 1.0)] * 3, [(64, 64, 64)] * 3), name="few", memory_gb=40.0)
    assert few.training.batch_size == 2  # 5% of 3 images is less than one patch; at least 2


def test_too_little_memory_or_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="memory_gb=0.01 is too small"):
        plan_pipeline(abdominal_ct(), name="x", memory_gb=0.01)
    with pytest.raises(ConfigError, match="too small for a U-Net"):
        plan_pipeline(fingerprint([(1.0, 1.0, 1.0)] * 2, [(6, 6, 6)] * 2), name="x")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"memory_gb": 0}, "memory_gb"),
        ({"memory_gb": float("inf")}, "memory_gb"),
        ({"dimensions": 4}, "dimensions"),
        ({"epochs": 0}, "epochs"),
        ({"epochs": True}, "epochs"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        plan_pipeline(abdominal_ct(), **{"name": "x", **options})


def test_a_fingerprint_that_cannot_make_a_pipeline_is_a_config_error():
    fp = fingerprint([(1.0, 1.0, 1.0)] * 3, [(64, 64, 64)] * 3, labels={0: "background", 1: "liver"})
    with pytest.raises(ConfigError, match="planned pipeline is invalid.*labels"):
        plan_pipeline(fp, name="x")


def test_epochs_can_be_set():
    pipeline, comments = plan_pipeline(abdominal_ct(), name="x", epochs=50)
    assert pipeline.training.epochs == 50 and pipeline.training.iterations_per_epoch == 250
    assert comments["training.epochs"].startswith("as requested")


def test_the_planned_network_runs(phantom_fingerprint):
    """MONAI's DynUNet, built from a plan exactly as training will build it, takes a patch."""
    torch = pytest.importorskip("torch")
    from medseg.models.networks import build_network

    small = fingerprint([(6.0, 6.0, 8.0)] * 3, [(48, 40, 20)] * 3, labels=LABELS)
    for dimensions in ("auto", 2):
        pipeline, _ = plan_pipeline(small, name="tiny", dimensions=dimensions)
        network, patch = pipeline.network, pipeline.training.patch_size
        assert network.dimensions == (3 if dimensions == "auto" else 2)
        in_channels = len(pipeline.preprocessing.channels)
        model = build_network(network, in_channels=in_channels, out_channels=pipeline.num_classes)
        x = torch.zeros(1, in_channels, *patch)
        with torch.no_grad():
            assert model.eval()(x).shape == (1, 4, *patch)
            heads = model.train()(x)
        assert heads.shape == (1, network.deep_supervision_heads + 1, 4, *patch)


# -- planning for a CPU ----------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_cpu_plan_is_self_consistent_and_fits_a_step_budget(case):
    fp = CASES[case]()
    for dimensions in ("auto", 2):
        pipeline, comments = plan_pipeline(fp, name=case, memory_gb=2.0, dimensions=dimensions, device="cpu")
        _consistent(pipeline, fp, 2.0, base_filters=CPU_BASE_FILTERS)
        assert max(pipeline.network.filters) <= {2: 256, 3: 128}[pipeline.network.dimensions]
        seconds = pipeline_step_seconds(pipeline, threads=2)
        assert seconds <= CPU_STEP_SECONDS or "cannot shrink further" in comments["training.patch_size"]
        gpu, _ = plan_pipeline(fp, name=case, memory_gb=2.0, dimensions=dimensions, device="cuda")
        assert math.prod(pipeline.training.patch_size) <= math.prod(gpu.training.patch_size)
        assert pipeline_step_seconds(gpu, threads=2) >= seconds


def test_the_device_is_explicit_and_the_gpu_plan_is_nnunets(phantom_fingerprint):
    default, default_comments = plan_pipeline(phantom_fingerprint, name="p", memory_gb=2.0)
    gpu, gpu_comments = plan_pipeline(phantom_fingerprint, name="p", memory_gb=2.0, device="cuda", cpu_threads=7)
    assert dump_pipeline(default, comments=default_comments) == dump_pipeline(gpu, comments=gpu_comments)
    assert not any("CPU" in text for text in gpu_comments.values())


def test_phantoms_on_a_cpu_get_a_narrow_net_and_a_patch_for_a_quarter_second_step(phantom_fingerprint):
    gpu, _ = plan_pipeline(phantom_fingerprint, name="phantom", memory_gb=2.0)
    cpu, comments = plan_pipeline(phantom_fingerprint, name="phantom", memory_gb=2.0, device="cpu", cpu_threads=2)
    assert gpu.training.patch_size == [96, 80, 40] and pipeline_step_seconds(gpu, threads=2) > 3.0
    assert cpu.network.filters == [16, 32, 64, 128]
    assert math.prod(cpu.training.patch_size) < math.prod(gpu.training.patch_size) / 4
    assert all(c >= g / 3 for c, g in zip(cpu.training.patch_size, gpu.training.patch_size))  # still sizeable
    assert 0.15 < pipeline_step_seconds(cpu, threads=2) <= CPU_STEP_SECONDS
    assert cpu.training.batch_size == 2
    assert cpu.preprocessing == gpu.preprocessing and cpu.network.dimensions == 3  # the grid is the same
    assert comments["preprocessing.crop_to_body"].startswith("off: a 3D plan keeps the whole scan")
    for key in ("network.filters", "training.patch_size", "training.epochs"):
        assert "planned for a CPU" in comments[key], key
    assert "2 CPU threads" in comments["training.patch_size"] and "shrunk" in comments["training.patch_size"]
    assert "0.25 s on 2 CPU threads allows" in comments["training.batch_size"]
    assert "a CPU (2 CPU threads" in cpu.description
    _consistent(cpu, phantom_fingerprint, 2.0, base_filters=CPU_BASE_FILTERS)


def test_more_cpu_threads_allow_a_larger_patch(phantom_fingerprint):
    sizes = []
    for threads in (1, 2, 4, 8, 64):
        pipeline, _ = plan_pipeline(phantom_fingerprint, name="p", memory_gb=2.0, device="cpu", cpu_threads=threads)
        sizes.append(math.prod(pipeline.training.patch_size))
    assert sizes == sorted(sizes) and sizes[0] < sizes[2]
    assert sizes[3] == sizes[4]  # no gain assumed beyond 8 threads


def test_cpu_epochs_are_a_nights_run_unless_given(phantom_fingerprint):
    pipeline, comments = plan_pipeline(phantom_fingerprint, name="p", device="cpu")
    training = pipeline.training
    hours = training.epochs * training.iterations_per_epoch * pipeline_step_seconds(pipeline, threads=2) / 3600
    assert training.epochs * training.iterations_per_epoch < 250_000
    assert hours == pytest.approx(CPU_TRAINING_HOURS, rel=0.01)
    assert "--time-limit" in comments["training.epochs"] and f"{training.epochs} epochs" in comments["training.epochs"]
    given, given_comments = plan_pipeline(phantom_fingerprint, name="p", device="cpu", epochs=40)
    assert given.training.epochs == 40 and given_comments["training.epochs"].startswith("as requested")


def test_cpu_plans_are_deterministic(phantom_fingerprint):
    reloaded = Fingerprint.from_dict(json.loads(json.dumps(phantom_fingerprint.to_dict())))
    plans = [
        plan_pipeline(fp, name="p", memory_gb=2.0, device="cpu", cpu_threads=2)
        for fp in (phantom_fingerprint, phantom_fingerprint, reloaded)
    ]
    texts = {dump_pipeline(pipeline, comments=comments) for pipeline, comments in plans}
    assert len(texts) == 1


def test_memory_still_binds_on_a_cpu():
    fp = abdominal_ct()
    pipeline, comments = plan_pipeline(fp, name="ct", memory_gb=0.5, device="cpu", cpu_threads=64)
    assert pipeline_memory_gb(pipeline) <= 0.5
    with pytest.raises(ConfigError, match="memory_gb=0.01 is too small"):
        plan_pipeline(fp, name="x", memory_gb=0.01, device="cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": "gpu"}, "device"),
        ({"device": "auto"}, "device"),
        ({"cpu_threads": 0}, "cpu_threads"),
        ({"cpu_speed": 0}, "cpu_speed"),
        ({"cpu_speed": float("nan")}, "cpu_speed"),
    ],
)
def test_bad_device_options_are_refused(options, message):
    with pytest.raises(ConfigError, match=message):
        plan_pipeline(abdominal_ct(), name="x", **options)


def test_the_planned_cpu_network_runs_a_training_step():
    """MONAI's DynUNet built from a CPU plan takes a batch, forward and backward."""
    torch = pytest.importorskip("torch")
    from medseg.models.networks import build_network

    small = fingerprint([(4.0, 4.0, 5.0)] * 3, [(72, 60, 32)] * 3, labels=LABELS)
    pipeline, _ = plan_pipeline(small, name="tiny", device="cpu")
    network, patch = pipeline.network, pipeline.training.patch_size
    model = build_network(network, in_channels=1, out_channels=pipeline.num_classes).train()
    heads = model(torch.zeros(pipeline.training.batch_size, 1, *patch))
    assert heads.shape == (pipeline.training.batch_size, network.deep_supervision_heads + 1, 4, *patch)
    heads.mean().backward()


# -- context before resolution ---------------------------------------------------------


def abdomen(spacing, shape, millilitres=(1500.0, 200.0, 150.0), cases=24) -> Fingerprint:
    """A CT cohort whose labels have realistic volumes (mL per case)."""
    base = fingerprint([spacing] * cases, [shape] * cases, labels=dict(LABELS))
    voxel_ml = math.prod(spacing) / 1000
    return dataclasses.replace(
        base,
        label_voxels={k: round(ml / voxel_ml) * cases for k, ml in zip(LABELS, millilitres)},
        label_cases=dict.fromkeys(LABELS, cases),
    )


def test_a_cpu_budget_trades_resolution_for_context():
    """The issue's cohort (168 x 168 x 68 at 2 x 2 x 3 mm): full resolution allowed a 10 x 10 x 5 cm patch."""
    fp = abdomen((2.0, 2.0, 3.0), (168, 168, 68))
    pipeline, comments = plan_pipeline(fp, name="ct", memory_gb=2.0, device="cpu", cpu_threads=2)
    spacing = pipeline.preprocessing.spacing
    assert all(s > 1.5 * f for s, f in zip(spacing[:2], (2.0, 2.0)))  # coarser in plane
    covered = [p * s / (m * f) for p, s, m, f in zip(pipeline.training.patch_size, spacing, (168, 168, 68), (2, 2, 3))]
    assert math.prod(min(1.0, c) for c in covered) ** (1 / 3) >= CPU_CONTEXT_SHARE - 0.02
    assert pipeline_step_seconds(pipeline, threads=2) <= CPU_STEP_SECONDS
    text = comments["preprocessing.spacing"]
    assert "context before resolution" in text and "27% of the median image" in text and "target 50%" in text
    assert re.search(r"it covers [\d.]+ x [\d.]+ x [\d.]+ mm, 5\d% of the median image", comments["training.patch_size"])
    assert "WARNING" not in comments["training.patch_size"]
    assert "x the full-resolution spacing" in pipeline.description
    assert pipeline.training.planned_step_seconds == pytest.approx(pipeline_step_seconds(pipeline, threads=2), 0.01)
    _consistent(pipeline, fp, 2.0, base_filters=CPU_BASE_FILTERS)


def test_small_labels_limit_the_coarsening_and_the_plan_says_so(caplog):
    """A 1 mL label on 1 mm voxels: the grid may not coarsen until it is fewer than 10 voxels across."""
    fp = abdomen((1.0, 1.0, 1.5), (128, 128, 96), millilitres=(300.0, 1.0, 300.0))
    pipeline, comments = plan_pipeline(fp, name="ct", memory_gb=2.0, device="cpu", cpu_threads=2)
    smallest_mm = (6 * 1000 / math.pi) ** (1 / 3)  # 12.4 mm across
    assert smallest_mm / min(pipeline.preprocessing.spacing) >= MIN_LABEL_VOXELS
    assert "stopped where the smallest label, spleen" in comments["preprocessing.spacing"]
    assert "WARNING: below the 50% this plan aims for" in comments["training.patch_size"]
    assert "covers only" in caplog.text


def test_gpu_plans_of_typical_scans_keep_full_resolution():
    """On a GPU nnU-Net's full-resolution patch is kept (its 3d_lowres/cascade is not planned)."""
    for fp in (abdomen((2.0, 2.0, 3.0), (168, 168, 68)), abdominal_ct(), prostate_mr()):
        pipeline, comments = plan_pipeline(fp, name="p", memory_gb=8.0, device="cuda")
        assert pipeline.preprocessing.spacing == choose_spacing(fp).spacing
        assert "context before resolution" not in comments["preprocessing.spacing"]
        assert pipeline.training.planned_step_seconds is None


def test_phantoms_are_not_coarsened_on_a_cpu(phantom_fingerprint):
    """Their CPU patch already covers half the image: resolution is kept (the bundled model's plan)."""
    pipeline, comments = plan_pipeline(phantom_fingerprint, name="p", memory_gb=2.0, device="cpu")
    assert pipeline.preprocessing.spacing == choose_spacing(phantom_fingerprint).spacing
    assert "context before resolution" not in comments["preprocessing.spacing"]


def with_positions(fp: Fingerprint, positions: dict[int, list[tuple[float, float, float]]]) -> Fingerprint:
    return dataclasses.replace(fp, label_positions={k: tuple(v) for k, v in positions.items()})


def test_no_mirroring_along_an_axis_where_a_label_always_lies_on_one_side():
    """Liver left of the middle along i in every case: mirroring along i would put it where the spleen is."""
    fp = abdomen((2.0, 2.0, 3.0), (168, 168, 68))
    lateral = with_positions(
        fp,
        {
            1: [(0.30 + 0.01 * c, 0.52, 0.5) for c in range(10)],  # liver: one side along i
            2: [(0.72, 0.48 + 0.01 * c, 0.5) for c in range(10)],  # spleen: the other
            3: [(0.5 + (-1) ** c * 0.2, 0.55, 0.45) for c in range(10)],  # kidneys: both sides, centred overall
        },
    )
    pipeline, comments = plan_pipeline(lateral, name="ct", memory_gb=2.0, device="cpu")
    assert pipeline.training.flip_axes == pipeline.inference.mirror_axes == [1, 2]
    text = " ".join(comments["training.augmentation"].split())
    assert "i: liver at 0.34 (100% of 10 cases on that side), spleen at 0.72" in text
    centred = with_positions(fp, {1: [(0.5 + (-1) ** c * 0.1, 0.5, 0.5) for c in range(10)]})
    pipeline, comments = plan_pipeline(centred, name="ct", memory_gb=2.0, device="cpu")
    assert pipeline.training.flip_axes == [0, 1, 2]
    assert "no label lies consistently on one side" in " ".join(comments["training.augmentation"].split())
    few = with_positions(fp, {1: [(0.1, 0.1, 0.1)] * 2})  # two cases are too few to tell
    assert plan_pipeline(few, name="ct", device="cpu")[0].training.flip_axes == [0, 1, 2]


def test_cpu_plans_use_adamw_and_short_epochs_and_gpu_plans_nnuNets_sgd(phantom_fingerprint):
    cpu, comments = plan_pipeline(phantom_fingerprint, name="p", device="cpu")
    assert cpu.training.optimizer.name == "adamw" and cpu.training.optimizer.learning_rate == 1e-3
    assert cpu.training.iterations_per_epoch == 100 and "AdamW" in comments["training.optimizer"]
    gpu, _ = plan_pipeline(phantom_fingerprint, name="p", device="cuda")
    assert gpu.training.optimizer.name == "sgd" and gpu.training.optimizer.momentum == 0.99
    assert gpu.training.iterations_per_epoch == 250 and gpu.training.epochs == 1000


def test_a_slower_machine_gets_a_cheaper_step():
    fp = abdomen((2.0, 2.0, 3.0), (168, 168, 68))
    reference, _ = plan_pipeline(fp, name="ct", memory_gb=2.0, device="cpu", cpu_speed=1.0)
    slower, comments = plan_pipeline(fp, name="ct", memory_gb=2.0, device="cpu", cpu_speed=2.5)
    assert pipeline_step_seconds(slower, threads=2) * 2.5 <= CPU_STEP_SECONDS
    assert pipeline_step_seconds(slower, threads=2) < pipeline_step_seconds(reference, threads=2)
    assert min(slower.preprocessing.spacing) >= min(reference.preprocessing.spacing)  # context is kept
    assert "2.5x the reference step time" in slower.description
    assert slower.training.planned_step_seconds == pytest.approx(2.5 * pipeline_step_seconds(slower, threads=2), 0.01)


def test_a_2d_cpu_patch_grows_to_cover_most_slices_where_the_budget_allows():
    # Slices from 180 x 130 to 270 x 205 voxels at 0.7 mm, 5 mm apart: a 2D network.
    shapes = [(180 + 5 * n, 130 + 4 * n, 28) for n in range(19)]
    fp = fingerprint([(0.7, 0.7, 5.0)] * len(shapes), shapes)
    fast, comments = plan_pipeline(fp, name="p", device="cpu", cpu_speed=0.25)
    assert fast.network.dimensions == 2
    high = np.percentile(np.asarray(shapes)[:, :2], 90, axis=0)
    assert all(p >= h for p, h in zip(fast.training.patch_size, high))  # nine slices in ten take one window
    assert "the slices' 90th percentile shape" in comments["training.patch_size"]
    median_only, comments = plan_pipeline(fp, name="p", device="cpu", cpu_speed=8.0)  # a slow machine
    assert any(p < h for p, h in zip(median_only.training.patch_size, high))
    assert "the median image shape" in comments["training.patch_size"]
    gpu, comments = plan_pipeline(fp, name="p", device="cuda")
    assert "percentile" not in comments["training.patch_size"]  # nnU-Net's rule: the median


def test_a_cohort_stored_in_mixed_voxel_orders_is_planned_in_one_orientation(tmp_path):
    """Half the phantoms stored as RAS NIfTI (i and j reversed): measured in their stored order, no label keeps
    a side along i or j and mirroring stays on; in the canonical order the plan trains in, the sides show."""
    from medseg.planning import plan_dataset
    from medseg.planning.context import mirror_axes
    from medseg.planning.fingerprint import compute_fingerprint
    from tests import factories
    from tests.datasets.builders import ct_pair, write_nnunet

    cases = {}
    for seed in range(6):
        (image,), label = ct_pair(seed)
        if seed % 2:
            image, label = (factories.stored_as(v, (0, 1, 2), (True, True, False)) for v in (image, label))
        cases[f"mixed_{seed}"] = ([image], label)
    folder = write_nnunet(tmp_path / "Dataset009_Mixed", cases, ("CT",))
    plan = plan_dataset(folder, device="cpu", cpu_speed=1.0)
    assert plan.pipeline.preprocessing.orientation == "LPS"
    assert "one voxel order" in plan.comments["preprocessing.orientation"]
    assert 0 not in plan.pipeline.inference.mirror_axes and 1 not in plan.pipeline.inference.mirror_axes
    stored = compute_fingerprint(
        [(images[0], label) for images, label in cases.values()],
        modality="CT",
        channel_names=["CT"],
        labels={1: "liver", 2: "spleen", 3: "kidney"},
    )
    assert {0, 1} <= set(mirror_axes(stored, 3)[0])  # what training in the stored order would have flipped
