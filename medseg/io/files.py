"""File-system helpers every writer uses: atomic replacement and safe names."""

from __future__ import annotations

import os
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only on success.

    A killed or failing writer leaves no half-written file under the final name.
    The temporary name keeps the file's extensions, which format libraries read.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes[-2:])[:16] or ".tmp"  # e.g. ".nii.gz", ".seg.dcm"; not a dotted UID's parts
    tmp = _reserve(target.parent, f".{target.name}.", suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _reserve(folder: Path, prefix: str, suffix: str) -> Path:
    """Create an empty, uniquely named file as ``open()`` would: mode 0o666 less the umask.

    :func:`tempfile.mkstemp` would make it 0o600, and the written file would keep that.
    """
    for _ in range(100):
        candidate = folder / f"{prefix}{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"{folder}: found no free temporary name {prefix}*{suffix}")


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path``; returns ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def safe_name(*parts: object, max_length: int = 80) -> str:
    """A file-name-safe stem from free text (e.g. DICOM tag values).

    Only ASCII letters, digits, ``.``, ``_`` and ``-`` survive; path separators,
    ``..`` and control characters cannot, so the result can never leave its folder.
    """
    text = "_".join(str(p) for p in parts if p not in (None, ""))
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"\.{2,}", ".", text)
    return text[:max_length].rstrip("._-") or "unnamed"
