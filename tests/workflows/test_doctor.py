"""``workflows.doctor``: the installation report a notebook reads as a dict."""

from __future__ import annotations

import torch

import medseg
from medseg.workflows.doctor import ESSENTIAL_LIBRARIES, TOOLS, diagnose


def test_the_report_says_what_works_here():
    checks = []
    report = diagnose(on_check=checks.append)
    assert checks == ["libraries", "CUDA", "DICOM codecs", "tools", "model formats", "the bundled model"]
    assert report["ok"] is True and report["problems"] == []
    assert report["medseg"]["version"] == medseg.__version__
    assert set(report["libraries"]) == set(ESSENTIAL_LIBRARIES)
    assert report["libraries"]["torch"] == {"ok": True, "version": torch.__version__}
    assert report["cuda"]["available"] == torch.cuda.is_available()
    assert set(report["tools"]) == set(TOOLS)
    assert [f["name"] for f in report["model_formats"]["formats"]][:3] == ["medseg", "nnunet", "monai-bundle"]
    bundled = report["bundled_model"]
    assert bundled["ok"] and bundled["labels"] == {"1": "liver", "2": "spleen", "3": "kidney"}
