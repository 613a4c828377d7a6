"""Workflows: what a command does from start to end, over the libraries below.

Each module is one job a user runs (the CLI is a thin layer over these, and a notebook
can call them the same way):

* :mod:`~medseg.workflows.plan`: a commented pipeline for a dataset, with its fingerprint;
* :mod:`~medseg.workflows.train`: plan or take a pipeline, split, cache, train, export a model folder;
* :mod:`~medseg.workflows.predict`: segment a batch of scans into a folder, with a manifest, resumable;
* :mod:`~medseg.workflows.evaluate`: score predictions against references;
* :mod:`~medseg.workflows.convert`: DICOM <-> NIfTI/NRRD/MHA;
* :mod:`~medseg.workflows.demo`: the bundled model on a generated scan;
* :mod:`~medseg.workflows.info`: the series and image files a path holds;
* :mod:`~medseg.workflows.doctor`: what this installation can do;
* :mod:`~medseg.workflows.pacs_transfer`: echo, query, pull and push;
* :mod:`~medseg.workflows.pacs_segment`: query -> pull -> segment -> push;
* :mod:`~medseg.workflows.listen`: a DICOM node that segments the series it receives.

Layers (docs/architecture.md; enforced by import-linter): ``cli`` -> ``workflows`` ->
``model_formats`` -> libraries (``training``, ``inference``, ``pacs`` as transport, ``planning``, ``transforms``,
``metrics``, ``datasets``, ``models``, ``config``, ``io``) -> core (``volume``, ``geometry``,
``errors``). Nothing below imports a workflow.
"""
