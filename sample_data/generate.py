"""Re-create the bundled sample data: a small CT-like phantom with known labels.

    python sample_data/generate.py [--output sample_data] [--seed 0]
    python sample_data/generate.py --dataset 24 [--test 6] [--layout nnunet|msd] --output /tmp/phantoms

Writes ``ct_phantom/dicom/`` (a DICOM CT series, explicit VR little endian,
file names without extension, as scanners export them), ``ct_phantom/image.nii.gz``
(the same image) and ``ct_phantom/labels.nii.gz`` (its label map: 1 liver,
2 spleen, 3 kidney). Deterministic for a given seed, except for the DICOM UIDs
and dates, which are new on every run.

With ``--dataset N`` it writes instead a training set of N phantoms (plus
``--test M`` test cases with their ground truth in ``labelsTs/``), each with its
own anatomy and grid, in nnU-Net v2 raw layout (``Dataset001_Phantom/``) or the
Decathlon's (``--layout msd``: ``Task01_Phantom/``); see
:func:`medseg.synthetic.write_phantom_dataset`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from medseg.geometry import Geometry
from medseg.io import write_nifti
from medseg.io.dicom.writer import write_dicom_series
from medseg.workflows.demo import SAMPLE_SPEC
from medseg.synthetic import PHANTOM_DATASET_NAMES, make_phantom, write_phantom_dataset

SPEC = SAMPLE_SPEC  # the sample scan `medseg demo` regenerates when run from an installed package


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dataset", type=int, metavar="N", help="write a training set of N phantoms instead")
    parser.add_argument("--test", type=int, default=0, metavar="M", help="with --dataset: M test cases too")
    parser.add_argument("--layout", choices=sorted(PHANTOM_DATASET_NAMES), default="nnunet", help="with --dataset")
    args = parser.parse_args()
    if args.dataset is not None:
        write_dataset(args)
        return
    folder = args.output / "ct_phantom"
    if folder.exists():
        shutil.rmtree(folder)
    geometry = Geometry.from_spacing(SPEC.shape, SPEC.spacing, SPEC.origin, frame_of_reference_uid=None)
    image, labels = make_phantom(args.seed, SPEC, geometry)
    names = [f"IM{k:05d}" for k in range(geometry.shape[2])]
    write_dicom_series(image, folder / "dicom", series_description="Phantom abdomen CT", file_names=names)
    write_nifti(image, folder / "image.nii.gz")
    write_nifti(labels, folder / "labels.nii.gz")
    segments = {str(s.number): s.name for s in labels.segments}
    (folder / "labels.json").write_text(json.dumps({"seed": args.seed, "labels": segments}, indent=2) + "\n")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder} ({size / 1e6:.1f} MB)")


def write_dataset(args: argparse.Namespace) -> None:
    """``--dataset``: a phantom training set in ``args.output``, replacing one written before."""
    if args.dataset < 1 or args.test < 0:
        raise SystemExit(f"--dataset must be 1 or more and --test 0 or more, got {args.dataset} and {args.test}")
    folder = args.output / PHANTOM_DATASET_NAMES[args.layout]
    if folder.exists():
        shutil.rmtree(folder)
    write_phantom_dataset(folder, num_training=args.dataset, num_test=args.test, layout=args.layout, seed=args.seed)
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"wrote {folder}: {args.dataset} training and {args.test} test case(s) ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
