"""How the worker stops on an error in a processing step: exit at once, resume from the tables.

faust would restart a failed agent with its batch acked, and the partition's in-memory state
would run ahead of what was delivered and written. Exiting commits nothing more; the restarted
worker resumes from the tables, as after SIGKILL. Errors a restart would only meet again (another
deployment's state, detector state this code cannot read) exit with 78 (EX_CONFIG) and say so;
every other error exits with 70 (EX_SOFTWARE) for the restart policy to act on.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from driftline.detectors.drift import DetectorStateError
from driftline.streams.statecheck import ForeignStateError, UnknownStateFormatError

log = logging.getLogger("driftline.worker")

EX_SOFTWARE = 70
EX_CONFIG = 78


@contextlib.contextmanager
def halt_on_error(what: str) -> Iterator[None]:
    """Run a processing step; on an error, log it and exit the process (see the module docstring)."""
    try:
        yield
    except ForeignStateError as exc:
        log.critical("refusing another deployment's state: %s", exc)
        _exit(EX_CONFIG)
    except UnknownStateFormatError as exc:
        log.critical("refusing recovered state this version cannot read: %s", exc)
        _exit(EX_CONFIG)
    except DetectorStateError as exc:
        # Old (pickle) or unreadable detector state, or a river this code does not know; the
        # message says how to start afresh.
        log.critical("refusing the recovered detector state: %s", exc)
        _exit(EX_CONFIG)
    except Exception:
        log.critical("%s failed: exiting so that a restart resumes from the tables", what, exc_info=True)
        _exit(EX_SOFTWARE)


def _exit(code: int) -> None:
    logging.shutdown()
    os._exit(code)
