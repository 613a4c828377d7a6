"""Training datasets, read where they already are.

Four layouts are recognised by :func:`open_dataset`: an nnU-Net v2 raw folder,
a Medical Segmentation Decathlon folder, a CSV or JSON list of files (whose
images may be DICOM series folders, and labels RTSTRUCT or SEG files), and a
DICOM study tree whose RTSTRUCT/SEG files reference its series. A :class:`Dataset` only names files;
:func:`load_case` reads one case into volumes, and :func:`check_dataset` reads
them all and reports every problem at once::

    dataset = open_dataset("/data/Dataset003_Liver")
    require_valid(check_dataset(dataset))
    image, label = load_case(dataset, dataset.cases[0])
"""

from medseg.datasets.checks import check_dataset, infer_labels
from medseg.datasets.detect import open_dataset
from medseg.datasets.loading import GRID_TOLERANCE_MM, load_case
from medseg.datasets.model import Case, CaseProblem, Dataset, DatasetError, is_mr_channel, require_valid

__all__ = [
    "GRID_TOLERANCE_MM",
    "Case",
    "CaseProblem",
    "Dataset",
    "DatasetError",
    "check_dataset",
    "infer_labels",
    "is_mr_channel",
    "load_case",
    "open_dataset",
    "require_valid",
]
