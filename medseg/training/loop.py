"""The training loop: epochs of patch batches, validation by sliding window, checkpoints.

One epoch is ``training.iterations_per_epoch`` optimiser steps on batches from
:class:`medseg.transforms.PatchSampler`, with the deep-supervision loss,
gradient-norm clipping at 12 (nnU-Net's), mixed precision on CUDA, and one
learning-rate schedule step at its end. Every ``validation_interval`` epochs,
and always at the last one, each validation case is predicted whole and scored
with Dice. ``last.pt`` is saved after every epoch and ``best.pt`` whenever the
mean foreground Dice is at least as high as before (so ties go to the later
epoch); with no validation cases every epoch counts as the best.

Patches of epoch ``e`` come from a sampler seeded with ``(seed, e)``, so a run
resumed from a checkpoint draws the same patches as one never interrupted.

Under ``torchrun`` (see :mod:`medseg.training.distributed`) every rank runs the
epoch's ``iterations_per_epoch`` steps on patches of its own (seeded with
``(seed, e, rank)``; rank 0's are a single process's), the network is wrapped in
``DistributedDataParallel`` (so a step's effective batch is ``world_size x
batch_size``), the validation cases are shared out among the ranks and their
scores gathered, rank 0 alone decides when the time is up, and rank 0 alone
writes checkpoints and records.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medseg.config.schema import Pipeline
from medseg.errors import InputError
from medseg.models.devices import autocast, grad_scaler
from medseg.models.networks import build_network
from medseg.training.best import BestEpoch, ComponentDice
from medseg.training.budget import TimeLimit, ValidationBudget
from medseg.training.distributed import Distributed
from medseg.training.objectives import build_loss, build_optimizer, build_schedule, schedule_at
from medseg.training.records import RunRecords, dice_column, format_epoch
from medseg.training.state import (
    Checkpoint,
    capture_rng,
    restore_rng,
    save_checkpoint,
    seed_everything,
)
from medseg.training.steptime import StepTimeMonitor
from medseg.training.validation import (
    dice_per_label,
    largest_component_dice,
    mean_ignoring_nan,
    predict_logits,
    time_window,
    validation_overlap,
    window_count,
)
from medseg.transforms.prepare import PreparedCase
from medseg.transforms.sampling import PatchSampler

log = logging.getLogger(__name__)

#: Gradient-norm clipping threshold (nnU-Net's).
GRADIENT_CLIP = 12.0
CHECKPOINT_DIR = "checkpoints"
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"

Progress = Callable[[str, int, int], None]
EpochCallback = Callable[[Mapping[str, float], str], None]  # (metrics row, formatted line)


@dataclass
class LoopOutcome:
    """How the loop ended: epochs finished, the best epoch, the history, and why it stopped."""

    epochs_done: int
    best_epoch: int
    best_dice: float
    history: list[dict[str, float]]
    stopped: str  # "completed", "time limit" or "interrupted"
    best_weights: dict[str, torch.Tensor] = field(repr=False)
    # the best epoch's mean validation Dice per label as predicted and with only the largest component kept
    component_dice: ComponentDice | None = None


@dataclass
class LoopSettings:
    """What the loop needs besides the pipeline and the cases.

    Attributes:
        run_dir: where checkpoints and records go.
        device: where to compute.
        fold: the fold trained (stored in checkpoints).
        pipeline_yaml: the pipeline's text (stored in checkpoints).
        deadline: ``time.monotonic()`` value by which training should stop, or None.
        stop: set (e.g. by a SIGTERM handler) to end training after the current step: the epoch is
            saved without validation and the loop returns, so that the best model so far is exported.
        progress: ``(stage, done, total)``: ``"epoch"`` (epochs finished of the budget) as each
            epoch starts and at the end, ``"train"`` after each step, ``"validate"`` after each case.
        on_epoch: called with each epoch's metrics row and its one-line summary.
        group: the processes training together (a single process by default).
    """

    run_dir: Path
    device: torch.device
    fold: int | str
    pipeline_yaml: str
    deadline: float | None = None
    stop: threading.Event | None = None
    progress: Progress | None = None
    on_epoch: EpochCallback | None = None
    group: Distributed = field(default_factory=Distributed)


class Trainer:
    """Trains one network on prepared cases as a pipeline says.

    Args:
        pipeline: the recipe (``training.epochs`` is the budget).
        train_cases: prepared cases with labels to sample patches from.
        validation_cases: prepared cases with labels to score; may be empty.
        settings: run folder, device, time limit and callbacks.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        train_cases: Sequence[PreparedCase],
        validation_cases: Sequence[PreparedCase],
        settings: LoopSettings,
    ) -> None:
        if not train_cases:
            raise InputError("training needs at least one labelled case")
        self.pipeline = pipeline
        self.train_cases = list(train_cases)
        self.validation_cases = list(validation_cases)
        self.settings = settings
        self.labels = sorted(pipeline.labels)
        self.label_names = unique_names([pipeline.labels[n].name for n in self.labels])
        network = pipeline.network
        self.deep_supervision = network.deep_supervision and network.deep_supervision_heads > 0
        training = pipeline.training
        seed_everything(training.seed)
        device = settings.device
        self.group = settings.group
        #: The network itself: what checkpoints hold and validation runs.
        self.model = build_network(
            network, in_channels=len(pipeline.preprocessing.channels), out_channels=pipeline.num_classes
        ).to(device)
        #: What training steps call: the network, wrapped in DDP when several processes train it.
        self.network: torch.nn.Module = self.model
        if self.group.is_distributed:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.network = DistributedDataParallel(self.model, device_ids=ids)
        self.criterion = build_loss(training, deep_supervision=self.deep_supervision)
        self.optimizer = build_optimizer(self.model.parameters(), training.optimizer)
        self.scheduler = build_schedule(self.optimizer, training.schedule, total_steps=training.epochs)
        self.scaler = grad_scaler(device)
        self.history: list[dict[str, float]] = []
        self.epoch = 0
        self.best = BestEpoch()
        self._validation_seconds = 0.0
        self._component_dice: ComponentDice | None = None  # the last validation's
        self._notes: list[str] = []  # for train.log, written after the epoch
        self.step_monitor = StepTimeMonitor(pipeline, device)
        #: When to stop, what to keep back, where the schedule stands by the clock.
        self.time_limit = TimeLimit(
            settings.deadline, self.group, parameters=sum(p.numel() for p in self.model.parameters())
        )
        #: How far through its schedule training is (0 to 1); under a time limit, also moved by the clock.
        self._schedule_progress = 0.0

    # -- checkpoints -------------------------------------------------------------------

    @property
    def checkpoint_dir(self) -> Path:
        return self.settings.run_dir / CHECKPOINT_DIR

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint``: weights, optimiser, schedule, history and random states.

        Under DDP every rank must restore the same checkpoint.
        """
        self.model.load_state_dict(checkpoint.model)
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.scheduler.load_state_dict(checkpoint.scheduler)
        if checkpoint.scaler:
            self.scaler.load_state_dict(checkpoint.scaler)
        # The schedule is a closed form of the epoch: follow the current budget's curve.
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas):
            group["lr"] = base * factor(checkpoint.epoch)
        self.history = [dict(row) for row in checkpoint.history]
        self.epoch = checkpoint.epoch
        self.best = BestEpoch(checkpoint.best_epoch, checkpoint.best_dice)
        self._validation_seconds = float(checkpoint.extra.get("validation_seconds", 0.0))
        self._schedule_progress = float(
            checkpoint.extra.get("schedule_progress", checkpoint.epoch / self.pipeline.training.epochs)
        )
        restore_rng(checkpoint.rng)
        self._check_ranks_agree()

    def _checkpoint(self) -> Checkpoint:
        return Checkpoint(
            epoch=self.epoch,
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            scaler=self.scaler.state_dict() if self.scaler.is_enabled() else {},
            history=self.history,
            best_epoch=self.best.epoch,
            best_dice=self.best.dice,
            rng=capture_rng(),
            pipeline_yaml=self.settings.pipeline_yaml,
            fold=self.settings.fold,
            extra={"validation_seconds": self._validation_seconds, "schedule_progress": self._schedule_progress},
        )

    # -- the loop ----------------------------------------------------------------------

    def run(self, records: RunRecords | None) -> LoopOutcome:
        """Train until the epoch budget is spent or the deadline comes; returns the outcome.

        Args:
            records: where the epochs are recorded; None on ranks other than 0.
        """
        training = self.pipeline.training
        stopped = "completed"
        budget = self._plan_validation()
        self.time_limit.start(self._schedule_progress, budget)
        if budget is not None:
            self._notes.append(budget.describe())
        self._flush_notes(records)
        while self.epoch < training.epochs:
            self._report("epoch", self.epoch, training.epochs)
            epoch = self.epoch + 1
            started = time.monotonic()
            seed = epoch_seed(training.seed, epoch, rank=self.group.rank)
            sampler = PatchSampler(self.train_cases, self.pipeline, seed=seed, augment=True)
            self._follow_schedule()
            lr = float(self.optimizer.param_groups[0]["lr"])
            timing = _EpochTiming()
            loss, steps, cut_short = self._train_epoch(sampler, timing)
            loss = self.group.mean(loss)
            timing.pseudo_dice = self.group.mean(timing.pseudo_dice)
            self.scheduler.step()
            interrupted = self._stop_requested()
            last = epoch == training.epochs or cut_short or interrupted or self.time_limit.out_of_time()
            cases = self.group.broadcast(self._cases_to_validate(epoch, last=last, interrupted=interrupted))
            validated = time.monotonic()
            scores = self._validate(cases) if cases else []
            timing.validation = time.monotonic() - validated if cases else 0.0
            if cases and scores is None:  # a stop request came during the validation: abandoned
                cases, scores, interrupted, last = [], [], True, True
            self.epoch = epoch
            self._check_ranks_agree()
            row = self._row(epoch, loss, scores, lr, time.monotonic() - started, timing)
            self.history.append(row)
            improved = self.best.consider(
                epoch,
                row["val_dice_mean"],
                validating=bool(self.validation_cases),
                validated=bool(cases),
                component_dice=self._component_dice,
            )
            self._save(improved)
            self._flush_notes(records)
            if records is not None:
                records.epoch_done(self.history)
            if self.settings.on_epoch is not None:
                self.settings.on_epoch(row, format_epoch(row, epochs=training.epochs, label_names=self.label_names))
            if last and epoch < training.epochs:
                stopped = "interrupted" if interrupted else "time limit"
                if records is not None:
                    why = "stop requested (signal)" if interrupted else "time limit reached"
                    records.note(
                        f"{why}: stopped after epoch {epoch} of {training.epochs} "
                        f"({steps} of its {training.iterations_per_epoch} steps)"
                    )
                break
        self._report("epoch", self.epoch, training.epochs)
        if self.best.epoch == 0 and self.epoch > 0:  # nothing validated: the last weights are exported
            self.best.epoch = self.epoch
        return LoopOutcome(
            epochs_done=self.epoch,
            best_epoch=self.best.epoch,
            best_dice=self.best.dice,
            history=self.history,
            stopped=stopped,
            best_weights=self.best_weights(),
            component_dice=self.best.component_dice,
        )

    def _follow_schedule(self) -> None:
        """Set this epoch's learning rate; under a time limit the schedule also follows the clock.

        Without a deadline the rate is the schedule's closed form of the epoch. With one, the
        schedule runs on :meth:`TimeLimit.schedule_progress <medseg.training.budget.TimeLimit.schedule_progress>`.
        """
        progress = self.time_limit.schedule_progress(self.epoch / self.pipeline.training.epochs)
        if self.time_limit.limited:
            factor = schedule_at(self.pipeline.training.schedule, progress)
            for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
                group["lr"] = base * factor
        self._schedule_progress = max(self._schedule_progress, progress)

    def _plan_validation(self) -> ValidationBudget | None:
        """Under a time limit with validation cases: the budget that keeps validation to its share."""
        deadline = self.settings.deadline
        if deadline is None or not self.validation_cases:
            return None
        device = self.settings.device
        windows = [window_count(case.image.shape[1:], self.pipeline, device=device) for case in self.validation_cases]
        seconds_per_window = time_window(self.model, self.pipeline, device=self.settings.device)
        seconds_per_window = float(self.group.broadcast(seconds_per_window))
        return ValidationBudget(
            share=self.pipeline.training.validation_share,
            seconds=max(0.0, deadline - time.monotonic()),
            windows=windows,
            seconds_per_window=seconds_per_window,
            parameters=self.time_limit.parameters,
        )

    def _cases_to_validate(self, epoch: int, *, last: bool, interrupted: bool) -> list[int]:
        """The validation cases to score after ``epoch``: none, the budget's, or all of them."""
        if interrupted or not self.validation_cases:
            return []
        budget = self.time_limit.budget
        if budget is None:  # no time limit: every validation_interval epochs, and the last
            due = last or epoch % self.pipeline.training.validation_interval == 0
            return list(range(len(self.validation_cases))) if due else []
        left = self.time_limit.seconds_left()
        if not last:  # only if the closing validation still fits after this one
            due = epoch % self.pipeline.training.validation_interval == 0
            fits = budget.closing_seconds + budget.reserve <= left
            return list(budget.cases) if due and fits and budget.due(self.time_limit.elapsed()) else []
        if budget.cases and budget.closing_seconds > left:
            self._notes.append(
                f"closing validation skipped: an estimated {budget.closing_seconds:.1f} s, {left:.1f} s left"
            )
            return []
        return list(budget.cases)

    def _stop_requested(self) -> bool:
        stop = self.settings.stop
        return self.group.agree(stop is not None and stop.is_set())

    def _flush_notes(self, records: RunRecords | None) -> None:
        for note in self._notes:
            if records is not None:
                records.note(note)
            else:
                log.info("%s", note)
        self._notes.clear()

    def best_weights(self) -> dict[str, torch.Tensor]:
        """The best epoch's weights: kept from this session, else read from ``best.pt``."""
        return self.best.best_weights(self.checkpoint_dir / BEST_CHECKPOINT, self.network.state_dict())

    def _train_epoch(self, sampler: PatchSampler, timing: _EpochTiming) -> tuple[float, int, bool]:
        """Run one epoch's steps; returns the mean loss, the steps taken, and whether it was cut short.

        The deadline (less the reserve for the closing validation and export) and a stop
        request end an epoch early. ``timing`` receives the seconds spent loading data and
        computing steps, and the pseudo-Dice of the epoch's training batches.
        """
        network, device = self.network, self.settings.device
        steps = self.pipeline.training.iterations_per_epoch
        network.train()
        total, done = 0.0, 0
        confusion = torch.zeros(self.pipeline.num_classes, self.pipeline.num_classes, dtype=torch.int64)
        for step in range(steps):
            began = time.perf_counter()
            image, label = sampler.batch()
            image = torch.as_tensor(image).to(device, non_blocking=True)
            label = torch.as_tensor(label).to(device, non_blocking=True)
            loaded = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(device):
                output = network(image)
            if self.deep_supervision:
                loss = self.criterion([head.float() for head in output.unbind(1)], label)
            else:
                loss = self.criterion(output.float(), label)
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(network.parameters(), GRADIENT_CLIP)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            total += float(loss.detach())
            confusion += _confusion(output[:, 0] if self.deep_supervision else output, label)
            finished = time.perf_counter()
            timing.data += loaded - began
            timing.train += finished - loaded
            self._check_step_time(finished - loaded)
            done = step + 1
            self._report("train", done, steps)
            if done < steps and (self._stop_requested() or self.time_limit.out_of_time()):
                timing.pseudo_dice = _pseudo_dice(confusion)
                return total / done, done, True
        timing.pseudo_dice = _pseudo_dice(confusion)
        return total / done, done, False

    def _check_step_time(self, seconds: float) -> None:
        """Time this session's first steps; say once how they compare with the plan's estimate."""
        finding = self.step_monitor.record(seconds)
        if finding is not None:
            message, off = finding
            if off:
                log.warning("%s", message)
            self._notes.append(message)

    def _validate(self, cases: Sequence[int]) -> list[list[float]] | None:
        """Per validation case of ``cases``, the Dice of each label (under DDP each rank scores its share).

        Returns None when a stop is requested during the validation (a single process only:
        under DDP the ranks finish their shares, so that none waits for another).
        """
        started = time.monotonic()
        self.model.eval()  # the bare network: DDP's forward would expect every rank to take part
        group = self.group
        mine = list(cases)[group.rank :: group.world_size]
        scores: dict[int, list[float]] = {}
        for done, number in enumerate(mine, start=1):
            case = self.validation_cases[number]
            logits = predict_logits(
                self.model, case.image, self.pipeline, device=self.settings.device, overlap=self._validation_overlap()
            )
            prediction, truth = logits.argmax(0).numpy(), np.asarray(case.label[0])
            scores[number] = (
                dice_per_label(prediction, truth, self.labels),
                largest_component_dice(prediction, truth, self.labels),
            )
            self._report("validate", done, len(mine))
            stop = self.settings.stop
            if not group.is_distributed and stop is not None and stop.is_set() and done < len(mine):
                return None
        for share in group.gather(scores) if group.is_distributed else []:
            scores.update(share)
        self._validation_seconds = time.monotonic() - started
        budget = self.time_limit.budget
        if budget is not None and list(cases) == budget.cases:
            budget.record(self._validation_seconds)
        as_predicted, largest_kept = [scores[n][0] for n in cases], [scores[n][1] for n in cases]
        self._component_dice = (self._per_label(as_predicted), self._per_label(largest_kept))
        return as_predicted

    def _per_label(self, scores: Sequence[Sequence[float]]) -> list[float]:
        """Per label, the mean over the cases' Dice (NaN where no case holds the label)."""
        return [mean_ignoring_nan([case[i] for case in scores]) for i in range(len(self.labels))]

    def _validation_overlap(self) -> float:
        """Window overlap of validations: the pipeline's, but at most MONAI's 0.25 under a time limit."""
        overlap = self.pipeline.inference.overlap
        return validation_overlap(overlap) if self.settings.deadline is not None else overlap

    def _row(
        self, epoch: int, loss: float, scores: list[list[float]], lr: float, seconds: float, timing: _EpochTiming
    ) -> dict[str, float]:
        per_label = self._per_label(scores)
        row = {
            "epoch": float(epoch),
            "train_loss": loss,
            "pseudo_dice_mean": timing.pseudo_dice,
            "val_dice_mean": mean_ignoring_nan(per_label),
        }
        row.update({dice_column(name): value for name, value in zip(self.label_names, per_label)})
        row.update(
            {
                "lr": lr,
                "seconds": seconds,
                "train_seconds": timing.train,
                "data_seconds": timing.data,
                "validation_seconds": timing.validation,
            }
        )
        return row

    def _save(self, improved: bool) -> None:
        """Checkpoints (written by rank 0 only), and the weights of the best epoch so far."""
        if self.group.is_main:
            checkpoint = self._checkpoint()
            save_checkpoint(checkpoint, self.checkpoint_dir / LAST_CHECKPOINT)
            if improved:
                save_checkpoint(checkpoint, self.checkpoint_dir / BEST_CHECKPOINT)
        if improved:
            self.best.keep(self.model.state_dict())

    def _check_ranks_agree(self) -> None:
        """Under DDP, fail loudly if the ranks' networks have drifted apart (e.g. a rank that did not resume)."""
        if self.group.is_distributed:
            with torch.no_grad():
                total = torch.stack([p.double().sum() for p in self.model.parameters()]).sum().item()
            self.group.check_same(total, what=f"the weights after epoch {self.epoch}")

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.settings.progress is not None:
            self.settings.progress(stage, done, total)


@dataclass
class _EpochTiming:
    """Where an epoch's time went (seconds), and the pseudo-Dice of its training batches."""

    data: float = 0.0
    train: float = 0.0
    validation: float = 0.0
    pseudo_dice: float = math.nan


def _confusion(output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """The ``(classes, classes)`` confusion counts (predicted, true) of a batch's full-resolution output."""
    classes = output.shape[1]
    with torch.no_grad():
        predicted = output.detach().argmax(1).flatten().to(torch.int64)
        truth = label.detach()[:, 0].flatten().to(torch.int64)
        counts = torch.bincount(predicted * classes + truth, minlength=classes * classes)
    return counts.reshape(classes, classes).cpu()


def _pseudo_dice(confusion: torch.Tensor) -> float:
    """nnU-Net's pseudo-Dice: Dice per foreground class over all voxels of the batches, then their mean.

    Counted on augmented training patches, it is a free sign of learning, not a validation:
    a class absent from every patch and never predicted is left out.
    """
    counts = confusion.double()
    true_positive = counts.diagonal()[1:]
    predicted, actual = counts.sum(1)[1:], counts.sum(0)[1:]
    denominator = predicted + actual
    present = denominator > 0
    if not bool(present.any()):
        return math.nan
    return float((2 * true_positive[present] / denominator[present]).mean())


def epoch_seed(seed: int, epoch: int, *, rank: int = 0) -> int:
    """The patch sampler's seed for one epoch: fixed by the run's seed, the epoch number and the rank.

    Rank 0 (and a single process) gets the seed of ``(seed, epoch)``; other ranks of a
    ``torchrun`` run draw other patches.
    """
    key = [seed % 2**63, epoch] if rank == 0 else [seed % 2**63, epoch, rank]
    return int(np.random.default_rng(key).integers(2**31))


def unique_names(names: Sequence[str]) -> list[str]:
    """Names made unique by numbering repeats (``kidney``, ``kidney_2``), for metric columns."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result
