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

The module imports nothing from medseg or the tests, so it runs as a plain script.
"""

from __future__ import annotations

import os
import sys
from importlib.metadata import entry_points
from pathlib import Path

if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
    del sys.path[0]  # run as a script: tests/ (its io/, config/, models/ packages) must not shadow anything

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

#: Training length of the tiny trainers; ``MEDSEG_NNUNET_EPOCHS`` / ``MEDSEG_NNUNET_ITERATIONS`` override it.
EPOCHS = 6
ITERATIONS = 25
#: AdamW's initial learning rate; ``MEDSEG_NNUNET_LR`` overrides it.
LEARNING_RATE = 1e-2


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


#: The trainers this runner provides, by class name.
TRAINERS = {cls.__name__: cls for cls in (nnUNetTrainerMedsegTiny, nnUNetTrainerMedsegTinyNoMirroring)}


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
