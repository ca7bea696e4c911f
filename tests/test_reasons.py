"""Every dead-letter reason the product writes is a documented reason code."""

from __future__ import annotations

import re
from pathlib import Path

from driftline.schemas import REASON_CODES

ROOT = Path(__file__).resolve().parents[1]
#: ``Rejection("code", ...)``, or a ``code = "..."`` chosen before one: how every reason is made.
WRITTEN = re.compile(r"(?:Rejection\(\s*|\bcode = )\"([a-z0-9_]+)\"")


def codes_written() -> set[str]:
    found: set[str] = set()
    for package in ("schemas", "detectors", "streams", "sinks"):
        for path in (ROOT / package).rglob("*.py"):
            found.update(WRITTEN.findall(path.read_text()))
    return found


def test_every_code_the_product_writes_is_listed() -> None:
    written = codes_written()
    assert len(written) > 15  # the scan finds the validators' and the worker's codes
    assert written - set(REASON_CODES) == set()


def test_every_listed_code_is_written_somewhere() -> None:
    assert set(REASON_CODES) - codes_written() == set()
