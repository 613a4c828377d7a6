"""The model that ships with medseg: a small CT phantom segmenter (liver, spleen, kidney).

It is an ordinary model folder (see :mod:`medseg.models.folder`), installed
as package data and never downloaded::

    from medseg.models.bundled import bundled_model_path
    from medseg.models.folder import load_model

    network, pipeline, facts = load_model(bundled_model_path())

``medseg demo`` segments the sample scan with it, and ``medseg doctor`` checks that
it loads. It was trained by ``scripts/train_bundled_model.py`` (``medseg plan
--device cpu`` and ``medseg train --time-limit`` on phantoms of
:func:`medseg.synthetic.write_phantom_dataset`); that script's docstring records
the commands, the seed and the Dice reached. It knows phantoms only: it is a
demonstration and a smoke test, not a model for patients' scans.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from medseg.errors import ModelError

#: Name of the bundled model's folder inside this package.
BUNDLED_MODEL = "phantom"
#: The files a model folder holds, as the bundled copy must have them.
BUNDLED_FILES = ("model.pt", "pipeline.yaml", "labels.json", "model.json", "fingerprint.json")


def bundled_model_path() -> Path:
    """The folder of the bundled phantom model, as installed with the package.

    Returns:
        A model folder for :func:`medseg.models.folder.load_model` or ``medseg predict --model``.

    Raises:
        ModelError: the installation lacks the model's files (e.g. a package built
            without its package data), or it sits inside a zip archive.
    """
    folder = resources.files(__name__) / BUNDLED_MODEL
    if not isinstance(folder, Path):
        raise ModelError(f"{folder}: the bundled model lies inside an archive; install medseg unzipped")
    missing = [name for name in BUNDLED_FILES if not (folder / name).is_file()]
    if missing:
        raise ModelError(
            f"{folder}: the bundled model is incomplete ({', '.join(missing)} missing); reinstall medseg, "
            "or run scripts/train_bundled_model.py --install in a checkout"
        )
    return folder
