"""Alert delivery: the alerts topic to Alertmanager (API v2) and a webhook, off the hot path.

An :class:`AlertDeliveryRunner` is a consumer of ``<prefix>alerts`` in its own consumer group
(``<app_id>-alerts``) and its own thread, with one sender thread per target
(:mod:`driftline.sinks.delivery`): the join and merge agents never wait for it. With several
workers the group shares the partitions out, so each transition is handled by one worker.

What is delivered
-----------------
* Every transition (a firing, an escalation or a resolved alert message) to every target: to each
  Alertmanager URL (an HA pair gets both posts) as an API v2 alert
  (:mod:`driftline.sinks.alertmanager`), to the webhook as the message itself
  (:mod:`driftline.sinks.webhook`).
* Every ``repost_seconds``, the firing alerts of the runner's partitions again, to each
  Alertmanager only, with a fresh ``endsAt`` lease: Alertmanager expects clients to re-send
  active alerts, and ends one whose ``endsAt`` passed. Once more right after a partition is
  (re)assigned, since its new owner cannot know when the last post was.

Guarantees
----------
* **At least once per transition and target**, across restarts and rebalances: a partition's
  offset is committed only after every target has finished the transitions before it
  (delivered, or dropped after its attempts: see below). A crash between a delivery and its
  commit repeats that delivery. Alertmanager deduplicates identical label sets, so a repeated
  post is harmless there; **a webhook receiver should deduplicate by ``alert_id``** (one
  transition of one incident: the firing and resolved alerts of an incident have different ids).
* **No repeat of what was committed**: on assignment a partition is read from its beginning to
  rebuild its state (the firing alerts, the transitions already seen), and only messages from
  the group's committed offset on are delivered. A transition that is on the topic twice (the
  pipeline is at least once too) is delivered once while its id is among the partition's last
  ``seen_limit`` transitions.
* A group with no committed offset for a partition (the first start with delivery on) delivers
  from the partition's end at that time and commits that position at once; alerts already
  firing then still reach Alertmanager through the rebuild's re-post, not the webhook.
* **Bounded**: a failed attempt is retried with exponential backoff; after ``max_attempts`` (or
  at once for an HTTP 4xx other than 408/429) the delivery is dropped, logged and counted, and
  the offset moves on. For Alertmanager a dropped firing post is repaired by the next re-post
  and a dropped resolve by the lease ending (Alertmanager resolves the alert itself at
  ``endsAt``); for the webhook a dropped transition is lost. While any target has
  ``max_queue`` deliveries waiting, the runner pauses its partitions: Kafka holds the rest.
* The state is rebuilt from the topic only as far back as its retention: an incident that
  fired longer ago than that and is still firing is no longer re-posted (Alertmanager ends it
  at its lease) until its resolve arrives, which is still delivered.
* Logs and metric labels name a target by host and port only: never a URL path, user info or
  the webhook secret.

Why not a :class:`driftline.sinks.runner.SinkRunner` with a sink: a sink writes a batch in one
synchronous call and a failure retries the whole batch, so one target that is down would hold
back (and make repeat) the others; here each target progresses on its own and an offset is
committed once all of them have finished it. A sink also starts a partition where its
destination says it stopped; delivery has to read the partition from its beginning, without
delivering, to know which alerts are still firing.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from driftline.sinks.alertmanager import AlertmanagerTarget, alert_labels
from driftline.sinks.delivery import Job, Sender
from driftline.sinks.runner import consumer_config
from driftline.sinks.webhook import WebhookTarget

log = logging.getLogger(__name__)

TP = tuple[str, int]
#: Alerts per Alertmanager post when re-posting a partition's firing set.
REPOST_CHUNK = 500
REQUIRED = ("alert_id", "incident_id", "status", "kind", "rule", "severity", "model_id", "detected_at")


@dataclass
class _Partition:
    """Delivery state of one assigned partition (rebuilt from the topic on assignment)."""

    deliver_from: int  # first offset to deliver: the group's commit when assigned
    epoch: int  # a job made under another epoch is stale (the partition was revoked since)
    rebuilt: bool
    committed: int | None  # last offset this runner committed (or found committed)
    next_offset: int  # commit point when nothing is outstanding
    firing: dict[str, dict[str, Any]] = field(default_factory=dict)  # incident_id -> firing alert
    seen: collections.OrderedDict[str, None] = field(default_factory=collections.OrderedDict)
    outstanding: dict[int, int] = field(default_factory=dict)  # offset -> targets not finished


class AlertDeliveryRunner:
    """Consume the alerts topic and deliver its transitions; see the module's guarantees.

    Parameters
    ----------
    bootstrap, topic : str
        Kafka bootstrap servers and the alerts topic.
    alertmanagers : sequence of AlertmanagerTarget
        Every Alertmanager gets every post.
    webhook : WebhookTarget, optional
        Gets every transition.
    group_id : str
        Consumer group of the delivery runners (one per deployment).
    repost_seconds : float
        Interval of Alertmanager re-posts of firing alerts.
    max_attempts, max_queue : int
        Attempts per delivery; deliveries waiting per target before consumption pauses.
    backoff_start : float
        First retry delay, seconds (doubling up to 30 s).
    seen_limit : int
        Transition ids remembered per partition to skip duplicates on the topic.
    client_config : dict, optional
        Extra librdkafka settings (security).
    """

    def __init__(self, bootstrap: str, topic: str, *, alertmanagers: Sequence[AlertmanagerTarget] = (),
                 webhook: WebhookTarget | None = None, group_id: str = "driftline-alerts",
                 repost_seconds: float = 60.0, max_attempts: int = 10, max_queue: int = 1000,
                 backoff_start: float = 0.5, seen_limit: int = 10_000,
                 client_config: dict[str, Any] | None = None) -> None:
        if not alertmanagers and webhook is None:
            raise ValueError("alertmanagers, webhook: need at least one target")
        if repost_seconds <= 0 or max_queue < 1 or seen_limit < 1:
            raise ValueError("repost_seconds must be > 0, max_queue and seen_limit >= 1")
        self.topic, self.repost_seconds, self.max_queue, self.seen_limit = topic, repost_seconds, max_queue, seen_limit
        kw: dict[str, Any] = {"is_stale": self._is_stale, "max_attempts": max_attempts,
                              "backoff_start": backoff_start}
        self._am = [Sender(t, self._done, **kw) for t in alertmanagers]
        self._hook = Sender(webhook, self._done, **kw) if webhook is not None else None
        self.senders = [*self._am, *([self._hook] if self._hook else [])]
        self.config = consumer_config(bootstrap, group_id, client_config)
        self._lock = threading.Lock()
        self._parts: dict[TP, _Partition] = {}
        self._epoch = 0
        self._paused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer: Any = None
        self._next_repost = 0.0
        self._next_commit = 0.0
        self._counts = {"duplicates": 0, "undecodable": 0, "pauses": 0}
        self._error: str | None = None

    # ---- public ---------------------------------------------------------------------------

    def start(self) -> AlertDeliveryRunner:
        if self._thread is not None:
            raise RuntimeError("AlertDeliveryRunner already started")
        for s in self.senders:
            s.start()
        self._consumer = Consumer(self.config)
        self._consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._next_repost = time.monotonic() + self.repost_seconds
        self._thread = threading.Thread(target=self._run, name="driftline-alert-delivery", daemon=True)
        self._thread.start()
        log.info("alert delivery started", extra={"targets": [s.name for s in self.senders],
                                                   "group": self.config["group.id"]})
        return self

    def stop(self, timeout: float = 15.0) -> None:
        """Stop reading, give queued deliveries up to ``timeout / 2`` to finish, commit, close."""
        self._drain_timeout = timeout / 2
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("alert delivery did not stop within %.1fs", timeout)

    def stats(self) -> dict[str, Any]:
        """Per-target outcome counts and queue length, plus the runner's own counters."""
        with self._lock:
            parts = list(self._parts.values())
            out: dict[str, Any] = {
                **self._counts, "assigned": len(parts), "firing": sum(len(p.firing) for p in parts),
                "rebuilding": sum(not p.rebuilt for p in parts), "paused": self._paused,
                "running": self._thread is not None and self._thread.is_alive(), "last_error": self._error,
            }
        out["targets"] = {s.name: s.stats() for s in self.senders}
        return out

    def __enter__(self) -> AlertDeliveryRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- consumer thread ------------------------------------------------------------------

    _drain_timeout = 7.5

    def _run(self) -> None:
        c = self._consumer
        try:
            while not self._stop.is_set():
                self._apply_backpressure()
                for m in c.consume(num_messages=100, timeout=0.2):
                    self._take(m)
                self._repost_due()
                self._commit()
            deadline = time.monotonic() + self._drain_timeout
            for s in self.senders:
                s.wait_idle(max(0.0, deadline - time.monotonic()))
            self._commit(force=True)
        except BaseException as exc:  # surfaced in stats(); the thread must not die silently
            log.exception("alert delivery crashed")
            self._error = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            c.close()  # first: a revoke it triggers still lets deliveries in flight finish
            for s in self.senders:
                s.stop()

    def _take(self, m: Any) -> None:
        err = m.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("alert delivery consumer error: %s", err)
            return
        key, off, raw = (m.topic(), m.partition()), m.offset(), m.value() or b""
        st = self._parts.get(key)
        if st is None:
            return  # revoked while this batch was in flight
        live = off >= st.deliver_from
        if live and not st.rebuilt:
            self._mark_rebuilt(key, st)  # a gap in the offsets jumped past the last replayed one
        alert = _decode(raw)
        duplicate, opened = False, None
        with self._lock:
            if live:
                st.next_offset = off + 1
            if alert is None:
                self._counts["undecodable"] += 1
            else:
                duplicate, opened = self._apply(st, alert)
        if alert is None:
            log.error("undecodable alert at %s[%d]@%d skipped", key[0], key[1], off)
        if not live:
            if off >= st.deliver_from - 1:
                self._mark_rebuilt(key, st)
            return
        if duplicate:
            with self._lock:
                self._counts["duplicates"] += 1
        elif alert is not None:
            self._deliver(key, off, st, alert, opened, raw)

    def _apply(self, st: _Partition, alert: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
        """Record a transition in the partition's state: ``(duplicate, the incident's firing alert
        before it)``: the one a resolve ends, or the one an escalation replaces.

        A transition already seen changes nothing: a repeated firing must not bring back an
        incident that has resolved since.
        """
        aid = alert["alert_id"]
        if aid in st.seen:
            st.seen.move_to_end(aid)
            return True, None
        st.seen[aid] = None
        while len(st.seen) > self.seen_limit:
            st.seen.popitem(last=False)
        if alert["status"] == "firing":
            before = st.firing.get(alert["incident_id"])
            st.firing[alert["incident_id"]] = alert
            return False, before
        return False, st.firing.pop(alert["incident_id"], None)

    def _deliver(self, key: TP, off: int, st: _Partition, alert: dict[str, Any],
                 opened: dict[str, Any] | None, raw: bytes) -> None:
        what = f"{alert['status']} {alert['alert_id']}"
        pairs: list[tuple[dict[str, Any], dict[str, Any] | None]]
        if alert["status"] != "firing":
            # A resolve carries the labels of its firing post, or Alertmanager would not match them.
            pairs = [(opened or alert, alert)]
        elif opened is not None and alert_labels(opened) != alert_labels(alert):
            # An escalation: other labels are another Alertmanager alert. The warning one ends as
            # the critical one starts, so the incident is never shown twice or not at all.
            pairs = [(opened, alert), (alert, None)]
        else:
            pairs = [(alert, None)]
        jobs = [(s, Job(pairs, key, off, st.epoch, what)) for s in self._am]
        if self._hook is not None:
            jobs.append((self._hook, Job((raw, alert["alert_id"]), key, off, st.epoch, what)))
        with self._lock:
            st.outstanding[off] = len(jobs)
        for sender, job in jobs:
            sender.put(job)

    def _mark_rebuilt(self, key: TP, st: _Partition) -> None:
        st.rebuilt = True
        with self._lock:
            firing = list(st.firing.values())
        log.info("alert delivery: partition %d rebuilt, %d alerts firing", key[1], len(firing))
        self._repost(firing)

    def _repost_due(self) -> None:
        now = time.monotonic()
        if now < self._next_repost:
            return
        self._next_repost = now + self.repost_seconds
        with self._lock:
            firing = [a for p in self._parts.values() if p.rebuilt for a in p.firing.values()]
        self._repost(firing)

    def _repost(self, firing: list[dict[str, Any]]) -> None:
        if not firing:
            return
        chunks = [firing[i:i + REPOST_CHUNK] for i in range(0, len(firing), REPOST_CHUNK)]
        for s in self._am:
            if s.backlog() >= self.max_queue:
                s.count("skipped", len(chunks))  # the lease covers a skipped round
                continue
            for chunk in chunks:
                s.put(Job([(a, None) for a in chunk], what=f"re-post of {len(chunk)} firing"))

    def _apply_backpressure(self) -> None:
        backlog = max(s.backlog() for s in self.senders)
        if not self._paused and backlog >= self.max_queue:
            self._pause(True)
        elif self._paused and backlog <= self.max_queue // 2:
            self._pause(False)

    def _pause(self, pause: bool) -> None:
        parts = [TopicPartition(t, p) for t, p in self._parts]
        if parts:
            (self._consumer.pause if pause else self._consumer.resume)(parts)
        with self._lock:
            self._paused = pause
            self._counts["pauses"] += 1 if pause else 0
        log.info("alert delivery %s %d partitions", "paused" if pause else "resumed", len(parts))

    def _commit(self, force: bool = False, only: set[TP] | None = None) -> None:
        now = time.monotonic()
        if not force and now < self._next_commit:
            return
        self._next_commit = now + 0.5
        todo: list[TopicPartition] = []
        with self._lock:
            for (topic, part), st in self._parts.items():
                if only is not None and (topic, part) not in only:
                    continue
                point = min(st.outstanding) if st.outstanding else st.next_offset
                if point != st.committed:
                    todo.append(TopicPartition(topic, part, point))
        if not todo:
            return
        try:
            self._consumer.commit(offsets=todo, asynchronous=False)
        except Exception as exc:  # e.g. mid-rebalance: the next round commits again
            log.warning("alert delivery commit failed: %s", exc)
            return
        with self._lock:
            for tp in todo:
                owned = self._parts.get((tp.topic, tp.partition))
                if owned is not None:
                    owned.committed = tp.offset

    # ---- sender callbacks (sender threads) ----------------------------------------------------

    def _is_stale(self, job: Job) -> bool:
        if job.source is None:
            return False
        with self._lock:
            st = self._parts.get(job.source)
            return st is None or st.epoch != job.epoch

    def _done(self, job: Job) -> None:
        if job.source is None or job.offset is None:
            return
        with self._lock:
            st = self._parts.get(job.source)
            if st is None or st.epoch != job.epoch:
                return
            left = st.outstanding.get(job.offset, 0) - 1
            if left > 0:
                st.outstanding[job.offset] = left
            else:
                st.outstanding.pop(job.offset, None)

    # ---- rebalance callbacks (consumer thread) ------------------------------------------------

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        committed = consumer.committed(partitions, timeout=10)
        for tp in committed:
            key = (tp.topic, tp.partition)
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)
            # The commit is trusted over the high watermark: Tansu 0.6 reports the latter as the
            # last batch's base offset + 1, short of the end when that batch held several records.
            start = tp.offset if tp.offset >= 0 else high
            self._epoch += 1
            st = _Partition(deliver_from=start, epoch=self._epoch, rebuilt=low >= start,
                            committed=tp.offset if tp.offset == start else None, next_offset=start)
            with self._lock:
                self._parts[key] = st
            tp.offset = OFFSET_BEGINNING
        log.info("alert delivery assigned %s", [(k[1], p.deliver_from) for k, p in self._parts.items()])
        consumer.assign(committed)
        if self._paused:
            consumer.pause(committed)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        # A moment for deliveries in flight, so the next owner repeats as few as possible.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._lock:
                if not any(self._parts[k].outstanding for k in keys if k in self._parts):
                    break
            time.sleep(0.05)
        self._commit(force=True, only=keys)
        with self._lock:
            for k in keys:
                self._parts.pop(k, None)
        log.info("alert delivery revoked %s", sorted(k[1] for k in keys))
        try:
            consumer.unassign()
        except Exception as exc:  # the consumer is closing
            log.debug("unassign on revoke: %s", exc)


def _decode(raw: bytes) -> dict[str, Any] | None:
    try:
        alert = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(alert, dict) or any(k not in alert for k in REQUIRED):
        return None
    if alert["status"] not in ("firing", "resolved"):
        return None
    return alert
