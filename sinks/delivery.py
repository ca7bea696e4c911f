"""Delivery to an HTTP target: one sender thread per target, bounded retries with backoff.

A :class:`Sender` owns one FIFO of :class:`Job` s and sends them one at a time, in order (an
alert's resolve is never posted before its firing). A failed attempt is retried after an
exponential backoff (``backoff_start`` seconds, doubling, at most ``backoff_max``); after
``max_attempts`` attempts, or at once for a permanent failure (an HTTP 4xx other than 408 and
429: the request itself is wrong and sending it again cannot help), the job is dropped, counted
and logged. Every job ends with one call of ``on_done`` (delivered, dropped or stale), which is
how the caller learns when an offset may be committed.

The queue itself is unbounded here; its bound is the caller's to keep (:meth:`Sender.backlog`):
the alert delivery runner stops reading the alerts topic while a target's backlog is full, so
Kafka, not memory, holds what waits.
"""

from __future__ import annotations

import collections
import http.client
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)

#: The outcomes counted per target (``driftline_alert_deliveries_total{outcome=...}``).
OUTCOMES = ("delivered", "retried", "dropped", "skipped")


class DeliveryError(Exception):
    """One delivery attempt failed; ``retryable`` says whether another attempt can help."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class Target(Protocol):
    """Where jobs go. ``name`` is safe to log and to use as a metrics label (no secrets)."""

    name: str

    def send(self, item: Any) -> None:
        """Deliver one item; raise :class:`DeliveryError` on failure."""


def http_post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body``; raise :class:`DeliveryError` unless the answer is 2xx.

    The error message names the status and the start of the answer, never the URL (its path
    or user info may carry a credential).
    """
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers},
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - http(s) checked in Settings
            r.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read(300).decode("utf-8", "replace").strip()
        retryable = exc.code >= 500 or exc.code in (408, 429)
        raise DeliveryError(f"HTTP {exc.code}: {detail}", retryable=retryable) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"{type(exc).__name__}: {reason}") from None
    except http.client.InvalidURL:
        raise DeliveryError("invalid URL", retryable=False) from None  # its text would show the URL
    except http.client.HTTPException as exc:  # a broken answer: the next attempt may get a good one
        raise DeliveryError(f"{type(exc).__name__}") from None
    except ValueError as exc:  # urllib's "unknown url type" and the like quote the URL too
        raise DeliveryError(f"{type(exc).__name__} in the request", retryable=False) from None


@dataclass
class Job:
    """One item for one target, with the source position it acknowledges (None: a re-post)."""

    item: Any
    source: tuple[str, int] | None = None  # (topic, partition)
    offset: int | None = None
    epoch: int = 0  # the partition's assignment epoch when the job was made
    what: str = ""  # for logs: alert ids, never a payload


@dataclass
class SenderStats:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    last_error: str | None = None


class Sender:
    """Send ``target``'s jobs in order from its own thread.

    Parameters
    ----------
    target : Target
        Where the items go.
    on_done : callable
        Called with each job once, from the sender thread, when it is finished: delivered,
        dropped, or skipped as stale; not for a job abandoned by :meth:`stop`.
    is_stale : callable, optional
        ``is_stale(job)``: True when the job's partition was revoked since it was queued (the
        new owner delivers it); checked before every attempt.
    max_attempts : int
        Attempts before a job is dropped.
    backoff_start, backoff_max : float
        First retry delay and its cap, seconds; the delay doubles after each failure.
    """

    def __init__(self, target: Target, on_done: Callable[[Job], None], *,
                 is_stale: Callable[[Job], bool] | None = None, max_attempts: int = 10,
                 backoff_start: float = 0.5, backoff_max: float = 30.0) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1")
        if not 0 < backoff_start <= backoff_max:
            raise ValueError("backoff_start: must be > 0 and <= backoff_max")
        self.target, self.on_done = target, on_done
        self.is_stale = is_stale or (lambda job: False)
        self.max_attempts, self.backoff_start, self.backoff_max = max_attempts, backoff_start, backoff_max
        self._queue: collections.deque[Job] = collections.deque()
        self._cond = threading.Condition()
        self._busy = False
        self._stop = threading.Event()
        self._stats = SenderStats()
        self._thread = threading.Thread(target=self._run, name=f"driftline-deliver-{target.name}", daemon=True)

    @property
    def name(self) -> str:
        return self.target.name

    def start(self) -> Sender:
        self._thread.start()
        return self

    def put(self, job: Job) -> None:
        with self._cond:
            self._queue.append(job)
            self._cond.notify()

    def backlog(self) -> int:
        """Jobs queued or being sent."""
        with self._cond:
            return len(self._queue) + (1 if self._busy else 0)

    def count(self, outcome: str, n: int = 1) -> None:
        with self._cond:
            self._stats.counts[outcome] += n

    def stats(self) -> dict[str, Any]:
        with self._cond:
            return {**self._stats.counts, "queued": len(self._queue) + (1 if self._busy else 0),
                    "last_error": self._stats.last_error}

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queued job is finished; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop after the current attempt; queued jobs are abandoned (their offsets not committed)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ---- sender thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._stop.is_set():
                    return
                job = self._queue.popleft()
                self._busy = True
            finished = True
            try:
                finished = self._deliver(job)
            except Exception:  # a bug in a target must not kill the thread
                log.exception("alert delivery to %s failed unexpectedly; job dropped", self.name)
                self.count("dropped")
            finally:
                if finished:
                    self.on_done(job)
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _deliver(self, job: Job) -> bool:
        """Send with retries; False only when stopped mid-way (the job is then not finished)."""
        delay = self.backoff_start
        for attempt in range(1, self.max_attempts + 1):
            if self.is_stale(job):
                return True  # revoked: the partition's new owner delivers it
            try:
                self.target.send(job.item)
            except DeliveryError as exc:
                with self._cond:
                    self._stats.last_error = str(exc)[:300]
                final = not exc.retryable or attempt == self.max_attempts
                if final:
                    self.count("dropped")
                    log.error("alert delivery to %s dropped after %d attempt(s): %s (%s)",
                              self.name, attempt, exc, job.what)
                    return True
                self.count("retried")
                log.warning("alert delivery to %s failed (attempt %d of %d), retrying in %.1fs: %s",
                            self.name, attempt, self.max_attempts, delay, exc)
                if self._stop.wait(delay):
                    return False  # shutting down: not delivered, so its offset is not committed
                delay = min(delay * 2.0, self.backoff_max)
                continue
            self.count("delivered")
            return True
        return True
