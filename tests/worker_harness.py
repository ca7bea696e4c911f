"""Run a real ``driftline worker`` subprocess against the test broker and a chdb store."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import orjson

FAST_WINDOWS = {
    "DRIFTLINE_WINDOW_SECONDS": "10",
    "DRIFTLINE_ALLOWED_LATENESS": "5",
    "DRIFTLINE_IDLE_CLOSE_SECONDS": "2",
    "DRIFTLINE_FLUSH_INTERVAL": "1",
}


def run_halted_step(imports: str, statement: str) -> subprocess.CompletedProcess[str]:
    """Run ``statement`` in a fresh interpreter inside ``halt_on_error``, as a worker runs a
    processing step: its exit status and stderr say how the worker would stop."""
    code = f"from driftline.streams.halt import halt_on_error\n{imports}\nwith halt_on_error('step'):\n    {statement}\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Worker:
    """One worker process; ``restart()`` keeps its app id, store and web port."""

    def __init__(self, bootstrap: str, prefix: str, tmp: Path, *, config: str = "", sink: bool = True,
                 partitions: int = 4, extra_env: dict[str, str] | None = None, app_id: str | None = None,
                 name: str = "worker", prelude: str = "") -> None:
        self.tmp = tmp
        self.name = name
        # Python run in the worker process before the CLI (fault injection in tests).
        self.prelude = prelude
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ, **FAST_WINDOWS,
            "DRIFTLINE_BOOTSTRAP": bootstrap,
            "DRIFTLINE_TOPIC_PREFIX": prefix,
            "DRIFTLINE_CLICKHOUSE": f"chdb://{tmp.resolve()}/ch",
            "DRIFTLINE_DATA_DIR": str(tmp / "state"),
            "DRIFTLINE_WEB_PORT": str(self.port),
            "DRIFTLINE_PARTITIONS": str(partitions),
            "DRIFTLINE_APP_ID": app_id or f"dl-{uuid.uuid4().hex[:8]}",
            "DRIFTLINE_CONFIG": config,
            "DRIFTLINE_SINK": "1" if sink else "0",
            **(extra_env or {}),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0) -> Worker:
        self.starts += 1
        log = open(self.tmp / f"{self.name}-{self.starts}.log", "wb")  # noqa: SIM115 - closed with the process
        argv = [sys.executable, "-m", "driftline.streams.cli", "worker"]
        if self.prelude:
            argv = [sys.executable, "-c",
                    f"{self.prelude}\nimport sys\nfrom driftline.streams.cli import main\nsys.exit(main(['worker']))"]
        self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                h = self.health()
                if h["partitions"] and not h["rebalancing"] and (h["sink"] is None or h["sink"].get("assigned")):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return "\n".join((self.tmp / f"{self.name}-{i}.log").read_text(errors="replace")
                         for i in range(1, self.starts + 1))

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
            return dict(orjson.loads(r.read()))

    def query(self, sql: str) -> list[dict[str, Any]]:
        req = urllib.request.Request(self.url + "/query", data=orjson.dumps({"sql": sql, "format": "json"}),
                                     headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(req, timeout=60) as r:
            return list(orjson.loads(r.read()))

    def wait_for(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> Any:
        deadline = time.time() + timeout
        last: Any = None
        while time.time() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; last={last!r}\n{self.log()[-3000:]}")

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Until windows closed and the sink's message count has been stable for 3 s."""
        state: dict[str, Any] = {"last": None, "stable": 0}

        def settled() -> bool:
            h = self.health()
            sink = h["sink"] or {}
            cur = (sink.get("messages"), h["open_windows"], h["counters"].get("joins"))
            ok = cur == state["last"] and h["open_windows"] == 0 and not sink.get("buffered_rows")
            state["stable"] = state["stable"] + 1 if ok else 0
            state["last"] = cur
            return bool(state["stable"] >= 6)

        self.wait_for(settled, timeout, "the pipeline to drain")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        self.proc.wait(timeout=60)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def committed_caught_up(bootstrap: str, group: str, topic: str) -> bool:
    """Whether ``group`` has committed every offset of ``topic`` (all its input processed)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        tps = [TopicPartition(topic, p) for p in parts]
        committed = {tp.partition: tp.offset for tp in c.committed(tps, timeout=10)}
        for p in parts:
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > 0 and committed.get(p, -1) < high:
                return False
        return True
    finally:
        c.close()
