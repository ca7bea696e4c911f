"""Refuse state that another deployment wrote: offsets mean nothing on other topics.

Each partition record holds the input offsets it has applied. Two deployments with different
topic prefixes but one app id (so one set of changelog topics) would otherwise resume each
other's topics at each other's offsets: records skipped, windows mixed. The app id now
follows the prefix (``Settings.application_id``); this check catches an app id shared by hand.
"""

from __future__ import annotations

from collections.abc import Mapping


class ForeignStateError(RuntimeError):
    """The recovered state's offsets belong to other topics than this worker reads."""


class UnknownStateFormatError(ValueError):
    """A recovered state record is in a format this Driftline cannot read (a newer version's)."""


def check_topics(recorded: Mapping[str, str] | None, expected: Mapping[str, str], where: str) -> None:
    """Raise :class:`ForeignStateError` when ``recorded`` names other topics than ``expected``.

    State written before topics were recorded (``recorded`` None) is accepted.

    >>> check_topics({"prediction": "a.predictions"}, {"prediction": "a.predictions"}, "join 0")
    >>> check_topics({"prediction": "a.predictions"}, {"prediction": "b.predictions"}, "join 0")
    Traceback (most recent call last):
    ...
    driftline.streams.statecheck.ForeignStateError: join 0: the recovered state holds offsets of topics {'prediction': 'a.predictions'}, but this worker reads {'prediction': 'b.predictions'}. Two deployments share one app id: give each its own DRIFTLINE_APP_ID (by default it follows DRIFTLINE_TOPIC_PREFIX), or delete this app id's changelog topics to start over.
    """
    if recorded is None or all(expected.get(k, v) == v for k, v in recorded.items()):
        return  # topics added since (recorded by an older version) are not a mismatch
    raise ForeignStateError(
        f"{where}: the recovered state holds offsets of topics {dict(recorded)}, but this worker reads "
        f"{dict(expected)}. Two deployments share one app id: give each its own DRIFTLINE_APP_ID (by "
        "default it follows DRIFTLINE_TOPIC_PREFIX), or delete this app id's changelog topics to start over."
    )
