"""The exit codes of every ``medseg`` command: one table, which scripts and job schedulers key on.

=====  =====================================================================================
code   meaning
=====  =====================================================================================
0      success
1      unexpected failure (a bug, a full disk, an output that cannot be written, a doctor check)
2      usage, configuration or input error: fix the command, the file or the model and run again
3      PACS or network failure: the server is unreachable, refuses or fails; try again later
4      a batch that finished with some cases failed; the others are done (see its manifest)
130    interrupted (Ctrl-C)
=====  =====================================================================================
"""

from __future__ import annotations

from enum import IntEnum

from medseg.errors import MedsegError, PacsError


class Exit(IntEnum):
    """The exit codes (``docs/cli.md`` has the table)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    NETWORK = 3
    PARTIAL = 4
    INTERRUPTED = 130


def batch_exit(*, failed: int, total: int) -> Exit:
    """A finished batch: OK when nothing failed, PARTIAL when a case failed, USAGE when there was nothing to do."""
    if total == 0:
        return Exit.USAGE  # nothing found to work on: most likely a wrong path or query
    return Exit.PARTIAL if failed else Exit.OK


def exit_for(error: BaseException) -> Exit:
    """The code of an error that ended a command."""
    if isinstance(error, (PacsError, ConnectionError, TimeoutError)):
        return Exit.NETWORK
    if isinstance(error, (MedsegError, FileNotFoundError, NotADirectoryError, IsADirectoryError)):
        return Exit.USAGE
    return Exit.FAILED
