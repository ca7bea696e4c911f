"""Baseline (a): Quix Streams consume + JSON decode + a trivial map of each single-event message.

Runs in its own venv (``bench/.venv-quix``: quixstreams pins an older confluent-kafka), so it
imports nothing from Driftline. Usage::

    bench/.venv-quix/bin/python bench/quix_baseline.py BOOTSTRAP GROUP EXPECTED TOPIC [TOPIC...]

Prints progress lines ``{"count": n}`` and, at the end, one JSON line
``{"result": {"count", "elapsed_s", "cpu_s", "peak_rss_mb"}}``: elapsed from the first
message consumed to the ``EXPECTED``-th (both in this process), CPU and VmHWM of this process.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _cpu() -> float:
    with open(f"/proc/{os.getpid()}/stat") as fh:
        raw = fh.read()
    f = raw[raw.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _hwm_mb() -> float:
    for line in open(f"/proc/{os.getpid()}/status"):  # noqa: SIM115
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    bootstrap, group, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    topics = sys.argv[4:]
    from quixstreams import Application

    app = Application(
        broker_address=bootstrap,
        consumer_group=group,
        auto_offset_reset="earliest",
        loglevel="WARNING",
        auto_create_topics=False,
        use_changelog_topics=False,
        consumer_extra_config={"session.timeout.ms": 6000},
    )
    state = {"count": 0, "t0": 0.0, "cpu0": 0.0, "t1": 0.0, "cpu1": 0.0, "next": 0.0}

    def count(value: object) -> None:
        n = state["count"] = state["count"] + 1
        if n == 1:
            state["t0"] = time.monotonic()
            state["cpu0"] = _cpu()
        if n >= expected:
            if not state["t1"]:
                state["t1"] = time.monotonic()
                state["cpu1"] = _cpu()
                app.stop()
        elif not n & 0x3FFF and time.monotonic() >= state["next"]:
            state["next"] = time.monotonic() + 1.0
            print(json.dumps({"count": n}), flush=True)

    for name in topics:
        topic = app.topic(name, value_deserializer="json")
        sdf = app.dataframe(topic)
        sdf = sdf.apply(lambda v: (v.get("model_id"), v.get("prediction_id")))  # the trivial map
        sdf.update(count)
    app.run()
    if not state["t1"]:
        state["t1"], state["cpu1"] = time.monotonic(), _cpu()
    print(json.dumps({"result": {"count": state["count"], "elapsed_s": state["t1"] - state["t0"],
                                 "cpu_s": state["cpu1"] - state["cpu0"], "peak_rss_mb": _hwm_mb()}}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
