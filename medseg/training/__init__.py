"""Training: from a dataset to a model folder.

:func:`train` plans (or takes) a pipeline, splits the cases into folds, prepares
them once into a cache, runs the epochs with checkpoints, and exports the best
epoch as a model folder that :func:`load_model` reads back::

    from medseg.training import load_model, train

    result = train("/data/Dataset001_Phantom", "runs/phantom", epochs=100, time_limit_minutes=60)
    network, pipeline, facts = load_model(result.model_dir, device="auto")

Modules: :mod:`~medseg.training.run` (``train``), :mod:`~medseg.training.loop`
(the epochs), :mod:`~medseg.training.state` (checkpoints), :mod:`~medseg.training.records`
(metrics, curves, TensorBoard), :mod:`~medseg.training.splits` (folds),
:mod:`~medseg.training.validation` (sliding-window Dice), :mod:`~medseg.training.model_folder`,
:mod:`~medseg.training.objectives` (loss, optimiser, schedule) and
:mod:`~medseg.training.distributed` (several GPUs or nodes under ``torchrun``).
"""

from medseg.training.model_folder import export_model_folder, load_model
from medseg.training.run import TrainingResult, train

__all__ = ["TrainingResult", "export_model_folder", "load_model", "train"]
