"""Driftline: Kafka-native monitoring for ML models in production.

The repository keeps its four packages at its root (``schemas/``, ``detectors/``, ``streams/``,
``sinks/``); they install under this namespace as ``driftline.schemas``, ``driftline.detectors``,
``driftline.streams`` and ``driftline.sinks`` (``package-dir`` in ``pyproject.toml``), so a
serving app's own ``schemas`` module never meets ours.

The base install (``pip install driftline``) is what a serving fleet needs: the wire contract and
the producer SDK.

>>> from driftline import DriftlineProducer, __version__
>>> DriftlineProducer.__module__
'driftline.streams.sdk'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

#: The package's version: the one place it is written (``pyproject.toml`` reads it from here).
__version__ = "0.2.0"

__all__ = ["DriftlineProducer", "__version__"]

if TYPE_CHECKING:
    from driftline.streams.sdk import DriftlineProducer


def __getattr__(name: str) -> Any:
    # Lazy, so that ``import driftline`` (for ``__version__``) costs no confluent-kafka import.
    if name == "DriftlineProducer":
        from driftline.streams.sdk import DriftlineProducer

        return DriftlineProducer
    raise AttributeError(f"module 'driftline' has no attribute {name!r}")
