"""Run nnU-Net v2's console commands with custom trainer classes defined here.

Real users train with their own trainer subclasses, and nnU-Net finds a trainer by its class name
(``-tr NAME``) when it trains and again when it predicts. It looks through every module of its own
``nnunetv2.training.nnUNetTrainer`` package first, and one of them (the Primus trainers) imports
``timm``, which our test environment leaves out on purpose: any name but ``nnUNetTrainer`` then fails
with ``No module named 'timm'`` before nnU-Net gets to ``nnUNet_extTrainer``. So this runner answers
nnU-Net's lookup for the classes below itself, where nnU-Net's training and prediction modules
imported the lookup function, and then calls the command's own entry point (the function its console
script calls) with the given arguments. Nothing is written into site-packages::

    python tests/nnunet_runner.py nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainerMedsegTiny -device cpu
    python tests/nnunet_runner.py nnUNetv2_predict -i IN -o OUT -d 501 -c 3d_fullres \\
        -tr nnUNetTrainerMedsegTiny -f 0 -device cpu

``nnUNetTrainerMedsegBudget`` is nnU-Net's own recipe fitted to a wall-clock deadline, for the
nnU-Net arm of ``benchmarks/planner_robustness.py`` (``benchmarks/nnunet_arm.py``).

The module imports nothing from medseg or the tests, so it runs as a plain script.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: tests/ (its io/, config/, models/ packages) must not shadow anything

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: Training length of the tiny trainers; ``MEDSEG_NNUNET_EPOCHS`` / ``MEDSEG_NNUNET_ITERATIONS`` override it.
EPOCHS = 6
ITERATIONS = 25
#: AdamW's initial learning rate; ``MEDSEG_NNUNET_LR`` overrides it.
LEARNING_RATE = 1e-2
#: The tiny trainers' seed (``MEDSEG_NNUNET_SEED`` overrides it): a reference model is the same model in every
#: run, not a draw that now and then misses a small organ after its 150 iterations.
TINY_SEED = 0


def seed_everything(seed: int) -> None:
    """Seed ``random``, numpy and torch in the training process.

    That fixes the network's initial weights, and the batches where ``nnUNet_n_proc_DA`` is 0 (nnU-Net does
    not seed its data augmentation itself).
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class nnUNetTrainerMedsegTiny(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming
    """nnU-Net's default trainer cut to a few short epochs, with AdamW, as users write such subclasses.

    nnU-Net's SGD (momentum 0.99) finds nothing in a hundred iterations on the phantoms; AdamW does.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        # nnU-Net's own signature: its __init__ records its arguments by name (my_init_kwargs)
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = int(os.environ.get("MEDSEG_NNUNET_EPOCHS", EPOCHS))
        self.num_iterations_per_epoch = int(os.environ.get("MEDSEG_NNUNET_ITERATIONS", ITERATIONS))
        self.num_val_iterations_per_epoch = 2
        self.save_every = 10**6  # checkpoint_final only (and checkpoint_best)
        self.initial_lr = float(os.environ.get("MEDSEG_NNUNET_LR", LEARNING_RATE))
        seed_everything(int(os.environ.get("MEDSEG_NNUNET_SEED", TINY_SEED)))

    def configure_optimizers(self):
        """AdamW with nnU-Net's polynomial decay over the epochs."""
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)


class nnUNetTrainerMedsegTinyNoMirroring(nnUNetTrainerMedsegTiny):  # noqa: N801
    """The tiny trainer without mirroring, so the model allows no mirroring at inference."""

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: N802 - nnU-Net's spelling
        """nnU-Net's augmentation settings with mirroring off (as its ``nnUNetTrainerNoMirroring``)."""
        rotation, dummy_2d, initial_patch, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch, None


#: The budget trainer sizes its epochs so that the budget holds about this many (nnU-Net: 1000 epochs of 250
#: iterations, days on a CPU): enough for the poly schedule to decay in steps, few enough that the per-epoch
#: bookkeeping (validation iterations, checkpoint_best, the progress plot) stays a few per cent of the time.
BUDGET_EPOCHS = 10
#: Bounds of the budget trainer's iterations per epoch (nnU-Net's 250 is the upper one).
BUDGET_ITERATIONS = (10, 250)
#: Steps timed before the epoch length is chosen (the first, warming up, is left out of the mean).
TIMED_STEPS = 3
#: Seconds kept back at the deadline for writing checkpoint_final and shutting the data loaders down.
FINAL_SECONDS = 3.0
#: The file in the fold folder where the budget trainer records what it did.
BUDGET_RECORD = "budget.json"


class nnUNetTrainerMedsegBudget(nnUNetTrainer):  # noqa: N801
    """nnU-Net's default trainer fitted to a wall-clock deadline: its epochs and poly schedule end in time.

    Everything else is nnU-Net's: SGD (lr 1e-2, momentum 0.99, Nesterov), the poly learning rate over
    the epochs, its augmentation, deep supervision, Dice + CE. Environment:

    * ``MEDSEG_NNUNET_DEADLINE`` (required): the Unix time by which ``checkpoint_final.pth`` must be written;
    * ``MEDSEG_NNUNET_ITERATIONS``: iterations per epoch (default: chosen after :data:`TIMED_STEPS` steps so
      that the time left holds :data:`BUDGET_EPOCHS` epochs, within :data:`BUDGET_ITERATIONS`);
    * ``MEDSEG_NNUNET_SEED``: seeds ``random``, numpy and torch in the training process: the network's
      initial weights, and the batches when ``nnUNet_n_proc_DA`` is 0 (nnU-Net does not seed its
      augmentation workers, which otherwise draw them);
    * ``OMP_NUM_THREADS``: torch's threads (``nnUNetv2_train -device cpu`` sets them to the CPU count).

    The first epoch runs at the initial learning rate, which the poly schedule gives whatever its
    length. After every epoch the number of epochs becomes those done plus those the time left
    holds at the mean epoch time (the first, warming up, left out once there are others), the last
    one possibly partial, and the schedule's length with it, so the learning rate is about 0 in the
    last epoch. A step that would end too late for the epoch's validation and checkpoints is not
    taken: the last epoch is cut short at the deadline. nnUNetv2_train's final validation (a
    sliding-window prediction of every validation case, with fold ``all`` the training cases) is
    skipped: with one budget it would be minutes spent scoring the training data. What was done
    goes to ``fold_*/budget.json``.
    """

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        if "MEDSEG_NNUNET_DEADLINE" not in os.environ:
            raise RuntimeError(f"{type(self).__name__} needs MEDSEG_NNUNET_DEADLINE (a Unix time) in the environment")
        self.deadline = float(os.environ["MEDSEG_NNUNET_DEADLINE"])
        self.fixed_iterations = "MEDSEG_NNUNET_ITERATIONS" in os.environ
        self.num_iterations_per_epoch = int(os.environ.get("MEDSEG_NNUNET_ITERATIONS", BUDGET_ITERATIONS[1]))
        self.num_val_iterations_per_epoch = 2  # fold all validates on the training cases: a progress sign only
        self.num_epochs = 1000  # nnU-Net's; replaced after the first epoch
        self.save_every = 10**6  # checkpoint_final only (and nnU-Net's checkpoint_best)
        if "OMP_NUM_THREADS" in os.environ:
            torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
        if "MEDSEG_NNUNET_SEED" in os.environ:
            seed_everything(int(os.environ["MEDSEG_NNUNET_SEED"]))
        self.step_seconds: list[float] = []
        self.epoch_seconds: list[float] = []
        self.tail_seconds: float | None = None  # an epoch's validation and bookkeeping, once measured
        self.cut_short = False

    def run_training(self) -> None:
        """nnU-Net's training loop, its epochs sized and counted from the time left."""
        self.on_train_start()
        started = time.time()
        while self.current_epoch < self.num_epochs:
            epoch_started = time.time()
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            while len(train_outputs) < self.num_iterations_per_epoch:
                if self._step_would_end_too_late():
                    self.cut_short = True
                    break
                step_started = time.time()
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                self.step_seconds.append(time.time() - step_started)
                if len(self.step_seconds) == TIMED_STEPS and not self.fixed_iterations:
                    self._size_epochs()
            if not train_outputs:  # the deadline came before this epoch's first step
                break
            tail_started = time.time()
            self.on_train_epoch_end(train_outputs)
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [
                    self.validation_step(next(self.dataloader_val)) for _ in range(self.num_val_iterations_per_epoch)
                ]
                self.on_validation_epoch_end(val_outputs)
            self.on_epoch_end()  # increments current_epoch
            self.tail_seconds = time.time() - tail_started
            self.epoch_seconds.append(time.time() - epoch_started)
            if self.cut_short:
                break
            self._fit_epochs_to_deadline()
        self.record_budget(time.time() - started)
        self.on_train_end()

    def _mean_step(self) -> float:
        """Seconds of a training step: the mean of the last ten, leaving out the first (warming up) once possible."""
        timed = self.step_seconds[1:] or self.step_seconds
        return sum(timed[-10:]) / len(timed[-10:])

    def _step_would_end_too_late(self) -> bool:
        """Whether one more step, then the epoch's validation and checkpoints, would pass the deadline."""
        if not self.step_seconds:
            return time.time() > self.deadline - FINAL_SECONDS
        step = self._mean_step()
        tail = self.tail_seconds if self.tail_seconds is not None else self.num_val_iterations_per_epoch * step + 1.0
        return time.time() + step + tail > self.deadline - FINAL_SECONDS

    def _size_epochs(self) -> None:
        """Iterations per epoch such that the time left holds :data:`BUDGET_EPOCHS` epochs."""
        left = self.deadline - FINAL_SECONDS - time.time() + sum(self.step_seconds)  # this epoch's steps count
        fitted = int(left / (BUDGET_EPOCHS * self._mean_step()))
        self.num_iterations_per_epoch = min(max(fitted, BUDGET_ITERATIONS[0]), BUDGET_ITERATIONS[1])
        self.print_to_log_file(
            f"budget: {self._mean_step():.2f} s a step, {left:.0f} s to train: "
            f"{self.num_iterations_per_epoch} iterations per epoch"
        )

    def _fit_epochs_to_deadline(self) -> None:
        """Epochs done plus those the time left holds, the last one partial; the poly schedule to match."""
        timed = self.epoch_seconds[1:] or self.epoch_seconds
        per_epoch = sum(timed) / len(timed)
        left = self.deadline - FINAL_SECONDS - time.time()
        self.num_epochs = self.current_epoch + math.ceil(max(left, 0.0) / per_epoch)
        self.lr_scheduler.max_steps = max(self.num_epochs, 1)
        self.print_to_log_file(
            f"budget: {left:.0f} s left at {per_epoch:.1f} s an epoch: {self.num_epochs} epochs in all"
        )

    def record_budget(self, seconds: float) -> None:
        """Write what the training did to ``budget.json`` in the fold folder."""
        steps = len(self.step_seconds)
        record = {
            "epochs": self.current_epoch,
            "steps": steps,
            "iterations_per_epoch": self.num_iterations_per_epoch,
            "val_iterations_per_epoch": self.num_val_iterations_per_epoch,
            "epoch_seconds": [round(s, 2) for s in self.epoch_seconds],
            "training_loop_seconds": round(seconds, 1),
            "seconds_per_step": round(sum(self.step_seconds) / steps, 3) if steps else None,
            "loop_seconds_per_step": round(seconds / steps, 3) if steps else None,
            "first_step_seconds": round(self.step_seconds[0], 2) if steps else None,
            "last_lr": self.optimizer.param_groups[0]["lr"],
            "cut_short": self.cut_short,
            "torch_threads": torch.get_num_threads(),
            "mirror_axes": None
            if self.inference_allowed_mirroring_axes is None
            else list(self.inference_allowed_mirroring_axes),
        }
        with open(os.path.join(self.output_folder, BUDGET_RECORD), "w") as f:
            json.dump(record, f, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """Skipped: see the class docstring."""
        self.print_to_log_file("budget: final validation skipped")


#: The trainers this runner provides, by class name.
TRAINERS = {
    cls.__name__: cls
    for cls in (nnUNetTrainerMedsegTiny, nnUNetTrainerMedsegTinyNoMirroring, nnUNetTrainerMedsegBudget)
}


def find_trainer(name: str) -> type:
    """nnU-Net's trainer lookup, answering for :data:`TRAINERS` before searching nnU-Net's package."""
    if name in TRAINERS:
        return TRAINERS[name]
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)


def install_trainers() -> None:
    """Make nnU-Net's training and prediction modules look trainers up with :func:`find_trainer`."""
    import nnunetv2.inference.predict_from_raw_data as predicting
    import nnunetv2.run.run_training as training

    training.recursive_find_trainer_class_by_name = find_trainer
    predicting.recursive_find_trainer_class_by_name = find_trainer


def main(argv: list[str]) -> int:
    """Run ``argv`` (an nnU-Net console command's name and its arguments) with the trainers installed."""
    if not argv:
        print(__doc__)
        return 2
    found = entry_points(group="console_scripts", name=argv[0])
    if not found:
        print(f"nnunet_runner: {argv[0]} is not a console command of the installed packages", file=sys.stderr)
        return 2
    entry = next(iter(found))
    if not entry.value.startswith("nnunetv2."):
        print(f"nnunet_runner: {argv[0]} is not an nnU-Net command ({entry.value})", file=sys.stderr)
        return 2
    install_trainers()
    sys.argv = list(argv)
    result = entry.load()()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
