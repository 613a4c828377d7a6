"""Run a MONAI bundle (Model Zoo layout) as its own inference config does, on the scan's own grid.

:class:`BundleSegmenter` parses the bundle's ``configs/inference.json`` (or ``.yaml``) with
:class:`monai.bundle.ConfigParser` and takes from it the network (``network_def``, else ``network``),
``preprocessing``, ``inferer`` and ``postprocessing``. A scan goes through them as ``monai.bundle
run`` sends a file through its ``SupervisedEvaluator``: the scan is written to a temporary NIfTI
file (medseg's writer), loaded and prepared by the bundle's own transforms, collated, inferred,
decollated and post-processed. Writers (``SaveImaged`` and the like) are left out of the
post-processing, so ``Invertd`` brings the prediction back to the NIfTI's grid, which is the scan's.

The bundle's device is replaced by medseg's; its inferer settings are kept, but for an overlap or
windows-per-batch given in the settings. A ``.zip`` bundle is extracted once into a cache folder
(``$XDG_CACHE_HOME/medseg/bundles/<sha256>``, else ``~/.cache/...``); the bundle itself is never
changed. medseg downloads no bundle: ``python -m monai.bundle download`` does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import zipfile
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.errors import ModelError
from medseg.inference.engine import InferenceSettings
from medseg.inference.foreign import ForeignSegmenter
from medseg.inference.window import Progress
from medseg.io import write_nifti
from medseg.models.info import ModelInfo
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: The configs tried, in order.
CONFIG_NAMES = ("inference.json", "inference.yaml", "inference.yml")
#: The key of the prediction in the evaluator's output, and the image's key when the config names none.
PRED_KEY, IMAGE_KEY = "pred", "image"
_MISSING_MODULE = re.compile(r"No module named '([^']+)'")
_UNLOCATED = re.compile(r"Cannot locate class or function path: '([^']+)'")


class BundleSegmenter(ForeignSegmenter):
    """A MONAI bundle, run with its own transforms and inferer.

    Confidence is the winning class's probability x 255 on the scan's grid: the prediction as it
    stands just before the post-processing's first ``AsDiscreted`` (after ``Invertd``), taken as
    probabilities where an ``Activationsd`` with softmax or sigmoid ran before it, else softmaxed.
    A post-processing without ``AsDiscreted`` gives 255 everywhere.

    Args:
        info: the bundle (:func:`~medseg.model_formats.describe_model`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device; replaces the bundle's ``device``.
        settings: ``overlap`` and ``batch_size`` replace the inferer's ``overlap`` and
            ``sw_batch_size``; mirroring is not offered (the bundle's inferer decides).

    Raises:
        ModelError: no inference config, an item it lacks, a package it needs that is not
            installed, or weights that do not fit its network.
    """

    def __init__(
        self, info: ModelInfo, *, device: str | torch.device = "auto", settings: InferenceSettings = InferenceSettings()
    ) -> None:
        super().__init__(info, device=device, settings=settings)
        self.root = bundle_root(info.path)
        self.config_path = _config_file(self.root, info.path)
        self._parser = self._read_config()
        self.network = self._load_network()
        self.preprocessing = self._parsed("preprocessing")
        self.inferer = self._parsed("inferer")
        self.postprocessing = self._parsed("postprocessing")
        dropped = _drop_writers(self.postprocessing)
        self.amp = self.device.type == "cuda" and bool(self._optional("evaluator#amp", False))
        self.overlap = float(getattr(self.inferer, "overlap", 0.0))
        self.batch_size = int(getattr(self.inferer, "sw_batch_size", 1))
        self.mirror_axes = ()
        if settings.tta:
            log.warning("%s: no test-time mirroring for MONAI bundles; the bundle's inferer decides", info.path)
        self.metadata.update(config=str(self.config_path.relative_to(self.root)), dropped=dropped, amp=self.amp)
        log.info(
            "bundle %s: %s, inferer %s (overlap %s, %d window(s) per batch), writers left out: %s",
            info.name,
            self.config_path.name,
            type(self.inferer).__name__,
            self.overlap,
            self.batch_size,
            ", ".join(dropped) or "none",
        )

    # -- loading ------------------------------------------------------------------------------------

    def _read_config(self) -> Any:
        from monai.bundle import ConfigParser

        parser = ConfigParser()
        try:
            parser.read_config(str(self.config_path))
        except Exception as exc:
            raise ModelError(f"bundle {self.info.path}: {self.config_path.name} is unreadable ({exc})") from exc
        parser["bundle_root"] = str(self.root)
        parser["device"] = f"$torch.device('{self.device}')"
        overrides = {"overlap": self.settings.overlap, "sw_batch_size": self.settings.batch_size}
        for key, value in overrides.items():
            if value is not None and isinstance(parser.get("inferer"), dict):
                parser[f"inferer#{key}"] = value
        return parser

    def _parsed(self, key: str) -> Any:
        if key not in self._parser:
            raise ModelError(f"bundle {self.info.path}: {self.config_path.name} has no '{key}', which medseg runs")
        try:
            return self._parser.get_parsed_content(key)
        except Exception as exc:
            raise ModelError(f"bundle {self.info.path}: {_config_problem(exc, key, self.config_path.name)}") from exc

    def _optional(self, key: str, default: Any) -> Any:
        try:
            return self._parser.get_parsed_content(key)
        except (KeyError, ValueError, RuntimeError):
            return default

    def _load_network(self) -> torch.nn.Module:
        pt, ts = self.root / "models" / "model.pt", self.root / "models" / "model.ts"
        if not pt.is_file() and ts.is_file():
            try:
                network = torch.jit.load(str(ts), map_location=self.device)
            except (RuntimeError, ValueError) as exc:
                raise ModelError(f"bundle {self.info.path}: {ts} is not a TorchScript model ({exc})") from exc
            return network.eval()
        network = self._parsed("network_def" if "network_def" in self._parser else "network")
        if not isinstance(network, torch.nn.Module):
            raise ModelError(f"bundle {self.info.path}: its network is a {type(network).__name__}, not a torch module")
        load_weights(network, pt)
        return network.to(self.device).eval()

    # -- inference ----------------------------------------------------------------------------------

    def _predict(self, image: Volume, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:

        if progress is not None:
            progress(0, 1)
        key = str(self._optional("image_key", IMAGE_KEY))
        with tempfile.TemporaryDirectory(prefix="medseg-bundle-") as tmp:
            pred, confidence = self._run({key: str(write_nifti(image, Path(tmp) / "image.nii"))})
        labels = self._label_map(pred, image.spatial_shape)
        if confidence is None or confidence.shape != labels.shape:
            confidence = np.full(labels.shape, 255, dtype=np.uint8)
        if progress is not None:
            progress(1, 1)
        return labels, confidence

    def _run(self, item: dict[str, str]) -> tuple[Any, np.ndarray | None]:
        """One file through preprocessing, inferer and postprocessing, as ``SupervisedEvaluator`` does."""
        from monai.data import list_data_collate
        from monai.engines.utils import default_prepare_batch, engine_apply_transform
        from monai.transforms import Decollated

        batch = list_data_collate([self.preprocessing(item)])
        inputs, targets = default_prepare_batch(batch, self.device)
        output = {"image": inputs, "label": targets}
        amp = torch.autocast("cuda") if self.amp else nullcontext()
        with torch.no_grad(), amp:
            output[PRED_KEY] = self.inferer(inputs, self.network)
        decollate = Decollated(keys=None, detach=True)
        case, result = decollate(batch)[0], decollate(output)[0]
        split = _first_discretization(self.postprocessing)
        if split is None:
            return engine_apply_transform(case, result, self.postprocessing)[1][PRED_KEY], None
        case, result = engine_apply_transform(case, result, lambda d: self.postprocessing(d, end=split))
        confidence = _confidence(result[PRED_KEY], probabilities=_activated(self.postprocessing, split))
        case, result = engine_apply_transform(case, result, lambda d: self.postprocessing(d, start=split))
        return result[PRED_KEY], confidence

    def _label_map(self, pred: Any, shape: tuple[int, int, int]) -> np.ndarray:
        array = pred.detach().cpu().numpy() if isinstance(pred, torch.Tensor) else np.asarray(pred)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.shape != tuple(shape):
            raise ModelError(
                f"bundle {self.info.path}: its postprocessing gives a map of shape {array.shape}, not the scan's "
                f"{tuple(shape)} (it needs Invertd and AsDiscreted(argmax) to give labels on the scan's grid)"
            )
        return np.rint(array).astype(np.int32)


# -- the bundle's files -----------------------------------------------------------------------------


def bundle_root(path: str | os.PathLike[str]) -> Path:
    """The bundle's folder: ``path`` itself, or for a ``.zip`` its extracted copy in the cache.

    Raises:
        ModelError: a zip without ``configs/metadata.json``, or with names leaving the folder.
    """
    path = Path(path)
    if not path.is_file():
        return path
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    target = _cache_dir() / digest.hexdigest()[:32]
    if not target.is_dir():
        _extract(path, target)
    found = sorted(target.glob("**/configs/metadata.json"), key=lambda p: len(p.parts))
    if not found:
        raise ModelError(f"{path}: a zip without configs/metadata.json, not a MONAI bundle")
    return found[0].parent.parent


def load_weights(network: torch.nn.Module, path: Path) -> None:
    """Load ``path`` (a state dict, or one under ``model`` or ``state_dict``) into ``network``, strictly.

    Raises:
        ModelError: not a readable state dict, or one that does not fit the network; the message
            names the file and the first mismatch.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ModelError(f"{path}: not a readable state dict ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: not a state dict (a dict of tensors, or one under 'model' or 'state_dict')")
    if state and all(k.startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {k[len("module.") :]: v for k, v in state.items()}
    own = network.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        if wrong:
            first = f"{wrong[0]} is {tuple(state[wrong[0]].shape)} there, {tuple(own[wrong[0]].shape)} in the network"
        else:
            first = f"{len(missing)} weight(s) missing (e.g. {missing[0]})" if missing else ""
            first += "; " if missing and unexpected else ""
            first += f"{len(unexpected)} unknown (e.g. {unexpected[0]})" if unexpected else ""
        raise ModelError(f"{path}: the weights do not fit the bundle's network: {first}")
    network.load_state_dict(state)


def _config_file(root: Path, shown: str) -> Path:
    for name in CONFIG_NAMES:
        if (root / "configs" / name).is_file():
            return root / "configs" / name
    raise ModelError(f"bundle {shown}: no configs/inference.json or configs/inference.yaml, which medseg runs")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "medseg" / "bundles"


def _extract(path: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if name.startswith(("/", "\\")) or ".." in Path(name).parts:
                    raise ModelError(f"{path}: the zip holds {name!r}, which would leave its folder; not extracted")
            archive.extractall(tmp)
        os.replace(tmp, target)
        log.info("extracted bundle %s into %s", path, target)
    except FileExistsError:
        pass  # another process extracted it meanwhile
    except OSError as exc:
        if not target.is_dir():
            raise ModelError(f"{path}: could not extract into {target.parent} ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _config_problem(exc: BaseException, key: str, config: str) -> str:
    """One line for what went wrong building ``key``: a missing package named, else the innermost error."""
    chain = []
    while exc is not None and exc not in chain:
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for error in chain:
        module = getattr(error, "name", None) if isinstance(error, ModuleNotFoundError) else None
        text = str(error)
        found = _MISSING_MODULE.search(text)
        module = module or (found.group(1) if found else None)
        located = _UNLOCATED.search(text)
        if module is None and located is not None:
            target = located.group(1)
            if "." not in target:
                return f"its {config} '{key}' needs '{target}', which this MONAI ({_monai_version()}) does not have"
            package = target.split(".")[0]
            if _importable(package):
                return f"its {config} '{key}' needs '{target}', which {package} (installed) does not have"
            module = package
        if module:
            package = module.split(".")[0]
            return f"its {config} needs the package '{package}', which is not installed (pip install {package})"
    inner = chain[-1]
    message = " ".join(str(inner).split())[:300]
    return f"its {config} '{key}' cannot be built ({type(inner).__name__}: {message})"


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _monai_version() -> str:
    import monai

    return str(monai.__version__)


def _drop_writers(compose: Any) -> list[str]:
    """Remove ``Save*`` transforms (SaveImaged, SaveImage, ...) from a Compose, nested ones too; their names."""
    dropped: list[str] = []
    transforms = getattr(compose, "transforms", None)
    if not isinstance(transforms, (list, tuple)):
        return dropped
    kept = []
    for transform in transforms:
        name = type(transform).__name__
        if name.startswith("Save") and type(transform).__module__.startswith("monai."):
            dropped.append(name)
            continue
        dropped.extend(_drop_writers(transform))
        kept.append(transform)
    compose.transforms = kept
    return dropped


def _first_discretization(compose: Any) -> int | None:
    from monai.transforms import AsDiscreted

    for index, transform in enumerate(getattr(compose, "transforms", [])):
        if isinstance(transform, AsDiscreted):
            return index
    return None


def _activated(compose: Any, end: int) -> bool:
    """Whether an ``Activationsd`` applied softmax or sigmoid before ``end``."""
    from monai.transforms import Activationsd

    for transform in compose.transforms[:end]:
        if isinstance(transform, Activationsd) and PRED_KEY in transform.keys:
            index = list(transform.keys).index(PRED_KEY)
            if transform.softmax[index] or transform.sigmoid[index]:
                return True
    return False


def _confidence(pred: Any, *, probabilities: bool) -> np.ndarray | None:
    """The winning class's probability x 255 (``uint8``, ``(I, J, K)``); None for a single-channel map."""
    if not isinstance(pred, torch.Tensor) or pred.ndim != 4 or pred.shape[0] < 2:
        return None
    scores = torch.as_tensor(pred).float()
    if not probabilities:
        scores = torch.softmax(scores, dim=0)
    top = scores.max(dim=0).values.clamp_(0.0, 1.0)
    return (top * 255.0).round_().to(torch.uint8).cpu().numpy()
