"""Reviewing a prediction batch in the browser: the review server of an output folder.

:func:`review_server` reads the folder and binds a :class:`~medseg.review.server.ReviewServer`;
the caller runs ``serve_forever()`` and closes it. Decisions go to ``OUT/review.csv``;
nothing else in the folder is written.
"""

from __future__ import annotations

import os

from medseg.errors import ConfigError
from medseg.review.batch import read_batch
from medseg.review.server import ReviewServer, make_server


def review_server(folder: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 0) -> ReviewServer:
    """A review server for a ``medseg predict`` output folder, bound and ready to serve.

    Args:
        folder: the output folder.
        host: the address to listen on (default: this machine only).
        port: the port; 0 picks a free one (the server's ``url`` says which).

    Raises:
        InputError: the folder is not a prediction output folder, or its review.csv is unreadable.
        ConfigError: the port is out of range.
        OSError: the address cannot be bound.
    """
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be 0 (any free port) to 65535, got {port}")
    return make_server(read_batch(folder), host=host, port=port)
