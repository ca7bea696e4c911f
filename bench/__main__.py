"""``python -m bench`` (``make bench``): Driftline throughput, CPU, memory and latency benchmark.

Runs on a private embedded stack (a Tansu EmbeddedBroker on a free port, chdb in a temp dir):
scenarios 1-5, the latency runs, the SDK micro-benchmark and two baselines (Quix Streams,
a naive faust agent), then prints one table with the targets. See bench/README.md.

    python -m bench                      # full run (~10-15 min on 2 cores)
    python -m bench --smoke              # seconds-long, tiny sizes (CI: tests/test_bench_smoke.py)
    python -m bench --size 200000 --scenarios 1,2,quix,naive --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import Progress, machine_info
from bench.floor import measure_floor
from bench.partition_check import measure_partition_check
from bench.report import evaluate, render
from bench.retained import measure_retained
from bench.scenarios import QUIX_PY, Bench
from bench.stages import measure_stages

ALL = ("1", "2", "1live", "2live", "3", "4", "5", "latency", "sdk", "retained", "check", "stages", "floor", "quix", "quixlive", "naive")
SMOKE = ("1", "2", "5", "sdk", "retained", "check", "stages", "floor", "quix", "naive")  # < 60 s: each worker start costs ~6 s


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, seconds-long; no Quix install")
    p.add_argument("--size", type=int, default=None,
                   help="predictions per scenario (each labelled: 2x input events); default 50000, smoke 10000: enough CPU for the 10 ms clock tick")
    p.add_argument("--pending", type=int, default=None, help="scenario 4 pending predictions (default 100000; the RSS target is for 1M: the report extrapolates per pending prediction)")
    p.add_argument("--store", default="memory://",
                   help="scenario 4's table store: memory:// (the RSS target) or rocksdb:// (its bound)")
    p.add_argument("--scenarios", default=None,
                   help=f"comma list of {','.join(ALL)} (default all; smoke: {','.join(SMOKE)})")
    p.add_argument("--json", dest="json_path", default=None, help="write the results as JSON here")
    p.add_argument("--naive-time-box", type=float, default=None,
                   help="stop the naive faust baseline after this many seconds and rate what it did (default 60)")
    p.add_argument("--sdk-calls", type=int, default=None, help="log_prediction calls timed (default 200000)")
    p.add_argument("--latency-duration", type=float, default=None, help="realtime run seconds (default 60)")
    p.add_argument("--profile", nargs="?", const="1", default="",
                   help="py-spy the workers of these scenarios (comma list of 1,2,3; bare --profile: 1); "
                        "raw stacks in bench/profile-<scenario>.txt (needs py-spy in the venv)")
    p.add_argument("--no-progress", action="store_true", help="no live progress lines on stderr")
    p.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (worker logs, chdb)")
    a = p.parse_args(argv)
    smoke = a.smoke
    a.size = a.size or (10_000 if smoke else 50_000)
    a.pending = a.pending or (3_000 if smoke else 100_000)
    a.naive_time_box = a.naive_time_box or (8.0 if smoke else 60.0)
    a.sdk_calls = a.sdk_calls or (20_000 if smoke else 200_000)
    a.latency_duration = a.latency_duration or (6.0 if smoke else 60.0)
    a.scenarios = a.scenarios or ",".join(SMOKE if smoke else ALL)
    a.selected = [s.strip() for s in a.scenarios.split(",") if s.strip()]
    a.profiled = tuple(f"s{s.strip()}" for s in a.profile.split(",") if s.strip())
    if any(s not in ("s1", "s2", "s3", "s1live", "s2live") for s in a.profiled):
        p.error(f"--profile takes scenarios 1, 2, 3, 1live and 2live, not {a.profile!r}")
    bad = [s for s in a.selected if s not in ALL]
    if bad:
        p.error(f"unknown scenarios {bad}; choose from {ALL}")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    from driftline.streams.broker import EmbeddedBroker

    progress = Progress(enabled=not a.no_progress)
    info = machine_info(str(QUIX_PY))
    info["mode"] = "smoke" if a.smoke else "full"
    info["size"] = a.size
    results: dict[str, Any] = {"machine": info, "args": {k: v for k, v in vars(a).items()}, "results": {},
                               "errors": {}}
    tmp = Path(tempfile.mkdtemp(prefix="driftline-bench-"))
    t_all = time.monotonic()
    broker = EmbeddedBroker(log_path=str(tmp / "broker.log"))
    broker.start()
    results["machine"]["broker_pid"] = broker.pid
    progress.log(f"bench: broker {broker.bootstrap}, temp {tmp}, size {a.size:,} predictions "
                 f"({2 * a.size:,} input events), scenarios {','.join(a.selected)}")
    b = Bench(broker.bootstrap, tmp, a.size, progress, smoke=a.smoke, profile=a.profiled,
              timeout=120.0 if a.smoke else 900.0, broker_pid=broker.pid)
    steps = {
        "1": ("s1", b.scenario1),
        "2": ("s2", b.scenario2),
        "1live": ("s1live", b.scenario1_live),
        "2live": ("s2live", b.scenario2_live),
        "3": ("s3", b.scenario3),
        "4": ("s4", lambda: b.scenario4(a.pending, a.store)),
        "5": ("s5", b.scenario5),
        "latency": ("latency", lambda: b.latency(300.0 if a.smoke else 1000.0, a.latency_duration,
                                                  a.latency_duration / 2)),
        "sdk": ("sdk", lambda: b.sdk(a.sdk_calls)),
        "retained": ("retained", measure_retained),
        "check": ("partition_check", measure_partition_check),
        "stages": ("stages", lambda: measure_stages(*b.data())),
        "floor": ("floor", lambda: measure_floor(*b.data(), tmp=b.tmp)),
        "quix": ("quix", lambda: b.quix(allow_install=not a.smoke)),
        "quixlive": ("quixlive", lambda: b.quix(allow_install=not a.smoke, live=True)),
        "naive": ("naive", lambda: b.naive_faust(a.naive_time_box)),
    }
    try:
        for s in ALL:  # fixed order: single-event topics are filled once (s2) and reused by baselines
            if s not in a.selected:
                continue
            key, fn = steps[s]
            progress.log(f"[{key}] ...")
            t = time.monotonic()
            try:
                results["results"][key] = fn()
            except Exception as exc:  # one failing scenario must not hide the others
                results["errors"][key] = f"{type(exc).__name__}: {exc}"
                progress.done(f"  {key} FAILED: {exc}")
                if os.environ.get("BENCH_TRACEBACK"):
                    traceback.print_exc()
            results["results"].get(key, {}).setdefault("wall_s", round(time.monotonic() - t, 1)) \
                if isinstance(results["results"].get(key), dict) else None
    finally:
        broker.stop()
        if a.keep_tmp:
            progress.log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if b.profile_results:
        results["profiles"] = b.profile_results
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    results["total_s"] = round(time.monotonic() - t_all, 1)
    results["targets"] = evaluate(results["results"])
    print(render(results))
    if a.json_path:
        Path(a.json_path).write_text(json.dumps(results, indent=2, default=str))
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
