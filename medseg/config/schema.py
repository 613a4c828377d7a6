"""The pipeline schema: everything that defines how a model is trained and run.

A pipeline is data (YAML), validated on load: unknown keys are refused and every
error names the key and its line. Variations are values, not subclasses; names
(architecture, loss, optimiser, schedule) are chosen from fixed sets that the
training code resolves through registries. Augmentation is an open, ordered list
of transforms by name (medseg's or any MONAI dictionary transform), checked against
the transforms' signatures by :mod:`medseg.transforms.steps`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]
Probability = Annotated[float, Field(ge=0, le=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Normalization(_Strict):
    """Intensity normalisation of one input channel.

    ``ct``: clip to ``clip`` (HU, from foreground percentiles of the training set),
    then subtract ``mean`` and divide by ``std`` (the training set's foreground
    statistics, as nnU-Net computes them): the same numbers for every image. ``zscore``: per image, using
    that image's own mean and standard deviation (inside its non-zero region).
    ``none``: leave values as they are. ``rescale01``: per image, minus its minimum, over its range;
    ``rgb01``: over 255 (nnU-Net's ``RescaleTo01Normalization`` and ``RGBTo01Normalization``).
    """

    scheme: Literal["ct", "zscore", "none", "rescale01", "rgb01"]
    clip: tuple[float, float] | None = None
    mean: float | None = None
    std: PositiveFloat | None = None

    @model_validator(mode="after")
    def _ct_needs_statistics(self) -> Normalization:
        if self.scheme == "ct" and (self.clip is None or self.mean is None or self.std is None):
            raise ValueError("scheme 'ct' needs clip, mean and std (medseg plan computes them)")
        if self.clip is not None and self.clip[0] >= self.clip[1]:
            raise ValueError(f"clip must be [low, high] with low < high, got {list(self.clip)}")
        return self


class Channel(_Strict):
    """One input channel (e.g. CT, or T1/T2/FLAIR of an MR study)."""

    name: str
    normalization: Normalization


class Label(_Strict):
    """One output class. Codes are (value, scheme designator, meaning) triplets for DICOM SEG."""

    name: str
    category: tuple[str, str, str] | None = None
    type: tuple[str, str, str] | None = None
    color: tuple[int, int, int] | None = None


class Preprocessing(_Strict):
    """How images are brought onto the grid the network sees."""

    spacing: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    channels: list[Channel] = Field(min_length=1)
    crop_to_nonzero: bool = False
    crop_to_body: bool = False  # CT: crop to the box of voxels above -500 HU (medseg.transforms.normalize.BODY_HU)
    # LPS: every scan is turned into one voxel order (medseg.orientation) before anything else, in training
    # and at inference, and masks are turned back onto the stored grid; stored: each scan as it is stored
    # (pipelines and models made before this setting existed).
    orientation: Literal["stored", "LPS"] = "stored"


class Network(_Strict):
    """A U-Net (MONAI DynUNet): one entry per resolution level in filters, kernels and strides."""

    architecture: Literal["dynunet"] = "dynunet"
    dimensions: Literal[2, 3]
    filters: list[PositiveInt] = Field(min_length=3)  # DynUNet needs at least three levels
    kernel_sizes: list[list[PositiveInt]]
    strides: list[list[PositiveInt]]
    deep_supervision: bool = True
    deep_supervision_heads: Annotated[int, Field(ge=0)] = 2
    norm: Literal["instance", "batch"] = "instance"

    @model_validator(mode="after")
    def _levels_agree(self) -> Network:
        levels = len(self.filters)
        for name in ("kernel_sizes", "strides"):
            value = getattr(self, name)
            if len(value) != levels:
                raise ValueError(f"{name} needs one entry per level ({levels}, like filters), got {len(value)}")
            for entry in value:
                if len(entry) != self.dimensions:
                    raise ValueError(f"each of {name} needs {self.dimensions} numbers, got {entry}")
        if any(s != 1 for s in self.strides[0]):
            raise ValueError(f"the first level's strides must be all 1, got {self.strides[0]}")
        if self.deep_supervision and self.deep_supervision_heads > levels - 2:
            raise ValueError(f"deep_supervision_heads must be at most {levels - 2} for {levels} levels")
        return self


class Optimizer(_Strict):
    """SGD (with Nesterov momentum, as nnU-Net) or AdamW."""

    name: Literal["sgd", "adamw"] = "sgd"
    learning_rate: PositiveFloat = 0.01
    weight_decay: Annotated[float, Field(ge=0)] = 3e-5
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.99
    nesterov: bool = True


#: The old fixed augmentation keys (before the open list) and their defaults; see :func:`migrate_augmentation`.
LEGACY_AUGMENTATION: dict[str, object] = {
    "rotation_degrees": 15.0,
    "scale": [0.85, 1.25],
    "flip_axes": [0, 1, 2],
    "spatial_probability": 0.2,
    "gaussian_noise_std": 0.1,
    "brightness": 0.25,
    "contrast": 0.25,
    "gamma": [0.7, 1.5],
    "intensity_probability": 0.15,
}


class Step(BaseModel):
    """One augmentation step: a transform's name and its keyword arguments, applied in list order to
    every training patch (a dictionary of `image`, `label` and the patch's `spacing`), e.g.
    `{name: RandGaussianSmoothd, keys: [image], prob: 0.15, sigma_x: [0.5, 1.0]}`.

    The name is medseg's `RandAffineMmd` (rotation and zoom in millimetres, so true rotations on
    anisotropic grids; first in the list, the patch sampler draws it before cutting the patch, so
    rotated corners come from the scan, not padding) or any MONAI dictionary transform
    (`RandGaussianSmoothd`, `RandBiasFieldd`, `Rand3DElasticd`, ...). `medseg train` checks every
    name and argument against the transform's signature before it starts and refuses a bad one with
    its line and a suggestion. Random draws follow `training.seed` (MONAI's `set_random_state`).
    The default, written out by `medseg plan`, is nnU-Net's set: `RandAffineMmd` (p 0.2), a
    `RandFlipd` per mirrored axis (p 0.5), `RandGaussianNoised`, `RandScaleIntensityd`,
    `RandScaleIntensityFixedMeand` (contrast) and `RandAdjustContrastd` (gamma), p 0.15 each.

    The old fixed form (`augmentation: {rotation_degrees: 15, flip_axes: [0, 1], ...}`) still
    loads, as the steps it meant; `medseg plan` and saved models write the list.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = Field(min_length=1)

    @property
    def arguments(self) -> dict[str, object]:
        """Everything but the name: the transform's keyword arguments."""
        return dict(self.model_extra or {})


def default_augmentation(flip_axes: list[int]) -> list[Step]:
    """nnU-Net's augmentation as steps: rotation and zoom in mm, flips along ``flip_axes``, intensity.

    Rotation (15 degrees per axis; in 2D about the slice normal) and zoom (0.85-1.25) each with
    probability 0.2; each flip with probability 0.5; Gaussian noise, brightness, contrast (about
    the mean, within the range) and gamma (statistics kept) each with probability 0.15.
    """
    return migrate_augmentation({**LEGACY_AUGMENTATION, "flip_axes": list(flip_axes)})


def migrate_augmentation(old: dict[str, object]) -> list[Step]:
    """The steps that do what the old fixed keys (``rotation_degrees``, ``flip_axes``, ...) did."""
    unknown = sorted(set(old) - set(LEGACY_AUGMENTATION))
    if unknown:
        raise ValueError(
            f"unknown key(s) {unknown} in the old augmentation form; the augmentation is now a list of steps, "
            f"e.g. [{{name: RandAffineMmd, prob: 0.2}}, {{name: RandFlipd, keys: [image, label], prob: 0.5, "
            f"spatial_axis: 0}}] (see docs/pipelines.md)"
        )
    settings = {**LEGACY_AUGMENTATION, **old}
    steps: list[dict[str, object]] = []
    spatial = settings["spatial_probability"]
    if float(settings["rotation_degrees"]) > 0 or list(settings["scale"]) != [1.0, 1.0]:
        steps.append(
            {
                "name": "RandAffineMmd",
                "keys": ["image", "label"],
                "prob": spatial,
                "rotation_degrees": settings["rotation_degrees"],
                "scale": list(settings["scale"]),
            }
        )
    for axis in settings["flip_axes"]:
        steps.append({"name": "RandFlipd", "keys": ["image", "label"], "prob": 0.5, "spatial_axis": axis})
    p = settings["intensity_probability"]
    image = ["image"]
    if float(settings["gaussian_noise_std"]) > 0:
        steps.append({"name": "RandGaussianNoised", "keys": image, "prob": p, "std": settings["gaussian_noise_std"]})
    if float(settings["brightness"]) > 0:
        steps.append({"name": "RandScaleIntensityd", "keys": image, "prob": p, "factors": settings["brightness"]})
    if float(settings["contrast"]) > 0:
        steps.append(
            {
                "name": "RandScaleIntensityFixedMeand",
                "keys": image,
                "prob": p,
                "factors": settings["contrast"],
                "preserve_range": True,
            }
        )
    if list(settings["gamma"]) != [1.0, 1.0]:
        steps.append(
            {"name": "RandAdjustContrastd", "keys": image, "prob": p, "gamma": list(settings["gamma"]), "retain_stats": True}
        )
    return [Step.model_validate(step) for step in steps]


class Training(_Strict):
    """The training run: patches, batches, budget, loss and optimisation."""

    patch_size: list[PositiveInt]
    batch_size: PositiveInt = 2
    epochs: PositiveInt = 1000
    iterations_per_epoch: PositiveInt = 250
    validation_interval: PositiveInt = 1
    #: Under a time limit, the most of the run's wall time that validation may take (see docs/training.md).
    validation_share: Annotated[float, Field(gt=0, le=1)] = 0.1
    #: The step time (s, data loading excluded) the plan expected on the machine it was planned on;
    #: training says so when the real one differs by more than 30%.
    planned_step_seconds: PositiveFloat | None = None
    loss: Literal["dice_ce", "dice"] = "dice_ce"
    optimizer: Optimizer = Optimizer()
    schedule: Literal["poly", "cosine"] = "poly"
    foreground_oversampling: Probability = 0.33
    #: Applied in order to every training patch (see :class:`Step` and docs/pipelines.md).
    augmentation: list[Step] = Field(default_factory=lambda: default_augmentation([0, 1, 2]))
    folds: Annotated[int, Field(ge=2)] = 5
    seed: int = 12345

    @field_validator("augmentation", mode="before")
    @classmethod
    def _old_form(cls, value: object) -> object:
        """The old fixed keys (``{rotation_degrees: 15, flip_axes: [0, 1], ...}``) load as the steps they meant."""
        if isinstance(value, dict):
            return migrate_augmentation(value)
        return value

    @property
    def flip_axes(self) -> list[int]:
        """The axes some ``RandFlipd`` step mirrors (the axes test-time mirroring may use)."""
        axes: set[int] = set()
        for step in self.augmentation:
            if step.name in ("RandFlipd", "RandFlipD", "RandFlipDict"):
                axis = step.arguments.get("spatial_axis")
                if isinstance(axis, int):
                    axes.add(axis)
                elif isinstance(axis, (list, tuple)):
                    axes.update(a for a in axis if isinstance(a, int))
        return sorted(axes)


class Postprocessing(_Strict):
    """Clean-up of predicted label maps."""

    largest_component: list[PositiveInt] = []
    min_island_ml: dict[PositiveInt, PositiveFloat] = {}
    fill_holes: list[PositiveInt] = []
    # training replaces largest_component by the labels where keeping only the largest component raised
    # the exported epoch's mean validation Dice (nnU-Net's rule; medseg.training.validation)
    choose_on_validation: bool = False


class Inference(_Strict):
    """Sliding-window settings."""

    overlap: Annotated[float, Field(ge=0, lt=1)] = 0.5
    mirror_axes: list[Annotated[int, Field(ge=0, le=2)]] = []
    batch_size: PositiveInt = 1
    postprocessing: Postprocessing = Postprocessing()


class Pipeline(_Strict):
    """A complete, editable description of a segmentation model's recipe."""

    version: Literal[1] = 1
    name: str
    description: str = ""
    modality: str
    labels: dict[PositiveInt, Label] = Field(min_length=1)
    preprocessing: Preprocessing
    network: Network
    training: Training
    inference: Inference = Inference()
    #: Where the pipeline was read from and the line of each key path (set by the loader), for errors found later.
    _origin: tuple[str, dict[tuple[str, ...], int]] | None = PrivateAttr(default=None)

    @field_validator("labels", mode="before")
    @classmethod
    def _names_as_labels(cls, value: object) -> object:
        """Allow the short form ``labels: {1: liver}`` beside ``{1: {name: liver}}``."""
        if isinstance(value, dict):
            return {k: {"name": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        dimensions = self.network.dimensions
        if len(self.training.patch_size) != dimensions:
            raise ValueError(
                f"training.patch_size has {len(self.training.patch_size)} numbers, network.dimensions is {dimensions}"
            )
        for name, axes in (
            ("training.augmentation (RandFlipd spatial_axis)", self.training.flip_axes),
            ("inference.mirror_axes", self.inference.mirror_axes),
        ):
            if any(axis >= dimensions for axis in axes):
                raise ValueError(f"{name} {axes} names an axis beyond the network's {dimensions} dimensions")
        return self

    def __eq__(self, other: object) -> bool:
        """Equal recipes are equal pipelines, wherever they were read from."""
        if not isinstance(other, Pipeline):
            return NotImplemented
        return self.__dict__ == other.__dict__

    def location(self, *path: str | int) -> str:
        """``file:line`` of the key at ``path`` (or its nearest parent) where the pipeline came from a file."""
        if self._origin is None:
            return "<pipeline>"
        source, lines = self._origin
        keys = tuple(str(part) for part in path)
        line = next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None)
        return f"{source}:{line}" if line else source

    @property
    def num_classes(self) -> int:
        """Output classes including background (label 0)."""
        return max(self.labels) + 1
