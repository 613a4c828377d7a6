"""An nnU-Net v2 trained-model folder, loaded as its own tools would: plans, labels, network and folds.

The network is rebuilt from ``plans.json`` with ``dynamic-network-architectures`` (the package
nnU-Net builds it with; ``pip install medseg[nnunet]``), whatever the trainer was called: the
trainer's name only names the folder. Class names in the plans must come from that package
(or ``torch.nn``), so a plans file cannot make medseg import arbitrary code. A trainer that
overrides the architecture in code gives weights that do not fit, which is refused in one line.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from medseg.config.schema import Normalization
from medseg.errors import ModelError
from medseg.models.info import ModelInfo, read_json

log = logging.getLogger(__name__)

#: Modules that plans may name classes from (the network and its building blocks).
ALLOWED_MODULES = ("dynamic_network_architectures.", "torch.nn.")


@dataclass(frozen=True)
class NnunetPlan:
    """What inference needs from ``plans.json`` (one configuration) and ``dataset.json``.

    Attributes:
        configuration: its name, e.g. ``3d_fullres``.
        transpose_forward, transpose_backward: axis order of the network's arrays.
        spacing: target spacing, in the network's axis order (2 entries for a 2D configuration).
        patch_size: the sliding window.
        normalization: the scheme per channel.
        use_mask_for_norm: z-scores inside the non-zero mask only, per channel.
        intensity: the foreground intensity properties per channel (CT).
        resample_data, resample_probabilities: the resampling keyword arguments (order, order_z, force_separate_z).
        labels: label number -> name (background left out).
        regions: for region-based models, the label each output channel paints, in order; else None.
        channels: the input channels' names.
        reader: the plans' image reader (``SimpleITKIO`` or ``NibabelIO`` give the same axis order).
    """

    configuration: str
    transpose_forward: tuple[int, ...]
    transpose_backward: tuple[int, ...]
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    normalization: tuple[str, ...]
    use_mask_for_norm: tuple[bool, ...]
    intensity: dict[str, dict[str, float]]
    resample_data: dict[str, Any]
    resample_probabilities: dict[str, Any]
    labels: dict[int, str]
    regions: tuple[int, ...] | None
    channels: tuple[str, ...]
    reader: str = "SimpleITKIO"
    architecture: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def outputs(self) -> int:
        """Output channels of the network: regions, or classes with background."""
        return len(self.regions) if self.regions is not None else max(self.labels, default=0) + 1

    @property
    def is_2d(self) -> bool:
        return len(self.patch_size) == 2


@dataclass
class NnunetModel:
    """A loaded nnU-Net model: its plan, one network and the weights of each fold.

    Attributes:
        plan: what the plans and dataset say.
        network: the network (eval mode), holding no particular fold's weights until :meth:`use`.
        weights: per fold, its state dict.
        mirror_axes: the axes nnU-Net may mirror at inference (the checkpoint's ``inference_allowed_mirroring_axes``).
        trainer: the trainer's class name, as the checkpoint records it.
    """

    plan: NnunetPlan
    network: torch.nn.Module
    weights: dict[int, dict[str, torch.Tensor]]
    mirror_axes: tuple[int, ...]
    trainer: str

    def use(self, fold: int) -> torch.nn.Module:
        """The network with ``fold``'s weights."""
        self.network.load_state_dict(self.weights[fold])
        return self.network


def load_nnunet(info: ModelInfo, *, folds: Sequence[int] | None = None, device: torch.device) -> NnunetModel:
    """Load the nnU-Net model ``info`` describes (:func:`~medseg.model_formats.describe_model`).

    Args:
        info: the model's description (its checkpoints are the chosen ``final`` or ``best`` ones).
        folds: the folds to load (default: every fold with the checkpoint).
        device: where the network runs.

    Raises:
        ModelError: a fold asked for that is missing, an unreadable checkpoint, a configuration the
            plans lack, a cascade stage, a network the plans cannot name or weights that do not fit it,
            or dynamic-network-architectures not installed.
    """
    chosen = chosen_folds(info, folds)
    files = dict(zip(info.folds, info.checkpoints))
    weights, first = {}, None
    for fold in chosen:
        checkpoint = _read_checkpoint(Path(files[fold]))
        first = first or checkpoint
        weights[fold] = checkpoint["network_weights"]
    assert first is not None
    configuration = str((first.get("init_args") or {}).get("configuration") or info.configuration or "")
    plan = read_plan(Path(info.path), configuration)
    network = build_network(plan).to(device).eval()
    try:
        network.load_state_dict(weights[chosen[0]])
    except RuntimeError as exc:
        raise ModelError(
            f"{files[chosen[0]]}: the weights do not fit the network plans.json describes "
            f"({str(exc).splitlines()[0]}); was the trainer's architecture changed in code?"
        ) from None
    device_weights = {fold: {k: v.to(device) for k, v in state.items()} for fold, state in weights.items()}
    axes = first.get("inference_allowed_mirroring_axes")
    return NnunetModel(
        plan=plan,
        network=network,
        weights=device_weights,
        mirror_axes=tuple(int(a) for a in axes) if axes else (),
        trainer=str(first.get("trainer_name") or info.trainer or ""),
    )


def chosen_folds(info: ModelInfo, folds: Sequence[int] | None) -> list[int]:
    """The folds to run: ``folds``, or every fold with the checkpoint.

    Raises:
        ModelError: a fold asked for that the model folder lacks.
    """
    chosen = list(folds) if folds else list(info.folds)
    missing = sorted(set(chosen) - set(info.folds))
    if missing:
        raise ModelError(
            f"{info.path}: no fold {', '.join(map(str, missing))} with {Path(info.checkpoints[0]).name} "
            f"(folds present: {', '.join(map(str, info.folds))})"
        )
    return chosen


def read_plan(folder: Path, configuration: str) -> NnunetPlan:
    """The plan of ``configuration`` from ``folder``'s ``plans.json`` and ``dataset.json``.

    Raises:
        ModelError: the configuration is missing, or is a cascade stage.
    """
    plans, dataset = read_json(folder / "plans.json"), read_json(folder / "dataset.json")
    configs = plans.get("configurations") or {}
    if configuration not in configs:
        raise ModelError(
            f"{folder / 'plans.json'}: no configuration {configuration!r} (it has {', '.join(configs) or 'none'})"
        )
    config = _resolved(configs, configuration)
    if config.get("previous_stage"):
        raise ModelError(
            f"{folder}: {configuration} is the second stage of a cascade; medseg runs single-stage models "
            "(use the 3d_fullres or 3d_lowres model)"
        )
    labels, regions = _labels(dataset, folder)
    channels = tuple(
        str(v)
        for _, v in sorted(
            (dataset.get("channel_names") or dataset.get("modality") or {}).items(), key=lambda i: int(i[0])
        )
    )
    forward = tuple(int(a) for a in plans.get("transpose_forward", (0, 1, 2)))
    backward = tuple(int(a) for a in plans.get("transpose_backward", (0, 1, 2)))
    return NnunetPlan(
        configuration=configuration,
        transpose_forward=forward,
        transpose_backward=backward,
        spacing=tuple(float(v) for v in config["spacing"]),
        patch_size=tuple(int(v) for v in config["patch_size"]),
        normalization=tuple(config.get("normalization_schemes") or ["ZScoreNormalization"] * len(channels)),
        use_mask_for_norm=tuple(bool(v) for v in config.get("use_mask_for_norm") or [False] * len(channels)),
        intensity={
            str(k): dict(v) for k, v in (plans.get("foreground_intensity_properties_per_channel") or {}).items()
        },
        resample_data=dict(config.get("resampling_fn_data_kwargs") or {"order": 3, "order_z": 0}),
        resample_probabilities=dict(config.get("resampling_fn_probabilities_kwargs") or {"order": 1, "order_z": 0}),
        labels=labels,
        regions=regions,
        channels=channels,
        reader=str(plans.get("image_reader_writer") or "SimpleITKIO"),
        architecture=_architecture(config),
    )


def build_network(plan: NnunetPlan) -> torch.nn.Module:
    """The network ``plan`` describes, as nnU-Net's ``get_network_from_plans`` builds it (no deep supervision).

    Raises:
        ModelError: dynamic-network-architectures is not installed, or the plans name a class outside it.
    """
    try:
        importlib.import_module("dynamic_network_architectures")
    except ImportError:
        raise ModelError(
            "nnU-Net models need the package dynamic-network-architectures, which is not installed "
            "(pip install 'medseg[nnunet]')"
        ) from None
    architecture = plan.architecture
    kwargs = dict(architecture["arch_kwargs"])
    for key in architecture.get("_kw_requires_import", ()):
        if kwargs.get(key) is not None:
            kwargs[key] = _locate(str(kwargs[key]))
    network_class = _locate(str(architecture["network_class_name"]))
    kwargs["deep_supervision"] = False
    try:
        return network_class(input_channels=len(plan.channels), num_classes=plan.outputs, **kwargs)
    except TypeError as exc:
        raise ModelError(
            f"plans.json: {architecture['network_class_name']} does not take these settings ({exc})"
        ) from None


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - nnU-Net's checkpoints hold numpy values in their logs
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for damaged files
            raise ModelError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(checkpoint, dict) or "network_weights" not in checkpoint:
        raise ModelError(f"{path}: not an nnU-Net checkpoint (no network_weights)")
    return checkpoint


def _resolved(configs: dict[str, Any], name: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    """A configuration with what it ``inherits_from`` filled in."""
    config = dict(configs[name])
    parent = config.pop("inherits_from", None)
    if parent and parent in configs and parent not in seen:
        return {**_resolved(configs, parent, (*seen, name)), **config}
    return config


def _labels(dataset: dict[str, Any], folder: Path) -> tuple[dict[int, str], tuple[int, ...] | None]:
    raw = dataset.get("labels") or {}
    labels: dict[int, str] = {}
    region_based = any(isinstance(v, (list, tuple)) and len(v) > 1 for v in raw.values())
    for name, value in raw.items():
        if str(name) == "ignore":
            continue
        number = value[0] if isinstance(value, (list, tuple)) else value
        if int(number) > 0:
            labels.setdefault(int(number), str(name))
    if not region_based:
        return dict(sorted(labels.items())), None
    order = dataset.get("regions_class_order")
    if not order:
        raise ModelError(f"{folder / 'dataset.json'}: region-based labels without regions_class_order")
    # output channel i is the i-th region of dataset.json (background left out) and paints regions_class_order[i]
    names = [str(name) for name in raw if str(name) not in ("background", "ignore")]
    if len(names) != len(order):
        raise ModelError(
            f"{folder / 'dataset.json'}: {len(names)} regions but {len(order)} entries in regions_class_order"
        )
    return {int(n): name for n, name in sorted(zip(order, names))}, tuple(int(n) for n in order)


def _architecture(config: dict[str, Any]) -> dict[str, Any]:
    """The ``architecture`` entry, rebuilt from the plans' older keys when they predate it (nnU-Net < 2.4)."""
    if "architecture" in config:
        return config["architecture"]
    try:
        name = config["UNet_class_name"]
        dims = len(config["patch_size"])
        stages = len(config["n_conv_per_stage_encoder"])
        module = {"PlainConvUNet": "unet", "ResidualEncoderUNet": "residual_unet"}[name]
    except KeyError as exc:
        raise ModelError(f"plans.json: no network description (missing {exc})") from None
    blocks = "n_conv_per_stage" if name == "PlainConvUNet" else "n_blocks_per_stage"
    return {
        "network_class_name": f"dynamic_network_architectures.architectures.{module}.{name}",
        "arch_kwargs": {
            "n_stages": stages,
            "features_per_stage": [
                min(config["UNet_base_num_features"] * 2**i, config["unet_max_num_features"]) for i in range(stages)
            ],
            "conv_op": f"torch.nn.modules.conv.Conv{dims}d",
            "kernel_sizes": config["conv_kernel_sizes"],
            "strides": config["pool_op_kernel_sizes"],
            blocks: config["n_conv_per_stage_encoder"],
            "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
            "conv_bias": True,
            "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dims}d",
            "norm_op_kwargs": {"eps": 1e-05, "affine": True},
            "dropout_op": None,
            "dropout_op_kwargs": None,
            "nonlin": "torch.nn.LeakyReLU",
            "nonlin_kwargs": {"inplace": True},
        },
        "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
    }


def _locate(dotted: str) -> Any:
    if not dotted.startswith(ALLOWED_MODULES):
        raise ModelError(
            f"plans.json: {dotted!r} is not from dynamic-network-architectures or torch.nn; medseg builds only "
            "networks from those (a custom architecture needs its trainer's code)"
        )
    module_name, _, attribute = dotted.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError):
        # things move between versions: nnU-Net then looks the class up by name in the package
        if dotted.startswith("dynamic_network_architectures."):
            found = _find_in_package(attribute)
            if found is not None:
                return found
        raise ModelError(
            f"plans.json: {dotted!r} cannot be imported (is dynamic-network-architectures too old?)"
        ) from None


def _find_in_package(name: str) -> Any:
    import pkgutil

    import dynamic_network_architectures.architectures as package

    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        try:
            found = getattr(importlib.import_module(module.name), name, None)
        except ImportError:
            continue
        if found is not None:
            return found
    return None


#: nnU-Net's normalisation schemes, as medseg's (:class:`~medseg.config.schema.Normalization`).
NORMALIZATION_SCHEMES = {
    "CTNormalization": "ct",
    "ZScoreNormalization": "zscore",
    "NoNormalization": "none",
    "RescaleTo01Normalization": "rescale01",
    "RGBTo01Normalization": "rgb01",
}


def channel_normalization(plan: NnunetPlan, channel: int) -> Normalization:
    """Channel ``channel``'s normalisation as the plans describe it, in medseg's terms.

    CT: clipped to the foreground's 0.5/99.5 percentiles, then the foreground mean and std
    (``foreground_intensity_properties_per_channel``).

    Raises:
        ModelError: an unknown scheme, or CT normalisation without intensity properties.
    """
    name = plan.normalization[channel]
    scheme = NORMALIZATION_SCHEMES.get(name)
    if scheme is None:
        known = ", ".join(NORMALIZATION_SCHEMES)
        raise ModelError(f"plans.json: normalisation scheme {name!r} is not one medseg knows ({known})")
    if scheme != "ct":
        return Normalization(scheme=scheme)
    properties = plan.intensity.get(str(channel)) or {}
    if not {"mean", "std", "percentile_00_5", "percentile_99_5"} <= set(properties):
        raise ModelError("plans.json: CTNormalization without foreground intensity properties")
    # nnU-Net's numbers as they are: its plans may hold a zero std or an empty clip range, which
    # medseg's own pipelines refuse (the division then takes nnU-Net's epsilon, as nnU-Net does)
    return Normalization.model_construct(
        scheme="ct",
        clip=(properties["percentile_00_5"], properties["percentile_99_5"]),
        mean=properties["mean"],
        std=properties["std"],
    )
