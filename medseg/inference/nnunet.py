"""Segment with an nnU-Net v2 model as ``nnUNetv2_predict`` does, with labels written on the scan's own grid.

For one scan (:meth:`NnunetSegmenter.segment`):

1. The image in nnU-Net's axis order: the order SimpleITK reads the NIfTI medseg would write for
   it (the voxel axes reversed), then the plans' ``transpose_forward``.
2. nnU-Net's preprocessing, by medseg's own steps with nnU-Net's values: crop to the non-zero box
   (holes filled), normalise each channel by its scheme (float32 statistics), resize to the
   configuration's spacing (:func:`~medseg.transforms.resample.resize_channel`; a 2D configuration
   keeps the slice spacing).
3. nnU-Net's sliding window: its tile steps, its Gaussian weights (sigma 1/8 of the patch, peak 10),
   one window at a time, mirrored over the axes the checkpoint allows, class scores summed in
   float16 as nnU-Net sums them; the folds' scores averaged.
4. Back to the scan: nnU-Net resamples every class's scores to the cropped shape and then takes
   the argmax (or, for region-based models, paints each region over 0.5 in ``regions_class_order``).
   Here each class's scores are resampled alone (the same interpolation, the same float16 values)
   and folded into a running argmax, so memory holds one class on the scan's grid instead of all
   of them, and nnU-Net's full coordinate maps are never built. The crop and transpose are undone.

Settings: nnU-Net's defaults (tile step 0.5, mirroring where the checkpoint allows it);
``--overlap F`` sets the tile step to ``1 - F`` and ``--no-tta`` turns mirroring off (as
``--disable_tta``). Batch size is one window, as nnU-Net's.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from medseg.inference.engine import InferenceSettings
from medseg.inference.foreign import ForeignSegmenter
from medseg.inference.window import Progress
from medseg.models.info import ModelInfo
from medseg.models.nnunet import NnunetModel, channel_normalization, load_nnunet
from medseg.transforms.normalize import mask_box, nonzero_mask, normalize_channel
from medseg.transforms.resample import new_shape, resize_channel, separate_axis
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: nnU-Net's default tile step (a fraction of the patch).
TILE_STEP = 0.5


class NnunetSegmenter(ForeignSegmenter):
    """An nnU-Net v2 trained-model folder, ready to segment scans.

    Args:
        info: the model's description (:func:`~medseg.model_formats.describe_model`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or a torch device.
        settings: ``overlap`` (tile step ``1 - overlap``) and ``tta`` (mirroring) override nnU-Net's defaults.
        folds: the folds to average (default: every fold present).
        orientation: ``stored`` hands the network the voxels in the order the scan stores them, as
            ``nnUNetv2_predict`` does; ``ras`` reorders them to the closest RAS axes first (and back
            after), as TotalSegmentator does for its models. Default: ``ras`` for a dataset named
            TotalSegmentator, else ``stored``.

    Raises:
        ModelError: see :func:`~medseg.models.nnunet.load_nnunet`.
    """

    def __init__(
        self,
        info: ModelInfo,
        *,
        device: str | torch.device = "auto",
        settings: InferenceSettings = InferenceSettings(),
        folds: Sequence[int] | None = None,
        orientation: str | None = None,
    ) -> None:
        super().__init__(info, device=device, settings=settings)
        # TotalSegmentator reorients every scan to RAS before its nnU-Net models see it
        self.orientation = orientation or ("ras" if "totalsegmentator" in info.name.lower() else "stored")
        self.model: NnunetModel = load_nnunet(info, folds=folds, device=self.device)
        self.folds = tuple(self.model.weights)
        self.overlap = float(settings.overlap) if settings.overlap is not None else 1 - TILE_STEP
        self.batch_size = 1
        self.mirror_axes = self.model.mirror_axes if settings.tta is not False else ()
        self.metadata.update(
            trainer=self.model.trainer,
            configuration=self.model.plan.configuration,
            folds=self.folds,
            orientation=self.orientation,
        )
        log.info(
            "nnU-Net model %s: %s, folds %s, patch %s, spacing %s, mirror axes %s",
            info.name,
            self.model.plan.configuration,
            list(self.folds),
            list(self.model.plan.patch_size),
            list(self.model.plan.spacing),
            list(self.mirror_axes),
        )

    @property
    def num_classes(self) -> int:
        """Label values the map can hold, background included."""
        return max(self.model.plan.labels, default=0) + 1

    def _predict(self, image: Volume, progress: Progress | None) -> tuple[np.ndarray, np.ndarray]:
        array, spacing = image.array, tuple(float(v) for v in image.geometry.spacing)
        if self.orientation == "ras":
            axes, flips = _ras_axes(image)
            array = np.flip(array.transpose(0, *[a + 1 for a in axes]), [w + 1 for w in range(3) if flips[w]])
            spacing = tuple(spacing[a] for a in axes)
        labels, confidence = self._run(array, spacing, progress)
        if self.orientation == "ras":
            back = tuple(int(v) for v in np.argsort(axes))
            flipped = [w for w in range(3) if flips[w]]
            labels = np.ascontiguousarray(np.flip(labels, flipped).transpose(back))
            confidence = np.ascontiguousarray(np.flip(confidence, flipped).transpose(back))
        return labels, confidence

    def _run(
        self, array: np.ndarray, voxel_spacing: tuple[float, ...], progress: Progress | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence for ``(C, I, J, K)`` voxels stored in this order, with this spacing."""
        plan = self.model.plan
        # nnU-Net's axis order: SimpleITK's (voxel axes reversed), then transpose_forward
        order = [2 - a for a in plan.transpose_forward]  # our (I, J, K) axes in the network's order
        spacing = [voxel_spacing[a] for a in order]
        data = np.transpose(array, (0, *[a + 1 for a in order])).astype(np.float32)
        mask = nonzero_mask(data, fill_holes=True)  # nnU-Net's crop
        box = mask_box(mask) or tuple(slice(0, n) for n in mask.shape)  # an empty image keeps its extent
        mask = mask[box]
        data = np.ascontiguousarray(data[(slice(None), *box)])
        cropped = data.shape[1:]
        target = list(plan.spacing) if not plan.is_2d else [spacing[0], *plan.spacing]
        shape = new_shape(cropped, spacing, target)
        for c in range(data.shape[0]):
            normalize_channel(
                data[c],
                channel_normalization(plan, c),
                mask=mask if plan.use_mask_for_norm[c] else None,
                statistics="float32",  # nnU-Net's arithmetic, to the bit
            )
        del mask
        kwargs = plan.resample_data
        axis = separate_axis(spacing, target, kwargs.get("force_separate_z"))
        prepared = np.stack(
            [
                resize_channel(
                    channel, shape, axis=axis, order=kwargs.get("order", 3), order_z=kwargs.get("order_z", 0)
                )
                for channel in data
            ]
        )
        del data
        logits = self._logits(torch.from_numpy(prepared), progress)
        del prepared
        labels, confidence = self._to_cropped_grid(logits, cropped, current=target, new=spacing)
        del logits
        # undo the crop, then the transpose (the network's order back to ours)
        full = tuple(array.shape[1:][a] for a in order)
        label_map = np.zeros(full, dtype=labels.dtype)
        certainty = np.full(full, 255, dtype=np.uint8)
        label_map[box], certainty[box] = labels, confidence
        back = tuple(int(np.argsort(order)[a]) for a in range(3))
        return np.ascontiguousarray(label_map.transpose(back)), np.ascontiguousarray(certainty.transpose(back))

    # -- sliding window ---------------------------------------------------------------------------

    @torch.inference_mode()
    def _logits(self, data: torch.Tensor, progress: Progress | None) -> torch.Tensor:
        """Class scores ``(outputs, *shape)`` (float16) on the prepared grid, averaged over the folds."""
        plan = self.model.plan
        patch = plan.patch_size
        padded, unpad = _pad_to(data, patch)
        spatial = tuple(padded.shape[1:])
        windows = _windows(spatial, patch, 1 - self.overlap)
        total = len(windows) * len(self.folds)
        on = self.device
        gaussian = _gaussian(patch, on)
        padded = padded.to(on)
        summed: torch.Tensor | None = None
        done = 0
        autocast = torch.autocast(on.type) if on.type == "cuda" else nullcontext()
        for fold in self.folds:
            network = self.model.use(fold)
            scores = torch.zeros((plan.outputs, *spatial), dtype=torch.half, device=on)
            weights = torch.zeros(spatial, dtype=torch.half, device=on)
            with autocast:
                for window in windows:
                    tile = padded[(slice(None), *window)][None]
                    if plan.is_2d:  # one slice: (1, C, 1, X, Y) -> (1, C, X, Y)
                        tile = tile[:, :, 0]
                    prediction = self._mirrored(network, tile)[0]
                    if plan.is_2d:
                        prediction = prediction[:, None]
                        weight = gaussian[None]
                    else:
                        weight = gaussian
                    prediction *= weight
                    scores[(slice(None), *window)] += prediction
                    weights[window] += weight
                    done += 1
                    if progress is not None:
                        progress(done, total)
            torch.div(scores, weights, out=scores)
            del weights
            summed = scores if summed is None else summed.add_(scores)
        assert summed is not None
        if len(self.folds) > 1:
            summed /= len(self.folds)
        if torch.isinf(summed).any():
            log.warning("infinite class scores in float16 (as nnU-Net would refuse them); the labels may be wrong")
        return summed[(slice(None), *unpad)].cpu()

    def _mirrored(self, network: torch.nn.Module, tile: torch.Tensor) -> torch.Tensor:
        prediction = network(tile)
        if not self.mirror_axes:
            return prediction
        axes = [a + 2 for a in self.mirror_axes]
        combinations = [c for n in range(len(axes)) for c in itertools.combinations(axes, n + 1)]
        for flip in combinations:
            prediction += torch.flip(network(torch.flip(tile, flip)), flip)
        prediction /= len(combinations) + 1
        return prediction

    # -- back to the scan ------------------------------------------------------------------------

    def _to_cropped_grid(
        self, logits: torch.Tensor, cropped: tuple[int, ...], *, current: Sequence[float], new: Sequence[float]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and confidence on the cropped scan grid: each class's scores resampled alone, argmax kept running."""
        plan = self.model.plan
        kwargs = plan.resample_probabilities
        axis = separate_axis(current, new, kwargs.get("force_separate_z"))

        def resampled(channel: np.ndarray) -> np.ndarray:
            return resize_channel(
                channel, cropped, axis=axis, order=kwargs.get("order", 1), order_z=kwargs.get("order_z", 0)
            )

        dtype = np.uint8 if self.num_classes <= 256 else np.uint16
        labels = np.zeros(cropped, dtype=dtype)
        scores = logits.numpy()
        if plan.regions is not None:
            for index, value in enumerate(plan.regions):
                region = torch.sigmoid(torch.from_numpy(resampled(scores[index])).float()) > 0.5
                labels[region.numpy()] = value
        else:
            best = resampled(scores[0])
            for index in range(1, scores.shape[0]):
                channel = resampled(scores[index])
                better = channel > best
                labels[better] = index
                np.maximum(best, channel, out=best)
                del channel, better
            del best
        confidence = _confidence(logits, regions=plan.regions is not None)
        return labels, _nearest(confidence, cropped)


def _ras_axes(image: Volume) -> tuple[tuple[int, ...], tuple[bool, ...]]:
    """Per RAS axis (R, A, S): the voxel axis closest to it, and whether that axis runs against it."""
    from nibabel.orientations import io_orientation

    orientation = io_orientation(image.geometry.affine_ras)  # per voxel axis: (world axis, +1 or -1)
    axes = [0, 0, 0]
    flips = [False, False, False]
    for voxel_axis, (world, sense) in enumerate(orientation):
        axes[int(world)] = voxel_axis
        flips[int(world)] = sense < 0
    return tuple(axes), tuple(flips)


def _nearest(array: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``array`` on a grid of ``shape`` spanning the same extent, by nearest voxel centre (no interpolation)."""
    index = [
        np.minimum(((np.arange(n) + 0.5) * (size / n)).astype(np.int64), size - 1)
        for n, size in zip(shape, array.shape)
    ]
    return array[np.ix_(*index)]


def _confidence(logits: torch.Tensor, *, regions: bool) -> np.ndarray:
    """Per voxel of the prepared grid, uint8 (x 255): the winning class's softmax probability (regions: the least
    certain region's probability of its own decision). Taken to the scan's grid by nearest voxel: it feeds the
    quality flags, not the labels."""
    out = np.empty(logits.shape[1:], dtype=np.uint8)
    flat_out = out.reshape(-1)
    flat = logits.reshape(logits.shape[0], -1)
    step = 1 << 20
    for start in range(0, flat.shape[1], step):
        block = flat[:, start : start + step].float()
        if regions:
            p = torch.sigmoid(block)
            value = torch.maximum(p, 1 - p).amin(0)
        else:
            value = torch.softmax(block, 0).amax(0)
        flat_out[start : start + step] = np.clip(np.rint(value.numpy() * 255), 0, 255)
    return out


def _pad_to(data: torch.Tensor, patch: Sequence[int]) -> tuple[torch.Tensor, tuple[slice, ...]]:
    """Zero-pad the last axes up to the patch where smaller, centred (the odd voxel after), as nnU-Net does."""
    spatial = data.shape[1:]
    patch = [*([1] * (len(spatial) - len(patch))), *patch]
    pads, unpad = [], []
    for size, need in zip(spatial, patch):
        extra = max(0, need - size)
        below = extra // 2
        pads.append((below, extra - below))
        unpad.append(slice(below, below + size))
    if any(a or b for a, b in pads):
        flat = [v for pair in reversed(pads) for v in pair]
        data = torch.nn.functional.pad(data, flat, mode="constant", value=0)
    return data, tuple(unpad)


def _steps(size: int, tile: int, step: float) -> list[int]:
    """nnU-Net's ``compute_steps_for_sliding_window`` along one axis."""
    count = int(math.ceil((size - tile) / (tile * step))) + 1
    if count == 1:
        return [0]
    actual = (size - tile) / (count - 1)
    return [int(np.round(actual * i)) for i in range(count)]


def _windows(spatial: tuple[int, ...], patch: Sequence[int], step: float) -> list[tuple[slice, ...]]:
    """The windows in nnU-Net's order; a 2D patch slides over every slice of the first axis."""
    if len(patch) < len(spatial):
        rows = [_steps(s, p, step) for s, p in zip(spatial[1:], patch)]
        return [
            (slice(d, d + 1), *(slice(s, s + p) for s, p in zip(starts, patch)))
            for d in range(spatial[0])
            for starts in itertools.product(*rows)
        ]
    rows = [_steps(s, p, step) for s, p in zip(spatial, patch)]
    return [tuple(slice(s, s + p) for s, p in zip(starts, patch)) for starts in itertools.product(*rows)]


def _gaussian(patch: Sequence[int], device: torch.device) -> torch.Tensor:
    """nnU-Net's importance map: a Gaussian of sigma patch/8, scaled to peak 10, float16, no zeros."""
    delta = np.zeros(patch)
    delta[tuple(p // 2 for p in patch)] = 1
    smooth = gaussian_filter(delta, [p / 8 for p in patch], 0, mode="constant", cval=0)
    smooth /= np.max(smooth) / 10
    weights = torch.from_numpy(smooth).to(device=device, dtype=torch.float16)
    zero = weights == 0
    weights[zero] = torch.min(weights[~zero])
    return weights
