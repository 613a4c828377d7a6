"""What this installation can do: versions, GPU, DICOM codecs, tools, model formats and the bundled model.

``medseg doctor`` renders :func:`diagnose`'s report; a notebook reads it as a dict::

    from medseg.workflows.doctor import diagnose

    report = diagnose()
    print(report["ok"], report["problems"], report["cuda"]["available"])
"""

from __future__ import annotations

import importlib
import platform
import shutil
import sys
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import medseg
from medseg.errors import MedsegError
from medseg.model_formats import formats, plugin_problems

#: Libraries medseg cannot work without (import name -> distribution name).
ESSENTIAL_LIBRARIES = {
    "numpy": "numpy",
    "scipy": "scipy",
    "torch": "torch",
    "monai": "monai",
    "pydicom": "pydicom",
    "highdicom": "highdicom",
    "nibabel": "nibabel",
    "SimpleITK": "SimpleITK",
}
#: Codec packages pydicom can decode compressed pixel data with (distribution names).
CODEC_PACKAGES = (
    "pylibjpeg",
    "pylibjpeg-libjpeg",
    "pylibjpeg-openjpeg",
    "pylibjpeg-rle",
    "pyjpegls",
    "python-gdcm",
    "pillow",
)
#: Transfer syntaxes medseg promises to read (names in pydicom.uid); the others are reported only.
ESSENTIAL_SYNTAXES = (
    "ImplicitVRLittleEndian",
    "ExplicitVRLittleEndian",
    "DeflatedExplicitVRLittleEndian",
    "ExplicitVRBigEndian",
    "RLELossless",
    "JPEGBaseline8Bit",
    "JPEGLossless",
    "JPEGLosslessSV1",
    "JPEGLSLossless",
    "JPEGLSNearLossless",
    "JPEG2000Lossless",
    "JPEG2000",
)
#: Programs some features and tests use: validation of written objects, DICOM networking, a test PACS.
TOOLS = {
    "dciodvfy": "checks written SEG/RTSTRUCT against the standard (dicom3tools)",
    "storescu": "sends DICOM to a PACS (dcmtk)",
    "findscu": "queries a PACS (dcmtk)",
    "Orthanc": "a local PACS for integration tests",
}


def diagnose(*, on_check: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The report: every check's facts, ``problems`` (essential failures) and ``ok``.

    Args:
        on_check: called with each check's name (``libraries``, ``CUDA``, ...) as it starts.
    """
    on_check = on_check or (lambda name: None)
    on_check("libraries")
    problems: list[str] = []
    report: dict[str, Any] = {
        "ok": True,
        "problems": problems,
        "medseg": {"version": medseg.__version__, "path": medseg.__path__[0]},
        "python": {"version": platform.python_version(), "executable": sys.executable, "platform": platform.platform()},
        "libraries": _libraries(problems),
    }
    on_check("CUDA")
    report["cuda"] = _cuda() if report["libraries"]["torch"]["ok"] else {"available": False, "error": "no torch"}
    on_check("DICOM codecs")
    report["codecs"] = _codecs(problems) if report["libraries"]["pydicom"]["ok"] else {}
    on_check("tools")
    report["tools"] = {name: shutil.which(name) for name in TOOLS}
    ready = all(report["libraries"][name]["ok"] for name in ("torch", "monai"))
    on_check("model formats")
    report["model_formats"] = _model_formats(problems)
    on_check("the bundled model")
    report["bundled_model"] = _bundled_model(problems) if ready else {"ok": False, "error": "torch/MONAI missing"}
    report["ok"] = not problems
    return report


def _libraries(problems: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for module, distribution in ESSENTIAL_LIBRARIES.items():
        try:
            imported = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001 - a broken install may raise anything; it is reported
            found[module] = {"ok": False, "version": _version(distribution), "error": f"{type(exc).__name__}: {exc}"}
            problems.append(f"{module} does not import ({type(exc).__name__}: {exc})")
            continue
        version = getattr(imported, "__version__", None) or _version(distribution)
        found[module] = {"ok": True, "version": str(version) if version else None}
    return found


def _cuda() -> dict[str, Any]:
    import torch

    available = torch.cuda.is_available()
    facts: dict[str, Any] = {
        "available": available,
        "torch_cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if available else None,
        "devices": [],
        "cpu_threads": torch.get_num_threads(),
    }
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            facts["devices"].append(
                {"index": index, "name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)}
            )
    return facts


def _codecs(problems: list[str]) -> dict[str, Any]:
    import pydicom.uid
    from pydicom.pixels import decoders
    from pydicom.pixels.decoders.base import Decoder

    essential = {str(getattr(pydicom.uid, name)) for name in ESSENTIAL_SYNTAXES}
    syntaxes = []
    for name in sorted(dir(decoders)):
        decoder = getattr(decoders, name)
        if not name.endswith("Decoder") or not isinstance(decoder, Decoder):
            continue
        uid = decoder.UID
        entry = {
            "uid": str(uid),
            "name": uid.name,
            "decodable": bool(decoder.is_available),
            "plugins": sorted(decoder.available_plugins),
            "missing": sorted(decoder.missing_dependencies),
            "essential": str(uid) in essential,
        }
        if entry["essential"] and not entry["decodable"]:
            problems.append(f"cannot decode {uid.name} ({uid}): install {', '.join(entry['missing']) or 'a codec'}")
        syntaxes.append(entry)
    syntaxes.sort(key=lambda e: (not e["essential"], e["name"]))
    return {"packages": {name: _version(name) for name in CODEC_PACKAGES}, "transfer_syntaxes": syntaxes}


def _bundled_model(problems: list[str]) -> dict[str, Any]:
    """Load the bundled model on the CPU and run one patch through it."""
    started = time.monotonic()
    try:
        import torch  # loaded here: a report on a broken torch must still come back

        from medseg.models.bundled import bundled_model_path  # with torch below: its failure is reported, not raised
        from medseg.models.folder import load_model  # torch: a broken install is reported, not raised

        path = bundled_model_path()
        network, pipeline, facts = load_model(path, device="cpu")
        patch = torch.zeros(1, len(pipeline.preprocessing.channels), *pipeline.training.patch_size)
        with torch.no_grad():
            scores = network(patch)
        if scores.shape[1] != pipeline.num_classes:
            raise RuntimeError(f"the network gives {scores.shape[1]} classes, the pipeline {pipeline.num_classes}")
    except (MedsegError, ImportError, OSError, RuntimeError) as exc:
        problems.append(f"the bundled model does not load or run: {exc}")
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    return {
        "ok": True,
        "path": str(path),
        "name": pipeline.name,
        "labels": {str(n): label.name for n, label in sorted(pipeline.labels.items())},
        "sha256": facts.get("model_sha256"),
        "seconds": round(time.monotonic() - started, 2),
    }


def _model_formats(problems: list[str]) -> dict[str, Any]:
    """The formats ``--model`` accepts (the registry's), and installed ones that failed to load."""
    failed = plugin_problems()
    problems.extend(failed)
    return {
        "formats": [{"name": f.name, "title": f.title, "module": type(f).__module__} for f in formats()],
        "failed": failed,
    }


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None
