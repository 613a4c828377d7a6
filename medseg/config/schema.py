"""The pipeline schema: everything that defines how a model is trained and run.

A pipeline is data (YAML), validated on load: unknown keys are refused and every
error names the key and its line. Variations are values, not subclasses; names
(architecture, loss, optimiser, schedule) are chosen from fixed sets that the
training code resolves through registries.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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
    ``none``: leave values as they are.
    """

    scheme: Literal["ct", "zscore", "none"]
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


class Augmentation(_Strict):
    """Spatial and intensity augmentation, applied to training patches."""

    rotation_degrees: Annotated[float, Field(ge=0, le=180)] = 15.0
    scale: tuple[PositiveFloat, PositiveFloat] = (0.85, 1.25)
    flip_axes: list[Annotated[int, Field(ge=0, le=2)]] = [0, 1, 2]
    spatial_probability: Probability = 0.2
    gaussian_noise_std: Annotated[float, Field(ge=0)] = 0.1
    brightness: Annotated[float, Field(ge=0)] = 0.25
    contrast: Annotated[float, Field(ge=0)] = 0.25
    gamma: tuple[PositiveFloat, PositiveFloat] = (0.7, 1.5)
    intensity_probability: Probability = 0.15


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
    augmentation: Augmentation = Augmentation()
    folds: Annotated[int, Field(ge=2)] = 5
    seed: int = 12345


class Postprocessing(_Strict):
    """Clean-up of predicted label maps."""

    largest_component: list[PositiveInt] = []
    min_island_ml: dict[PositiveInt, PositiveFloat] = {}
    fill_holes: list[PositiveInt] = []


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
            ("training.augmentation.flip_axes", self.training.augmentation.flip_axes),
            ("inference.mirror_axes", self.inference.mirror_axes),
        ):
            if any(axis >= dimensions for axis in axes):
                raise ValueError(f"{name} {axes} names an axis beyond the network's {dimensions} dimensions")
        return self

    @property
    def num_classes(self) -> int:
        """Output classes including background (label 0)."""
        return max(self.labels) + 1
