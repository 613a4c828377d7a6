"""Talk to a PACS: check it answers, list its series, pull series into folders, push files.

``medseg pacs echo|query|pull|push`` render these; a notebook calls them with the same settings::

    from medseg.workflows.pacs_transfer import pull, series_query, settings

    pacs = settings("pacs.yaml")
    for pulled in pull(pacs, series_query(study_uid="1.2.3"), "studies/").series:
        print(pulled.series.description, pulled.instances, pulled.folder)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medseg.errors import ConfigError
from medseg.io.dicom import find_files
from medseg.io.files import safe_name
from medseg.pacs.client import connect
from medseg.pacs.config import KEYS, PacsSettings, load_settings
from medseg.pacs.model import SeriesInfo, SeriesQuery, StoreReport

__all__ = [
    "SETTING_KEYS",
    "PullReport",
    "PulledSeries",
    "connect",
    "echo",
    "pull",
    "push",
    "query",
    "series_query",
    "settings",
]

#: The connection settings a flag or a settings file may give (``protocol`` comes from the file or the URL).
SETTING_KEYS = tuple(key for key in KEYS if key != "protocol")


def settings(path: str | os.PathLike[str] | None, overrides: Mapping[str, Any] | None = None) -> PacsSettings:
    """The PACS connection from a settings file (or None), the environment and ``overrides`` (None: not given).

    Raises:
        ConfigError: a missing or malformed setting.
    """
    return load_settings(path, overrides=dict(overrides or {}))


def series_query(**filters: str | None) -> SeriesQuery:
    """A series query: ``patient_id``, ``study_date``, ``modality``, ``study_uid``, ``series_uid``, ``description``."""
    return SeriesQuery(**filters)


def echo(pacs: PacsSettings) -> None:
    """Check that the PACS answers (C-ECHO, or a QIDO-RS request).

    Raises:
        PacsError: unreachable, refused, or an error answer.
    """
    with connect(pacs) as client:
        client.echo()


def query(pacs: PacsSettings, wanted: SeriesQuery) -> list[SeriesInfo]:
    """The series the PACS holds that match ``wanted``."""
    with connect(pacs) as client:
        return client.find_series(wanted)


@dataclass(frozen=True)
class PulledSeries:
    """One series pulled: what it is, where its files went, how many instances."""

    series: SeriesInfo
    folder: Path
    instances: int


@dataclass
class PullReport:
    """The series pulled, in the order they were."""

    series: list[PulledSeries] = field(default_factory=list)


def pull(
    pacs: PacsSettings,
    wanted: SeriesQuery,
    output: str | os.PathLike[str],
    *,
    on_series: Callable[[PulledSeries], None] | None = None,
) -> PullReport:
    """Pull every series matching ``wanted`` into ``output/<study UID>/<series UID>/``.

    Args:
        on_series: called as each series is done.

    Raises:
        ConfigError: a query without any filter (it would pull everything), or an output that is a file.
        PacsError: the PACS failed.
    """
    if not wanted.filters():
        raise ConfigError(
            "pacs pull needs at least one filter (e.g. --study-uid or --patient-id): it would pull everything"
        )
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{output}: exists and is not a folder")
    report = PullReport()
    with connect(pacs) as client:
        for series in client.find_series(wanted):
            study, name = (safe_name(uid, max_length=120) for uid in (series.study_uid, series.series_uid))
            folder = output / study / name
            done = PulledSeries(series, folder, len(client.retrieve_series(series, folder)))
            report.series.append(done)
            if on_series is not None:
                on_series(done)
    return report


def push(pacs: PacsSettings, paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], StoreReport]:
    """Send files, or every file in folders (hidden ones left out); the files found and what was stored.

    Raises:
        FileNotFoundError: a path that does not exist, or no file at all.
        PacsError: the PACS failed (a file it refused is in the report).
    """
    files: list[str] = []
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"{path}: no such file or folder")
        files.extend(find_files(path))
    if not files:
        raise FileNotFoundError(f"{', '.join(map(str, paths))}: no files to push")
    with connect(pacs) as client:
        return files, client.store(files)
