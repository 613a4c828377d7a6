"""Training: the epochs of a run, from prepared cases to weights.

The run itself (plan or take a pipeline, split, cache, train, export) is the workflow
:func:`medseg.workflows.train.train`; the model folder it writes is read by
:func:`medseg.models.folder.load_model`::

    from medseg.workflows.train import TrainOptions, train
    from medseg.models.folder import load_model

    result = train("/data/Dataset001_Phantom", "runs/phantom", TrainOptions(epochs=100, time_limit_minutes=60))
    network, pipeline, facts = load_model(result.model_dir, device="auto")

Modules: :mod:`~medseg.training.loop` (the epochs), :mod:`~medseg.training.budget`
(the time-limit policy: when to stop, validation under a time limit),
:mod:`~medseg.training.best` (the best epoch), :mod:`~medseg.training.steptime` (step times
against the plan), :mod:`~medseg.training.state` (checkpoints),
:mod:`~medseg.training.records` (metrics, curves, TensorBoard), :mod:`~medseg.training.splits`
(folds), :mod:`~medseg.training.validation` (sliding-window Dice),
:mod:`~medseg.training.objectives` (loss, optimiser, schedule) and
:mod:`~medseg.training.distributed` (several GPUs or nodes under ``torchrun``).
"""
