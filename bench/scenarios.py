"""The scenarios, latency runs and baselines. Each returns a result dict (see bench/report.py)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import (
    ROOT,
    Progress,
    WorkerProc,
    counters,
    cpu_seconds,
    cpu_seconds_by_thread,
    create_all_topics,
    free_port,
    labelled_events,
    messages_in,
    new_prefix,
    pct,
    peak_rss_mb,
    produce_events,
    rss_mb,
    wait_until,
)

QUIX_VENV = ROOT / "bench" / ".venv-quix"
QUIX_PY = QUIX_VENV / "bin" / "python"


class Bench:
    def __init__(self, bootstrap: str, tmp: Path, size: int, progress: Progress, *, smoke: bool,
                 partitions: int = 8, profile: tuple[str, ...] = (), timeout: float = 900.0,
                 broker_pid: int | None = None) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.size = size
        self.p = progress
        self.smoke = smoke
        self.partitions = partitions
        self.profile = profile  # scenario tags whose workers py-spy records ("s1", "s2", "s3")
        self.timeout = timeout
        self.broker_pid = broker_pid
        self._data: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        self.single_prefix: str | None = None  # scenario 2's topics, reused by the baselines
        self.profile_results: dict[str, dict[str, Any]] = {}  # "s1", "s3-w0", ... -> summary

    # ---- data ----------------------------------------------------------------------------------
    def data(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        if self._data is None:
            from driftline.streams.simulate import generate

            t0 = time.monotonic()
            self.p.update(f"  generating {self.size:,} predictions (3 models) ...", force=True)
            # every prediction labelled: input events = 2 x size, joins = size
            self._data = generate(self.size, seed=11, missing_label_rate=0.0)
            self.p.update(f"  generated {len(self._data[0]):,} predictions + {len(self._data[1]):,} labels "
                          f"in {time.monotonic() - t0:.1f}s", force=True)
        return self._data

    def _fill(self, tag: str, single_event: bool, with_labels: bool = True,
              preds: list[dict[str, Any]] | None = None) -> tuple[str, dict[str, Any]]:
        prefix = new_prefix(tag)
        create_all_topics(self.bootstrap, prefix, self.partitions)
        if preds is None:
            preds, labels = self.data()
        else:
            labels = []
        total = len(preds) + (len(labels) if with_labels else 0)
        info = produce_events(self.bootstrap, prefix, labelled_events(preds, labels, with_labels), total,
                              single_event=single_event, progress=self.p, what=tag)
        # Kafka messages = what the producer had delivered (Tansu's high watermarks under-count
        # single-event topics, so they are not used)
        info["messages"] = info["kafka_messages"]
        info["predictions"] = len(preds)
        info["labels"] = len(labels) if with_labels else 0
        return prefix, info

    # ---- worker measurement ----------------------------------------------------------------------
    def _live_topics(self, tag: str, single_event: bool) -> tuple[str, dict[str, Any], Callable[[], None]]:
        """Empty topics and the function that fills them (called once the workers are waiting)."""
        prefix = new_prefix(tag)
        create_all_topics(self.bootstrap, prefix, self.partitions)
        preds, labels = self.data()
        fill: dict[str, Any] = {"predictions": len(preds), "labels": len(labels), "messages": None}

        def produce() -> None:
            info = produce_events(self.bootstrap, prefix, labelled_events(preds, labels), len(preds) + len(labels),
                                  single_event=single_event, progress=self.p, what=tag)
            fill.update(seconds=info["seconds"], events=info["events"], messages=info["kafka_messages"])

        return prefix, fill, produce

    def _run_workers(self, prefix: str, fill: dict[str, Any], n_workers: int, tag: str,
                     live: Callable[[], None] | None = None) -> dict[str, Any]:
        """Time ``n_workers`` workers through the input: a backlog already in the topics, or with
        ``live``, the load produced while they run (with the ClickHouse sink, end to end)."""
        app_id = f"bench-{tag}-{uuid.uuid4().hex[:6]}"
        workers = [WorkerProc(self.bootstrap, prefix, self.tmp, app_id=app_id, partitions=self.partitions,
                              name=f"{tag}-w{i}", sink=live is not None) for i in range(n_workers)]
        expected_joins = fill["labels"]
        events = fill["predictions"] + fill["labels"]
        spies: list[tuple[str, subprocess.Popen[bytes]]] = []
        producer: threading.Thread | None = None
        try:
            for w in workers:
                w.start()
            healths: list[dict[str, Any] | None] = [None] * n_workers

            def poll() -> list[dict[str, Any] | None]:
                for i, w in enumerate(workers):
                    w.check()
                    healths[i] = w.health(timeout=5) or healths[i]
                return healths

            t_start = time.monotonic()
            # The clock starts at the last poll that saw no message yet: counters move when a batch
            # is applied, so a small input can be done by the first poll that sees anything.
            before: list[tuple[float, list[float], float]] = []
            threads0: list[dict[str, float]] = []

            stages_before: list[dict[str, float]] = [{}]

            def snapshot() -> None:
                before[:] = [(time.monotonic(), [cpu_seconds(w.pid) for w in workers], self._broker_cpu())]
                stages_before[0] = stage_cpu(healths)  # the last poll before any message was applied
                threads0[:] = [cpu_seconds_by_thread(w.pid) for w in workers]

            def started() -> bool:
                snapshot()
                return sum(messages_in(h) for h in poll()) > 0

            def waiting() -> bool:  # every join partition assigned, sinks up: the fleet may send
                hs = poll()
                ready = sum(len((h or {}).get("partitions", [])) for h in hs) >= self.partitions
                return ready and all(h is not None and (live is None or h.get("sink") is not None) for h in hs)

            on_tick = lambda: self.p.update(f"  {tag}: waiting for the group join ({time.monotonic() - t_start:.0f}s)")  # noqa: E731
            if live is None:
                wait_until(started, 180, f"{tag}: first message", interval=0.02, on_tick=on_tick)
            else:
                wait_until(waiting, 180, f"{tag}: workers waiting", interval=0.1, on_tick=on_tick)
                time.sleep(1.0)  # idle CPU settles; the measurement starts with the first event sent
                poll()
                snapshot()
                producer = threading.Thread(target=live, name="bench-producer", daemon=True)
                producer.start()
            t0, cpu0, broker0 = before[0]
            stages0 = stages_before[0]
            startup = t0 - t_start
            # a group that still rebalances once the clock runs moves partitions (and replays
            # their changelogs) inside the measurement
            assigned_at_start = [sorted((h or {}).get("partitions", [])) for h in healths]
            if tag in self.profile:
                for i, w in enumerate(workers):
                    name = tag if n_workers == 1 else f"{tag}-w{i}"
                    spy = self._start_profile(w.pid, name)
                    if spy is not None:
                        spies.append((name, spy))

            def done() -> bool:
                hs = poll()
                m = sum(messages_in(h) for h in hs)
                j = sum(int(counters(h).get("joins", 0)) for h in hs)
                rows = sum(int(((h or {}).get("sink") or {}).get("rows_written", {}).get("outcomes", 0)) for h in hs)
                el = time.monotonic() - t0
                expected = fill["messages"]  # known once the producer has delivered everything
                self.p.update(f"  {tag}: {m:,}/{expected or '?'} messages, {j:,}/{expected_joins:,} joins, "
                              + (f"{rows:,} outcome rows, " if live is not None else "") + f"{el:.1f}s")
                return (expected is not None and m >= expected and j >= expected_joins
                        and (live is None or rows >= expected_joins))

            wait_until(done, self.timeout, f"{tag}: all input processed", interval=0.05)
            t1 = time.monotonic()
            cpu1 = [cpu_seconds(w.pid) for w in workers]
            threads1 = [cpu_seconds_by_thread(w.pid) for w in workers]
            broker_cpu = self._broker_cpu() - broker0
            self._stop_profiles(spies)
            elapsed = t1 - t0
            cpu = sum(b - a for a, b in zip(cpu0, cpu1, strict=True))
            stages1 = stage_cpu(poll())
            thread_cpu = [thread_deltas(a, b) for a, b in zip(threads0, threads1, strict=True)]
            by_stage = {k: round((v - stages0.get(k, 0.0)) * 1e6 / events, 2) for k, v in stages1.items()} if events else {}
            res = {
                "mode": "live" if live is not None else "backlog",
                "events_per_cpu_s": events / cpu if cpu > 0 else None,
                "events": events, "kafka_messages": fill["messages"], "joins": expected_joins,
                "elapsed_s": round(elapsed, 3), "events_per_s": events / elapsed if elapsed > 0 else None,
                "cpu_us_per_event": cpu * 1e6 / events if events else None,
                "cpu_s": round(cpu, 2), "cpu_cores_used": round(cpu / elapsed, 2) if elapsed > 0 else None,
                "cpu_us_per_event_each": [round((b - a) * 1e6 * n_workers / events, 1) if events else None
                                          for a, b in zip(cpu0, cpu1, strict=True)],
                # the embedded broker shares the machine's cores with the workers
                "broker_cores_used": round(broker_cpu / elapsed, 2) if elapsed > 0 and self.broker_pid else None,
                # where a worker's CPU went, by thread (the main thread runs faust and our code)
                "cpu_s_by_thread": [{k: round(v, 2) for k, v in d.items() if v >= 0.01} for d in thread_cpu],
                # the same, per input event and summed over the workers: the CPU outside the main
                # thread (the sink's thread and ClickHouse's pool, librdkafka) shows here
                "cpu_us_per_event_by_thread": per_event_by_thread(thread_cpu, events),
                "peak_rss_mb": max(peak_rss_mb(w.pid) for w in workers),
                "peak_rss_mb_each": [round(peak_rss_mb(w.pid), 1) for w in workers],
                "startup_to_first_message_s": round(startup, 2),
                "messages_each": [messages_in(h) for h in healths],
                "partitions_each": {"at_start": assigned_at_start,
                                    "at_end": [sorted((h or {}).get("partitions", [])) for h in healths]},
                "produce": {k: fill[k] for k in ("seconds", "events") if k in fill},
                "counters": [counters(h) for h in healths],
                # the main thread's CPU per event by stage of the batches (``driftline.streams.stageclock``)
                "cpu_us_per_event_by_stage": by_stage,
            }
            self.p.done(f"  {tag}: {events:,} events in {elapsed:.2f}s = {res['events_per_s']:,.0f} events/s, "
                        f"{res['cpu_us_per_event']:.1f} CPU-us/event = {res['events_per_cpu_s'] or 0:,.0f} events per "
                        f"CPU-second, peak RSS {res['peak_rss_mb']:.0f} MB")
            if by_stage:
                self.p.log("    CPU-us per event by stage: " + ", ".join(f"{k} {v:.2f}" for k, v in by_stage.items()))
            return res
        finally:
            self._stop_profiles(spies)
            if producer is not None:
                producer.join(timeout=120)
            for w in workers:
                w.stop()

    def _broker_cpu(self) -> float:
        if self.broker_pid is None:
            return 0.0
        try:
            return cpu_seconds(self.broker_pid)
        except OSError:
            return 0.0

    # ---- profile (py-spy) --------------------------------------------------------------------------
    def _start_profile(self, pid: int, name: str) -> subprocess.Popen[bytes] | None:
        exe = Path(sys.executable).parent / "py-spy"
        if not exe.exists():
            self.p.log("  (py-spy not installed in this venv: no profile; pip install py-spy)")
            return None
        return subprocess.Popen([str(exe), "record", "--pid", str(pid), "--format", "raw", "--nonblocking",
                                 "--rate", "200", "-o", str(profile_path(name))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def _stop_profiles(self, spies: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
        for _, spy in spies:
            spy.send_signal(signal.SIGINT)
        for name, spy in spies:
            try:
                spy.wait(timeout=30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait()
            with contextlib.suppress(OSError):
                self.profile_results[name] = summarize_profile(profile_path(name))
        spies.clear()

    # ---- scenarios ------------------------------------------------------------------------------------
    def scenario1(self) -> dict[str, Any]:
        prefix, fill = self._fill("s1", single_event=False)
        return self._run_workers(prefix, fill, 1, "s1")

    def scenario2(self) -> dict[str, Any]:
        prefix, fill = self._single_topics()
        return self._run_workers(prefix, fill, 1, "s2")

    def _single_topics(self) -> tuple[str, dict[str, Any]]:
        if self.single_prefix is None:
            self.single_prefix, self.single_fill = self._fill("s2", single_event=True)
        return self.single_prefix, self.single_fill

    def scenario1_live(self) -> dict[str, Any]:
        """Scenario 1's envelopes sent while the worker runs, with its ClickHouse sink."""
        prefix, fill, produce = self._live_topics("s1live", single_event=False)
        return self._run_workers(prefix, fill, 1, "s1live", live=produce)

    def scenario2_live(self) -> dict[str, Any]:
        """Scenario 2's single-event messages sent while the worker runs, with its sink."""
        prefix, fill, produce = self._live_topics("s2live", single_event=True)
        return self._run_workers(prefix, fill, 1, "s2live", live=produce)

    def scenario3(self) -> dict[str, Any]:
        prefix, fill = self._fill("s3", single_event=False)
        return self._run_workers(prefix, fill, 2, "s3")

    def scenario4(self, pending: int, store: str = "memory://") -> dict[str, Any]:
        from driftline.streams.simulate import generate

        self.p.update(f"  generating {pending:,} predictions for the pending test ...", force=True)
        preds, labels = generate(pending, seed=44, missing_label_rate=0.0)
        prefix, fill = self._fill("s4", single_event=False, preds=preds)
        w = WorkerProc(self.bootstrap, prefix, self.tmp, app_id=f"bench-s4-{uuid.uuid4().hex[:6]}",
                       partitions=self.partitions, name="s4-w0", extra_env={"DRIFTLINE_STORE": store})
        try:
            w.start()
            t_start = time.monotonic()

            def all_pending() -> bool:
                w.check()
                h = w.health(timeout=5)
                n = int((h or {}).get("pending_predictions", 0))
                self.p.update(f"  s4: {n:,}/{pending:,} predictions pending ({time.monotonic() - t_start:.0f}s)")
                return n >= pending

            wait_until(all_pending, self.timeout, "s4: all predictions pending", interval=0.2)
            time.sleep(1.0)
            rss_pending, hwm_pending = rss_mb(w.pid), peak_rss_mb(w.pid)
            self.p.done(f"  s4: {pending:,} pending: RSS {rss_pending:.0f} MB (VmHWM {hwm_pending:.0f} MB)")
            cpu0 = cpu_seconds(w.pid)
            t_prod = time.monotonic()
            first: dict[str, float] = {}
            import threading

            def producer() -> None:
                produce_events(self.bootstrap, prefix, (("label", lab) for lab in labels), len(labels),
                               single_event=False, progress=Progress(False), what="s4 labels")
                first["produced"] = time.monotonic()

            th = threading.Thread(target=producer, daemon=True)
            th.start()

            def joined() -> bool:
                w.check()
                h = w.health(timeout=5)
                j = int(counters(h).get("joins", 0))
                if j and "t0" not in first:
                    first["t0"] = time.monotonic()
                self.p.update(f"  s4: {j:,}/{len(labels):,} joins ({time.monotonic() - t_prod:.1f}s)")
                return j >= len(labels)

            wait_until(joined, self.timeout, "s4: all joins", interval=0.05)
            t1 = time.monotonic()
            th.join(60)
            cpu = cpu_seconds(w.pid) - cpu0
            t0 = first.get("t0", t_prod)
            res = {
                "pending": pending, "store": store, "rss_mb_all_pending": rss_pending, "peak_rss_mb_all_pending": hwm_pending,
                "peak_rss_mb": peak_rss_mb(w.pid), "labels": len(labels),
                "join_elapsed_s": round(t1 - t0, 3), "joins_per_s": len(labels) / (t1 - t0),
                "from_produce_start_s": round(t1 - t_prod, 3),
                "labels_produce_s": round(first.get("produced", t1) - t_prod, 3),
                "cpu_us_per_label": cpu * 1e6 / len(labels),
            }
            self.p.done(f"  s4: {len(labels):,} joins in {t1 - t0:.2f}s = {res['joins_per_s']:,.0f}/s "
                        f"(labels produced meanwhile in {res['labels_produce_s']:.1f}s)")
            return res
        finally:
            w.stop()

    def scenario5(self) -> dict[str, Any]:
        from confluent_kafka import Producer

        from bench.outcomes import outcome_chunks
        from driftline.schemas.codec import encode_envelope

        preds, labels = self.data()
        prefix = new_prefix("s5")
        create_all_topics(self.bootstrap, prefix, self.partitions)
        topic = prefix + "outcomes"
        prod = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 20, "partitioner": "murmur2_random",
                         "queue.buffering.max.messages": 1_000_000, "queue.buffering.max.kbytes": 1_048_576})
        t0 = time.monotonic()
        n = 0
        for part, outcomes in outcome_chunks(preds, labels, self.partitions):
            envelope = encode_envelope(outcomes)
            while True:
                try:
                    prod.produce(topic, envelope, partition=part)
                    break
                except BufferError:
                    prod.poll(0.05)
            n += len(outcomes)
            prod.poll(0)
            self.p.update(f"  producing s5 outcomes: {n:,}/{len(labels):,}")
        prod.flush(120)
        self.p.update(f"  produced {n:,} outcomes in {time.monotonic() - t0:.1f}s", force=True)
        dsn = f"chdb://{(self.tmp / 'ch-s5').resolve()}"
        proc = subprocess.Popen([sys.executable, "-m", "bench.sink_proc", self.bootstrap, topic, dsn, str(n)],
                                cwd=str(ROOT), stdout=subprocess.PIPE, stderr=open(self.tmp / "s5-sink.log", "wb"),  # noqa: SIM115
                                text=True)
        result: dict[str, Any] | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if "result" in d:
                    result = d["result"]
                else:
                    self.p.update(f"  s5: {d.get('rows', 0):,}/{n:,} rows written")
        proc.wait(timeout=120)
        if result is None:
            raise RuntimeError("sink process gave no result:\n" + (self.tmp / "s5-sink.log").read_text()[-3000:])
        el = result["elapsed_s"]
        res = {"rows": result["rows"], "elapsed_s": round(el, 3), "rows_per_s": n / el if el > 0 else None,
               "cpu_us_per_row": result["cpu_s"] * 1e6 / n, "peak_rss_mb": result["peak_rss_mb"],
               "inserts": result.get("stats", {}).get("inserts")}
        self.p.done(f"  s5: {n:,} outcome rows into chdb in {el:.2f}s = {res['rows_per_s']:,.0f} rows/s")
        return res

    # ---- latencies ----------------------------------------------------------------------------------------
    def latency(self, rate: float, duration: float, drift_at: float) -> dict[str, Any]:
        from confluent_kafka import Consumer

        from driftline.streams.simulate import run_simulation

        lateness, window = 1.0, 5.0
        prefix = new_prefix("lat")
        create_all_topics(self.bootstrap, prefix, self.partitions)
        w = WorkerProc(self.bootstrap, prefix, self.tmp, app_id=f"bench-lat-{uuid.uuid4().hex[:6]}",
                       partitions=self.partitions, name="lat-w0",
                       extra_env={"DRIFTLINE_WINDOW_SECONDS": str(window),
                                  "DRIFTLINE_ALLOWED_LATENESS": str(lateness)})
        try:
            w.start()
            t_start = time.monotonic()

            def ready() -> bool:
                w.check()
                h = w.health()
                self.p.update(f"  latency: waiting for the worker ({time.monotonic() - t_start:.0f}s)")
                return bool(h and h.get("partitions") and not h.get("rebalancing"))

            wait_until(ready, 180, "latency worker ready", interval=0.2)
            self.p.update(f"  latency: realtime simulation {rate:.0f}/s for {duration:.0f}s, "
                          f"drift at {drift_at:.0f}s ...", force=True)
            sim = run_simulation(self.bootstrap, prefix, rate, duration, seed=5, drift_at=drift_at, realtime=True,
                                 progress=False, label_delay=0.5)
            sim_end = sim["start_ts"] + duration
            time.sleep(window + lateness + 3.0)  # let the last traffic-closed windows and alerts out
        finally:
            w.stop()
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-lat-read-" + uuid.uuid4().hex[:6],
                      "auto.offset.reset": "earliest", "enable.auto.commit": False,
                      "session.timeout.ms": 6000})
        topics = {prefix + k: k for k in ("metrics", "alerts", "drift_events")}
        c.subscribe(list(topics))
        msgs: dict[str, list[dict[str, Any]]] = {k: [] for k in topics.values()}
        deadline = time.monotonic() + 60
        quiet_since = time.monotonic()
        got = 0
        # read until 3 s without a message (after the group join)
        while time.monotonic() < deadline and (not got or time.monotonic() - quiet_since < 3.0):
            for m in c.consume(1000, timeout=0.5):
                if m.error() is None:
                    msgs[topics[m.topic()]].append(orjson.loads(m.value()))
                    got += 1
                    quiet_since = time.monotonic()
        c.close()
        # (i) window close -> metrics: each window's first message (revisions count partials, so
        # the first need not be 0), for windows closed by traffic (the watermark), not by the
        # end-of-run idle close
        first: dict[tuple[Any, ...], dict[str, Any]] = {}
        for m in msgs["metrics"]:
            k = (m["model_id"], m["model_version"], m["segment"], m["window_start"])
            if k not in first or m["emitted_at"] < first[k]["emitted_at"]:
                first[k] = m
        closes = [m["emitted_at"] - (m["window_end"] + lateness) for m in first.values()
                  if m["window_end"] + lateness <= sim_end - 0.5]
        # (ii) drift -> alert. A drift event's ``detected_at`` is the event time of the outcome that
        # triggered it; the detectors see outcomes in event-time order, once the allowed lateness
        # has passed them (docs/event-time.md), so, like (i), the pipeline's latency is measured
        # from that point; the raw figure (event -> alert, lateness included) is kept beside it.
        drift_at_ts = {d["event_id"]: d["detected_at"] for d in msgs["drift_events"]}
        alerts, raw_alerts = [], []
        for a in msgs["alerts"]:
            if a.get("status") != "firing":
                continue
            ev = a.get("evidence") or {}
            det = drift_at_ts.get(ev.get("drift_event_id"), a.get("detected_at") if ev.get("drift_event_id") else None)
            if det is not None:
                alerts.append(a["emitted_at"] - (det + lateness))
                raw_alerts.append(a["emitted_at"] - det)
        res = {
            "rate": rate, "duration_s": duration, "drift_at_s": drift_at, "window_s": window,
            "allowed_lateness_s": lateness, "sim": {k: sim[k] for k in ("predictions", "labels", "elapsed_s")},
            "metrics_messages": len(msgs["metrics"]), "windows_measured": len(closes),
            "window_close_p50_s": pct(closes, 50), "window_close_p99_s": pct(closes, 99),
            "window_close_max_s": max(closes) if closes else None,
            "drift_events": len(msgs["drift_events"]), "drift_alerts_measured": len(alerts),
            "drift_alert_p50_s": pct(alerts, 50), "drift_alert_p99_s": pct(alerts, 99),
            "drift_alert_max_s": max(alerts) if alerts else None,
            "drift_event_to_alert_p99_s": pct(raw_alerts, 99),
            "alert_rules": dict(Counter(a.get("rule") for a in msgs["alerts"])),
        }
        self.p.done(f"  latency: window close->metrics p99 {_fmt_s(res['window_close_p99_s'])} over {len(closes)} "
                    f"windows; drift->alert p99 {_fmt_s(res['drift_alert_p99_s'])} over {len(alerts)} alerts")
        return res

    def sdk(self, calls: int) -> dict[str, Any]:
        from driftline.streams.sdk import DriftlineProducer

        out: dict[str, Any] = {"calls": calls}
        prefix = new_prefix("sdk")
        create_all_topics(self.bootstrap, prefix, self.partitions)
        closed_port = free_port()
        for mode, bootstrap in (("broker_up", self.bootstrap), ("broker_down", f"127.0.0.1:{closed_port}")):
            prod = DriftlineProducer(bootstrap, topic_prefix=prefix, num_partitions=self.partitions,
                                     max_buffered_events=max(100_000, calls // 2) if mode == "broker_down"
                                     else calls + 1000,
                                     client_config={"message.timeout.ms": 5000} if mode == "broker_down" else None)
            lat = _time_log_prediction(prod, calls, self.p, mode)
            st = prod.stats()
            t = time.monotonic()
            prod.close(timeout=1.0 if mode == "broker_down" else 30.0)
            close_s = time.monotonic() - t
            lat.sort()
            out[mode] = {
                "median_us": lat[len(lat) // 2] / 1000, "p99_us": lat[int(len(lat) * 0.99)] / 1000,
                "p999_us": lat[int(len(lat) * 0.999)] / 1000, "max_us": lat[-1] / 1000,
                "mean_us": statistics.fmean(lat) / 1000, "dropped": st["dropped_events"],
                "close_s": round(close_s, 2),
            }
            self.p.done(f"  sdk {mode}: median {out[mode]['median_us']:.2f} us, p99 {out[mode]['p99_us']:.2f} us, "
                        f"max {out[mode]['max_us']:.0f} us, dropped {st['dropped_events']:,}")
        return out

    # ---- baselines ---------------------------------------------------------------------------------------------
    def quix(self, allow_install: bool, live: bool = False) -> dict[str, Any]:
        """Baseline (a) over scenario 2's messages: a backlog, or (``live``) sent while it runs."""
        if not QUIX_PY.exists():
            if not allow_install:
                return {"skipped": "bench/.venv-quix not present (created by a full run)"}
            self.p.log("  creating bench/.venv-quix (python -m venv + pip install quixstreams) ...")
            subprocess.run([sys.executable, "-m", "venv", str(QUIX_VENV)], check=True)
            r = subprocess.run([str(QUIX_PY), "-m", "pip", "install", "-q", "quixstreams"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                return {"skipped": "pip install quixstreams failed: " + r.stderr[-500:]}
        produce: Callable[[], None] | None = None
        if live:
            prefix, fill, produce = self._live_topics("quixlive", single_event=True)
            expected = len(self.data()[0]) + len(self.data()[1])  # one message per event
        else:
            prefix, fill = self._single_topics()
            expected = fill["messages"]
        events = fill["predictions"] + fill["labels"]
        cmd = [str(QUIX_PY), str(ROOT / "bench" / "quix_baseline.py"), self.bootstrap,
               f"bench-quix-{uuid.uuid4().hex[:6]}", str(expected), prefix + "predictions", prefix + "labels"]
        log = open(self.tmp / "quix.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=str(self.tmp))
        if produce is not None:
            time.sleep(8.0)  # its group join (session timeout 6 s); it measures from its first message
            threading.Thread(target=produce, name="bench-producer", daemon=True).start()
        result = None
        assert proc.stdout is not None
        t = time.monotonic()
        for line in proc.stdout:
            with contextlib.suppress(ValueError):
                d = json.loads(line)
                if "result" in d:
                    result = d["result"]
                else:
                    self.p.update(f"  quix: {d['count']:,}/{expected:,} messages ({time.monotonic() - t:.0f}s)")
        proc.wait(timeout=60)
        log.close()
        if result is None or result["count"] < expected:
            return {"error": f"quix baseline failed: {result}", "log": (self.tmp / "quix.log").read_text()[-2000:]}
        el = result["elapsed_s"]
        res = {"mode": "live" if live else "backlog", "events": events, "elapsed_s": round(el, 3),
               "events_per_s": events / el, "cpu_us_per_event": result["cpu_s"] * 1e6 / events,
               "events_per_cpu_s": events / result["cpu_s"] if result["cpu_s"] > 0 else None,
               "peak_rss_mb": result["peak_rss_mb"]}
        self.p.done(f"  quix ({res['mode']}): {events:,} events in {el:.2f}s = {res['events_per_s']:,.0f} events/s, "
                    f"{res['events_per_cpu_s'] or 0:,.0f} events per CPU-second")
        return res

    def naive_faust(self, time_box: float) -> dict[str, Any]:
        prefix, fill = self._single_topics()
        expected = fill["messages"]
        port = free_port()
        env = {**os.environ, "NAIVE_BOOTSTRAP": self.bootstrap, "NAIVE_PREDICTIONS": prefix + "predictions",
               "NAIVE_LABELS": prefix + "labels", "NAIVE_APP_ID": f"bench-naive-{uuid.uuid4().hex[:6]}",
               "NAIVE_PORT": str(port), "NAIVE_DATADIR": str(self.tmp / "naive-state"),
               "NAIVE_PARTITIONS": str(self.partitions),
               "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        log = open(self.tmp / "naive.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "naive_faust.py")], env=env, stdout=log,
                                stderr=subprocess.STDOUT, cwd=str(self.tmp))
        fake = WorkerProc.__new__(WorkerProc)
        fake.url, fake.proc, fake.name, fake.log_path = f"http://127.0.0.1:{port}", proc, "naive", self.tmp / "naive.log"
        try:
            t_start = time.monotonic()
            last: dict[str, Any] = {}

            def first() -> bool:
                fake.check()
                h = fake.health(timeout=5)
                last["h"] = h
                self.p.update(f"  naive faust: waiting for the group join ({time.monotonic() - t_start:.0f}s)")
                return messages_in(h) > 0

            wait_until(first, 180, "naive faust: first message", interval=0.02)
            t0, cpu0 = time.monotonic(), cpu_seconds(proc.pid)
            m0 = messages_in(last["h"])
            boxed = False
            while True:
                fake.check()
                h = fake.health(timeout=10) or last["h"]
                last["h"] = h
                m = messages_in(h)
                el = time.monotonic() - t0
                self.p.update(f"  naive faust: {m:,}/{expected:,} messages, {el:.0f}s (time box {time_box:.0f}s)")
                if m >= expected and counters(h).get("joins", 0) >= fill["labels"]:
                    break
                if el >= time_box:
                    boxed = True
                    break
                time.sleep(0.1)
            t1, cpu1 = time.monotonic(), cpu_seconds(proc.pid)
            done = m - m0  # single-event messages: one message = one event
            el = t1 - t0
            res = {"events": done, "of_events": expected, "time_boxed": boxed, "elapsed_s": round(el, 3),
                   "events_per_s": done / el if el > 0 else None,
                   "cpu_us_per_event": (cpu1 - cpu0) * 1e6 / done if done else None,
                   "peak_rss_mb": peak_rss_mb(proc.pid), "joins": counters(last["h"]).get("joins", 0)}
            self.p.done(f"  naive faust: {done:,} events in {el:.1f}s = {res['events_per_s']:,.0f} events/s"
                        + (" (time-boxed)" if boxed else ""))
            return res
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()


def _time_log_prediction(prod: Any, calls: int, progress: Progress, mode: str) -> list[int]:
    from time import perf_counter_ns

    ids = [uuid.UUID(int=i).hex for i in range(calls)]
    feats = {"amount": 12.5, "merchant_category": "grocery", "country": "DE", "hour": 13, "is_new_device": False}
    segs = {"country": "DE", "channel": "web"}
    pred = {"label": 1, "score": 0.93}
    lat = [0] * calls
    log = prod.log_prediction
    for i in range(calls):
        t = perf_counter_ns()
        log(ids[i], "fraud", pred, model_version="v1", features=feats, latency_ms=21.5, segments=segs)
        lat[i] = perf_counter_ns() - t
        if not i & 0xFFFF:
            progress.update(f"  sdk {mode}: {i:,}/{calls:,} calls")
    return lat


def thread_deltas(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """One worker's CPU seconds per thread name between two readings, largest first."""
    return dict(sorted(((k, v - before.get(k, 0.0)) for k, v in after.items()), key=lambda kv: -kv[1]))


def per_event_by_thread(thread_cpu: list[dict[str, float]], events: int) -> dict[str, float]:
    """CPU-us per event of each thread name, summed over the workers, largest first (>= 0.05)."""
    total: dict[str, float] = {}
    for deltas in thread_cpu:
        for name, v in deltas.items():
            total[name] = total.get(name, 0.0) + v
    per = {k: round(v * 1e6 / events, 2) for k, v in total.items()} if events else {}
    return {k: v for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05}


def stage_cpu(healths: list[dict[str, Any] | None]) -> dict[str, float]:
    """The workers' CPU seconds by stage (``/health`` ``stage_cpu_s``), and their embedded sink
    thread's (``sink.cpu_s``, as ``sink_read``, ``sink_write``...), summed."""
    total: dict[str, float] = {}
    for h in healths:
        sink = ((h or {}).get("sink") or {}).get("cpu_s") or {}
        stages = {**((h or {}).get("stage_cpu_s") or {}), **{f"sink_{k}": v for k, v in sink.items()}}
        for k, v in stages.items():
            total[k] = total.get(k, 0.0) + v
    return total


def _fmt_s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}s"


def profile_path(name: str) -> Path:
    """Where py-spy's raw stacks of one profiled worker go (``bench/profile-s1.txt``, ...)."""
    return ROOT / "bench" / f"profile-{name}.txt"


# Where a sample's time goes: the first frame of one of these, walking up from the leaf (frames of
# the standard library, numpy and river are charged to the code that called them).
_AREAS = (("streams/", "driftline"), ("schemas/", "driftline"), ("detectors/", "driftline"),
          ("sinks/", "driftline"), ("faust/", "faust + mode"), ("mode/", "faust + mode"),
          ("aiokafka/", "aiokafka"), ("aiohttp/", "aiohttp (health, metrics)"))


def profile_area(frames: list[str]) -> str:
    """The area one py-spy sample (its frames, root first) is charged to."""
    if not frames:
        return "other"
    if frames[-1].startswith("EpollSelector.select"):
        return "idle: event loop waiting in epoll"
    if any(f.startswith("ChangelogWriter.flush_blocking") for f in frames):
        return "changelog flush thread (waits on the broker)"
    for f in reversed(frames):
        if f.startswith("BaseEventLoop._run_once"):
            return "asyncio event loop"
        path = f[f.rfind("(") + 1:]
        for prefix, area in _AREAS:
            if path.startswith(prefix) and not path.startswith(("streams/cli.py", "streams/worker.py")):
                return area
    return "other"


def summarize_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top frames of a py-spy ``--format raw`` (collapsed stacks) file: self and inclusive share."""
    self_c: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        k = int(n)
        total += k
        frames = stack.split(";")
        # py-spy raw: the first item may be the process/thread name
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        self_c[frames[-1]] += k
        areas[profile_area(frames)] += k
        for f in set(frames):
            incl[f] += k
    return {
        "samples": total,
        "top_self": [(f, round(100.0 * c / total, 1)) for f, c in self_c.most_common(top)] if total else [],
        "top_inclusive": [(f, round(100.0 * c / total, 1)) for f, c in incl.most_common(top + 10)] if total else [],
        "areas": [(a, round(100.0 * c / total, 1)) for a, c in areas.most_common()] if total else [],
        "raw_file": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
    }
