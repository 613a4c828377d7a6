"""Prepared cases on disk, so that later epochs neither re-read nor re-resample raw scans.

Layout (``folder`` is typically ``RUN_DIR/cache``)::

    folder/<key>/preprocessing.json        what <key> stands for (human-readable)
    folder/<key>/<case>.image.npy          float32 (C, I, J, K); (C, K, I, J) for a 2D network
    folder/<key>/<case>.label.npy          uint8/int16 (1, ...) likewise; absent without a label
    folder/<key>/<case>.locations.npy      int32 (n, 4): label value, i, j, k (sorted by value)
    folder/<key>/<case>.json               grids, source stamp; written last: it marks the case complete

``<key>`` hashes the pipeline's ``preprocessing`` section, ``network.dimensions``
(a 2D network keeps the slices) and the cache format, so a changed pipeline
never reuses stale data. Every file is written under a temporary name and moved
into place with :func:`os.replace`; a failed write removes what it wrote, and a
case without its ``.json`` is simply prepared again. Hits are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medseg.config.schema import Pipeline
from medseg.errors import InputError
from medseg.geometry import Geometry
from medseg.parallel import ordered_map
from medseg.transforms.prepare import PreparedCase, prepare_case
from medseg.volume import Volume

log = logging.getLogger(__name__)

#: Bumped whenever what is cached, or how it is computed, changes.
CACHE_FORMAT = 1

Loader = Callable[[], tuple[Volume, Volume | None]]
Progress = Callable[[int, int], None]


def cache_key(pipeline: Pipeline) -> str:
    """16 hex digits naming the preprocessing a cache folder holds."""
    return hashlib.sha256(_describe(pipeline).encode("utf-8")).hexdigest()[:16]


def _describe(pipeline: Pipeline) -> str:
    content = {
        "format": CACHE_FORMAT,
        "preprocessing": pipeline.preprocessing.model_dump(mode="json"),
        "dimensions": pipeline.network.dimensions,
    }
    return json.dumps(content, sort_keys=True, indent=2)


def file_stamp(paths: Sequence[str | os.PathLike[str] | None]) -> str:
    """A short text that changes when any of the files changes (path, size, modification time).

    A folder (e.g. a DICOM series) stands for every file under it, so an edited,
    added or removed slice changes the stamp too. Missing paths count as missing
    (they change the stamp when they appear). Pass the stamp as ``stamp`` to
    :meth:`CaseCache.get` so that an edited scan or label is prepared again.
    """
    digest = hashlib.sha256()
    for path in paths:
        if path is None:
            continue
        for file in _files(os.fspath(path)):
            try:
                stat = os.stat(file)
            except OSError:
                digest.update(f"{file}\0missing\n".encode())
                continue
            digest.update(f"{file}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def _files(path: str) -> list[str]:
    if not os.path.isdir(path):
        return [path]
    found = [os.path.join(folder, name) for folder, _, names in os.walk(path) for name in names]
    return sorted(found)


class CaseCache:
    """Prepared cases on disk (``RUN_DIR/cache``), keyed by the pipeline's preprocessing.

    Args:
        folder: the cache's root; created when needed. Several pipelines may share it.
        pipeline: decides how cases are prepared, and so which subfolder is used.
    """

    def __init__(self, folder: str | os.PathLike[str], pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.key = cache_key(pipeline)
        self.folder = Path(folder) / self.key
        # A 2D network reads one slice k at a time: slices are stored contiguously ("ckij").
        self._layout = "ckij" if pipeline.network.dimensions == 2 else "cijk"

    def _stored(self, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array.transpose(0, 3, 1, 2) if self._layout == "ckij" else array)

    def _mapped(self, path: Path, layout: str) -> np.ndarray:
        array = np.load(path, mmap_mode="r")
        return array.transpose(0, 2, 3, 1) if layout == "ckij" else array

    def _ensure_folder(self) -> None:
        if self.folder.is_dir():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.folder / "preprocessing.json", lambda f: f.write(_describe(self.pipeline).encode() + b"\n"))

    def paths(self, case_id: str) -> dict[str, Path]:
        """The files of one case (whether or not they exist)."""
        stem = _file_stem(case_id)
        return {part: self.folder / f"{stem}.{part}.{ext}" for part, ext in _PARTS}

    def contains(self, case_id: str, *, stamp: str | None = None) -> bool:
        """Whether ``case_id`` is cached completely (and with ``stamp``, when given)."""
        return self._read_meta(case_id, stamp) is not None

    def get(self, case_id: str, load: Loader, *, stamp: str | None = None) -> PreparedCase:
        """The prepared case: memory-mapped from the cache, or loaded, prepared and cached.

        Args:
            case_id: names the case in the cache.
            load: reads ``(image, label)``; called only on a miss.
            stamp: e.g. :func:`file_stamp` of the case's files; a cached case made
                with another stamp is prepared again.

        Returns:
            The case; on a hit its image and label are read-only memory maps.
        """
        meta = self._read_meta(case_id, stamp)
        if meta is not None:
            return self._open(case_id, meta)
        image, label = load()
        prepared = prepare_case(image, label, self.pipeline, case_id=case_id)
        self.put(prepared, stamp=stamp)
        meta = self._read_meta(case_id, stamp)
        if meta is None:  # pragma: no cover - only if another process removed it meanwhile
            return prepared
        return self._open(case_id, meta)

    def put(self, case: PreparedCase, *, stamp: str | None = None) -> None:
        """Write a prepared case (replacing any cached one); nothing is left behind if it fails."""
        self._ensure_folder()
        paths = self.paths(case.case_id)
        written: list[Path] = []
        locations = _pack_locations(case.class_locations or {})
        arrays = [("image", self._stored(case.image)), ("locations", locations)]
        if case.label is not None:
            arrays.append(("label", self._stored(case.label)))
        meta = {
            "case_id": case.case_id,
            "format": CACHE_FORMAT,
            "stamp": stamp,
            "has_label": case.label is not None,
            "layout": self._layout,
            "geometry": _geometry_json(case.geometry),
            "source_geometry": None if case.source_geometry is None else _geometry_json(case.source_geometry),
        }
        paths["meta"].unlink(missing_ok=True)  # the case is incomplete from here until the meta is back
        try:
            for part, array in arrays:
                _write_atomic(paths[part], lambda f, a=array: np.save(f, a, allow_pickle=False))
                written.append(paths[part])
            if case.label is None:
                paths["label"].unlink(missing_ok=True)
            _write_atomic(paths["meta"], lambda f: f.write(json.dumps(meta, indent=1).encode()))
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        log.debug("cached case %r in %s", case.case_id, self.folder)

    def prepare_all(
        self,
        cases: Sequence[tuple[str, Loader]],
        *,
        workers: int = 1,
        progress: Progress | None = None,
        stamps: Mapping[str, str] | None = None,
    ) -> None:
        """Fill the cache up front; cases already cached (with their stamp, when given) are skipped.

        Args:
            cases: ``(case_id, load)`` pairs; with ``workers > 1`` each ``load``
                must be picklable (e.g. ``functools.partial(load_case, dataset, case)``).
                Worker processes are forked (Linux; elsewhere cases are prepared here).
            workers: processes preparing cases side by side (1: in this process).
            progress: called as ``progress(done, total)`` after each case.
            stamps: case id -> stamp (see :func:`file_stamp` and :meth:`get`); a case
                cached with another stamp is prepared again.
        """
        stamps = stamps or {}
        missing = [
            (case_id, load) for case_id, load in cases if not self.contains(case_id, stamp=stamps.get(case_id))
        ]
        total, done = len(cases), len(cases) - len(missing)
        if progress is not None:
            progress(done, total)
        if not missing:
            return
        self._ensure_folder()
        work = [(self.folder.parent, self.pipeline, case_id, load, stamps.get(case_id)) for case_id, load in missing]
        for _ in ordered_map(_prepare_into, work, workers=workers, min_items=2, initializer=_single_thread):
            done += 1
            if progress is not None:
                progress(done, total)

    # -- reading ----------------------------------------------------------------------

    def _read_meta(self, case_id: str, stamp: str | None) -> dict[str, Any] | None:
        paths = self.paths(case_id)
        try:
            meta = json.loads(paths["meta"].read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") != CACHE_FORMAT or meta.get("case_id") != case_id or meta.get("layout") != self._layout:
            return None
        if stamp is not None and meta.get("stamp") != stamp:
            return None
        needed = ["image", "locations"] + (["label"] if meta.get("has_label") else [])
        if not all(paths[part].is_file() for part in needed):
            return None
        return meta

    def _open(self, case_id: str, meta: dict[str, Any]) -> PreparedCase:
        paths = self.paths(case_id)
        image = self._mapped(paths["image"], meta["layout"])
        label = self._mapped(paths["label"], meta["layout"]) if meta["has_label"] else None
        geometry = _geometry_from_json(meta["geometry"])
        source = None if meta["source_geometry"] is None else _geometry_from_json(meta["source_geometry"])
        locations = _unpack_locations(np.load(paths["locations"])) if meta["has_label"] else None
        return PreparedCase(case_id, image, label, geometry, source, locations)


_PARTS = (("image", "npy"), ("label", "npy"), ("locations", "npy"), ("meta", "json"))


def _file_stem(case_id: str) -> str:
    """A file-name-safe stem; unusual ids get a hash suffix so that two never collide."""
    if not case_id:
        raise InputError("a cached case needs a non-empty case_id")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", case_id)
    if safe != case_id or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(case_id.encode()).hexdigest()[:8]}"
    return safe


def _write_atomic(path: Path, write: Callable[[Any], object]) -> None:
    """Write through a temporary file in the same folder, then move it into place."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _pack_locations(locations: dict[int, np.ndarray]) -> np.ndarray:
    parts = [
        np.concatenate([np.full((len(idx), 1), value, dtype=np.int32), np.asarray(idx, dtype=np.int32)], axis=1)
        for value, idx in sorted(locations.items())
    ]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, 4), dtype=np.int32)


def _unpack_locations(packed: np.ndarray) -> dict[int, np.ndarray]:
    if packed.size == 0:
        return {}
    values, starts = np.unique(packed[:, 0], return_index=True)
    stops = list(starts[1:]) + [len(packed)]
    return {int(v): packed[a:b, 1:] for v, a, b in zip(values, starts, stops)}


def _geometry_json(geometry: Geometry) -> dict[str, Any]:
    return {
        "shape": list(geometry.shape),
        "affine": geometry.affine.tolist(),
        "frame_of_reference_uid": geometry.frame_of_reference_uid,
    }


def _geometry_from_json(data: dict[str, Any]) -> Geometry:
    return Geometry(data["shape"], data["affine"], data["frame_of_reference_uid"])


def _single_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _prepare_into(job: tuple[Path, Pipeline, str, Loader, str | None]) -> None:
    root, pipeline, case_id, load, stamp = job
    CaseCache(root, pipeline).get(case_id, load, stamp=stamp)
