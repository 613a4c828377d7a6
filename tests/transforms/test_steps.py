"""The open augmentation list: MONAI transforms by name, checked at load, applied to every patch."""

from __future__ import annotations

import pytest
import torch

from medseg.config import dump_pipeline, parse_pipeline
from medseg.errors import ConfigError
from medseg.transforms import PatchSampler, prepare_case
from medseg.transforms.steps import build_augmentation, check_augmentation, monai_names
from tests.transforms.helpers import make_pipeline, phantom

SMOOTH = {"name": "RandGaussianSmoothd", "keys": ["image"], "prob": 1.0, "sigma_x": [1.0, 1.5], "sigma_y": [1.0, 1.5], "sigma_z": [1.0, 1.5]}


def pipeline_text(steps: str) -> str:
    """A valid pipeline's YAML with ``steps`` (YAML list items, one per line) as its augmentation."""
    text = dump_pipeline(make_pipeline())
    head, _, rest = text.partition("  augmentation:\n")
    tail = rest[rest.index("  folds:") :]
    return f"{head}  augmentation:\n{steps}{tail}"


def line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture(scope="module")
def cases():
    pipeline = make_pipeline()
    return [prepare_case(*phantom(seed), pipeline, case_id=f"p{seed}") for seed in (1, 2)]


def test_an_added_monai_transform_runs_on_every_patch(cases):
    """RandGaussianSmoothd from the pipeline smooths the images of a batch; crops and labels stay the same."""
    plain = PatchSampler(cases, make_pipeline(augmentation=[]), seed=4)
    smoothed = PatchSampler(cases, make_pipeline(augmentation=[SMOOTH]), seed=4)
    (a, a_labels), (b, b_labels) = plain.batch(), smoothed.batch()
    assert torch.equal(a_labels, b_labels)  # the same crops: augmentation draws from its own random state
    assert not torch.allclose(a, b)

    def roughness(x: torch.Tensor) -> float:
        return float(sum(x.diff(dim=d).abs().mean() for d in (2, 3, 4)))

    assert roughness(b) < 0.7 * roughness(a)
    assert b.dtype == torch.float32 and type(b) is torch.Tensor  # no MetaTensor reaches training


def test_a_seed_fixes_the_monai_transforms_too(cases):
    noisy = make_pipeline(augmentation=[{"name": "RandGaussianNoised", "keys": ["image"], "prob": 1.0, "std": 0.5}])
    first, second, third = (PatchSampler(cases, noisy, seed=s).batch()[0] for s in (9, 9, 10))
    assert torch.equal(first, second) and not torch.equal(first, third)


def test_a_misspelled_transform_fails_at_load_with_its_line_and_a_suggestion():
    text = pipeline_text(
        "    - {name: RandFlipd, keys: [image, label], prob: 0.5, spatial_axis: 0}\n"
        "    - {name: RandGausianSmoothd, keys: [image], prob: 0.15}\n"
    )
    pipeline = parse_pipeline(text, source="pipe.yaml")
    line = line_of(text, "RandGausianSmoothd")
    with pytest.raises(ConfigError) as error:
        check_augmentation(pipeline)
    assert str(error.value) == (
        f"pipe.yaml:{line}: training.augmentation[1]: unknown transform 'RandGausianSmoothd' "
        "(did you mean 'RandGaussianSmoothd'?)"
    )


@pytest.mark.parametrize(
    ("step", "message"),
    [
        ("{name: RandGaussianSmoothd, keys: [image], sigma_xx: [0.5, 1.0]}", r"has no argument 'sigma_xx' \(did you mean 'sigma_x'\?\)"),
        ("{name: RandGaussianSmoothd, prob: 0.2}", r"RandGaussianSmoothd: missing a required argument: 'keys'"),
        ("{name: RandGaussianSmooth, keys: [image]}", r"'RandGaussianSmooth' is an array transform.*try 'RandGaussianSmoothd'"),
        ("{name: RandAffineMmd, rotation_degrees: 400}", r"RandAffineMmd: ValueError: rotation_degrees must be within"),
        ("{name: Compose}", r"unknown transform 'Compose'|array transform"),
    ],
)
def test_bad_steps_are_refused_with_the_reason(step, message):
    text = pipeline_text(f"    - {step}\n")
    with pytest.raises(ConfigError, match=rf"^pipe.yaml:{line_of(text, step[:20])}: training.augmentation\[0\]: .*{message}"):
        check_augmentation(parse_pipeline(text, source="pipe.yaml"))


def test_the_old_fixed_keys_load_as_the_steps_they_meant():
    old = make_pipeline(augmentation={"flip_axes": [1], "gaussian_noise_std": 0.0, "gamma": [1.0, 1.0]})
    names = [step.name for step in old.training.augmentation]
    assert names == ["RandAffineMmd", "RandFlipd", "RandScaleIntensityd", "RandScaleIntensityFixedMeand"]
    assert old.training.flip_axes == [1]
    again = parse_pipeline(dump_pipeline(old))
    assert again.training.augmentation == old.training.augmentation
    assert "- {name: RandFlipd, keys: [image, label], prob: 0.5, spatial_axis: 1}" in dump_pipeline(old)
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['elastic'\].*now a list of steps"):
        parse_pipeline(dump_pipeline(make_pipeline()).replace("  augmentation:\n", "  augmentation: {elastic: 1}\n  x:\n", 1))


def test_every_default_step_builds_and_the_registry_knows_monai():
    assert {"RandGaussianSmoothd", "RandBiasFieldd", "Rand3DElasticd"} <= set(monai_names())
    assert len(build_augmentation(make_pipeline()).transforms) == 8
