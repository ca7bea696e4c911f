"""Scenario 5 in its own process: SinkRunner + ClickHouseSink (chdb) over a pre-filled outcomes topic.

``python -m bench.sink_proc BOOTSTRAP TOPIC DSN EXPECTED``: prints ``{"rows": n}`` progress lines,
then ``{"result": {...}}``: elapsed from the first message consumed (runner stats) to
``rows_written["outcomes"] == EXPECTED``, CPU seconds and VmHWM of this process.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.common import cpu_seconds, peak_rss_mb


def main() -> int:
    bootstrap, topic, dsn, expected = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    from driftline.sinks.clickhouse import ClickHouseSink
    from driftline.sinks.runner import SinkRunner

    pid = os.getpid()
    sink = ClickHouseSink(dsn)
    runner = SinkRunner(bootstrap, [topic], sink, group_id=f"bench-sink-{pid}")
    runner.start()
    t0 = cpu0 = None
    deadline = time.monotonic() + 600
    rows = 0
    next_print = 0.0
    try:
        while time.monotonic() < deadline:
            st = runner.stats()
            if st.get("last_error") and not st.get("running"):
                raise RuntimeError(st["last_error"])
            if t0 is None and st["messages"] > 0:
                t0, cpu0 = time.monotonic(), cpu_seconds(pid)
            rows = int(st.get("rows_written", {}).get("outcomes", 0))
            if rows >= expected:
                break
            if time.monotonic() >= next_print:
                next_print = time.monotonic() + 1.0
                print(json.dumps({"rows": rows, "messages": st["messages"]}), flush=True)
            time.sleep(0.01)
        t1, cpu1 = time.monotonic(), cpu_seconds(pid)
        result = {"rows": rows, "elapsed_s": t1 - (t0 or t1), "cpu_s": cpu1 - (cpu0 or cpu1),
                  "peak_rss_mb": peak_rss_mb(pid), "stats": runner.stats().get("sink", {})}
    finally:
        runner.stop()
    print(json.dumps({"result": result}, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
