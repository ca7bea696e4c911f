"""A local Prometheus Alertmanager process, for tests and ``driftline demo`` (like the embedded
broker of ``driftline.streams.broker``).

It runs the binary of Debian's ``prometheus-alertmanager`` package (or an ``alertmanager`` on
``PATH``) on 127.0.0.1 with clustering off and its storage in a private folder.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

import orjson

from driftline.streams.broker import terminate

#: Routes everything to a receiver with no integrations: alerts are kept, shown by the API.
NULL_CONFIG = """\
route:
  receiver: "null"
  group_by: [alertname, model_id]
receivers:
  - name: "null"
"""


def alertmanager_binary() -> str | None:
    """Path of an Alertmanager binary on this host, or None."""
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalAlertmanager:
    """``prometheus-alertmanager`` on ``127.0.0.1:port`` with ``config`` (YAML text).

    Parameters
    ----------
    config : str
        The configuration file's content.
    workdir : str or None
        Folder for the config, storage and log; default a new temporary folder.
    port : int
        0 picks a free port; a given port lets a test restart it at the same address.
    """

    def __init__(self, config: str = NULL_CONFIG, workdir: str | None = None, port: int = 0) -> None:
        self.config = config
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="driftline-am-"))
        self.port = port or _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> LocalAlertmanager:
        binary = alertmanager_binary()
        if binary is None:
            raise RuntimeError("no Alertmanager binary: apt-get install prometheus-alertmanager")
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "am.yml").write_text(self.config)
        self._log = open(self.workdir / "alertmanager.log", "ab")  # noqa: SIM115 - lives with the process
        self._proc = subprocess.Popen(
            [binary, f"--config.file={self.workdir / 'am.yml'}", f"--storage.path={self.workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"alertmanager exited with {self._proc.returncode}; see {self.workdir}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"alertmanager not ready on {self.url} within {timeout}s")

    def alerts(self) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, silenced and inhibited ones)."""
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as r:
            return list(orjson.loads(r.read()))

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalAlertmanager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        # Never leave an orphan Alertmanager behind if the owner forgot stop().
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
