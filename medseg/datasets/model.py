"""What a training dataset is: cases of image files (one per channel) and label maps.

These types only describe where the files are; nothing is read until
:func:`medseg.datasets.load_case` or :func:`medseg.datasets.check_dataset`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from medseg.errors import DatasetError
from medseg.io.labels import LabelTable

Layout = Literal["nnunet", "msd", "list", "dicom"]
Severity = Literal["error", "warning", "note"]

#: Channel names that mean an MR contrast (compared lower-case, without punctuation).
_MR_NAME = re.compile(r"^(mri?|t1\w*|t2\w*|flair\w*|adc|dwi\w*|pdw?|swi|dce|dti|hbv|b\d+)$")


@dataclass(frozen=True)
class Case:
    """One case: its image file(s) and, for training cases, its label map.

    Attributes:
        case_id: unique name of the case within its dataset.
        images: one path per channel in channel order, or a single file holding
            every channel (a 4D NIfTI, as the Decathlon stores multi-channel
            images). A path is a NIfTI/NRRD/MHA file or a DICOM series folder.
            Paths are where the files should be; they may be missing.
        label: the label map, or None for an unlabelled (test) case.
    """

    case_id: str
    images: tuple[Path, ...]
    label: Path | None = None


@dataclass(frozen=True)
class CaseProblem:
    """Something wrong with one case (or, with an empty ``case_id``, the whole dataset)."""

    case_id: str
    path: str
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        parts = [self.case_id or "dataset", self.path, self.message]
        return ": ".join(p for p in parts if p)


@dataclass(frozen=True)
class Dataset:
    """A set of cases read in place, in one of the accepted layouts.

    Attributes:
        root: the folder relative paths start from (for a list, the list's folder).
        name: the dataset's name (from its description, else the folder or list name).
        layout: ``"nnunet"``, ``"msd"``, ``"list"`` or ``"dicom"`` (a study tree).
        channels: channel names in channel order, e.g. ``("CT",)`` or ``("T2", "ADC")``.
        labels: label number -> name, background (0) excluded; empty when a list
            declares none (see :func:`medseg.datasets.infer_labels`).
        cases: training cases (with labels), sorted by ``case_id``.
        test_cases: cases to predict, sorted by ``case_id``; labelled where ground
            truth is at hand.
        manifest: the file that describes the dataset (``dataset.json`` or the list).
        problems: what was found wrong while listing the files (e.g. a stray file,
            a channel index beyond the declared channels); reported again by
            :func:`medseg.datasets.check_dataset`.
        label_table: which RTSTRUCT ROI / SEG segment name becomes which label (the
            description's ``label_names`` and ``label_priority``); None: each label by its own name.
    """

    root: Path
    name: str
    layout: Layout
    channels: tuple[str, ...]
    labels: dict[int, str]
    cases: tuple[Case, ...]
    test_cases: tuple[Case, ...] = ()
    manifest: Path | None = None
    problems: tuple[CaseProblem, ...] = field(default=(), repr=False)
    label_table: LabelTable | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Cases are sorted by id whatever order a layout listed them in.
        object.__setattr__(self, "cases", tuple(sorted(self.cases, key=lambda c: c.case_id)))
        object.__setattr__(self, "test_cases", tuple(sorted(self.test_cases, key=lambda c: c.case_id)))

    @property
    def modality(self) -> str:
        """``"CT"`` for a single channel named CT, ``"MR"`` when every channel is an MR contrast.

        Otherwise the first channel's name, as declared.
        """
        if len(self.channels) == 1 and self.channels[0].strip().upper() == "CT":
            return "CT"
        if self.channels and all(is_mr_channel(name) for name in self.channels):
            return "MR"
        return self.channels[0] if self.channels else ""

    @property
    def table(self) -> LabelTable:
        """The label table DICOM labels are read with: ``label_table``, else each label by its own name."""
        if self.label_table is not None and self.label_table.labels == self.labels:
            return self.label_table
        return LabelTable.build(self.labels)

    @property
    def all_cases(self) -> tuple[Case, ...]:
        """Training cases followed by test cases."""
        return self.cases + self.test_cases

    def case(self, case_id: str) -> Case:
        """The training or test case named ``case_id``.

        Raises:
            KeyError: no such case.
        """
        for case in self.all_cases:
            if case.case_id == case_id:
                return case
        raise KeyError(f"{self.name}: no case {case_id!r}")


def is_mr_channel(name: str) -> bool:
    """True for names of MR contrasts: T1, T2w, FLAIR, ADC, DWI, b800, MRI, ..."""
    return bool(_MR_NAME.match(re.sub(r"[^a-z0-9*]", "", name.lower()).replace("*", "")))


def require_valid(problems: Iterable[CaseProblem]) -> None:
    """Raise unless ``problems`` (from :func:`check_dataset`) holds no error; warnings pass.

    Raises:
        DatasetError: listing every error, one line each.
    """
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        lines = "\n".join(f"  {p}" for p in errors)
        raise DatasetError(f"the dataset has {len(errors)} error(s):\n{lines}")
