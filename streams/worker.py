"""``driftline worker``: the faust app plus, in the same process, the ClickHouse sink and
(with ``DRIFTLINE_ALERTMANAGER_URL`` or ``DRIFTLINE_ALERT_WEBHOOK_URL`` set) alert delivery.

With an embedded chdb store the worker owns the store (only one process may open a
chdb path), so it also serves read-only queries at ``/query`` for ``driftline query``.

Shutdown (SIGTERM or SIGINT): faust stops the agents after their current batch and commits
the offsets of what was processed; the worker's librdkafka writers deliver what they still
queue, outputs before changelogs (``DriftlineApp.close``: a batch cut short by the stop is
processed again after the restart, its outputs deduplicated downstream as after a crash);
then alert delivery gives its queued deliveries a few seconds and commits what they
finished (the rest is delivered after the restart), and the sink writes what it buffered
and commits its own offsets. Open windows are
not closed early: their partials are in the changelog and a restarted worker carries
on with them, so the metrics of a window never depend on when a restart happened.
"""

from __future__ import annotations

import gc
import logging
import threading
from typing import Any

from driftline.streams.baselines import BaselineFeed
from driftline.streams.models import load_models_config
from driftline.streams.settings import Settings
from driftline.streams.topics import TopicError, create_topics, input_partitions, topic_names

log = logging.getLogger("driftline.worker")

SINK_TOPICS = ("metrics", "alerts", "drift_events", "outcomes", "comparisons")
# Reference profiles (files) are copied into ClickHouse this often, and at start.
PROFILE_SYNC_SECONDS = 30.0


def build_sink(settings: Settings, baselines: BaselineFeed | None = None) -> tuple[Any, Any]:
    """The sink runner and a read-only query function, or (None, None) without a sink."""
    if not settings.sink:
        return None, None
    from pathlib import Path

    from driftline.sinks.clickhouse import ClickHouseSink
    from driftline.sinks.profiles import sync_profiles, sync_states
    from driftline.sinks.query import open_query_client, run_query
    from driftline.sinks.runner import SinkRunner

    names = topic_names(settings.topic_prefix)
    sink = ClickHouseSink(settings.clickhouse, retention_days=settings.retention_days,
                          outcome_sample_rate=settings.outcome_sample_rate,
                          client_settings=settings.clickhouse_client_settings())
    profiles = Path(settings.data_dir) / "profiles"  # where baseline create and first_hours save

    def sync() -> None:  # the sink's client, so it runs in the sink's thread (a job)
        sync_profiles(sink.client, profiles, sink.database)
        if baselines is not None:  # ... and what the baselines topic holds
            sync_states(sink.client, [p.to_state() for p in baselines.latest().values()], sink.database)

    runner = SinkRunner(settings.bootstrap, [names[t] for t in SINK_TOPICS], sink,
                        group_id=f"{settings.application_id}-sink", client_config=dict(settings.kafka),
                        jobs=[(PROFILE_SYNC_SECONDS, sync)])
    runner.start()
    lock = threading.Lock()
    client = open_query_client(settings.clickhouse, **settings.clickhouse_client_settings())

    def query(sql: str, fmt: str) -> str:
        with lock:
            return str(run_query(client, sql, fmt))

    return runner, query


def build_alert_delivery(settings: Settings) -> Any:
    """The alert delivery runner (started), or None when no Alertmanager or webhook URL is set."""
    urls = settings.alertmanager_urls()
    if not urls and not settings.alert_webhook_url:
        return None
    from driftline.sinks.alert_runner import AlertDeliveryRunner
    from driftline.sinks.alertmanager import LEASE_INTERVALS, AlertmanagerTarget
    from driftline.sinks.webhook import WebhookTarget

    lease = LEASE_INTERVALS * settings.alert_repost_seconds
    ams = [AlertmanagerTarget(u, timeout=settings.alert_delivery_timeout, lease=lease) for u in urls]
    hook = (WebhookTarget(settings.alert_webhook_url, secret=settings.alert_webhook_secret,
                          timeout=settings.alert_delivery_timeout) if settings.alert_webhook_url else None)
    runner = AlertDeliveryRunner(
        settings.bootstrap, topic_names(settings.topic_prefix)["alerts"], alertmanagers=ams, webhook=hook,
        group_id=f"{settings.application_id}-alerts", repost_seconds=settings.alert_repost_seconds,
        max_attempts=settings.alert_delivery_attempts, max_queue=settings.alert_delivery_queue,
        client_config=dict(settings.kafka))
    return runner.start()


def _reset_local_tables(settings: Settings) -> None:
    """Start RocksDB tables empty: they are rebuilt from their changelogs.

    After a crash RocksDB can hold writes whose changelog messages were never delivered;
    carrying on from them would let the changelog (what another worker recovers after a
    rebalance) diverge from this worker's state. The changelog is the source of truth and
    RocksDB only keeps a large pending set off the heap, so a restart replays it.
    """
    import shutil
    from pathlib import Path

    root = Path(settings.data_dir)  # faust's appdir is <datadir>/v<version>, tables below it
    for tables in [*root.glob("v*/tables"), *root.glob("*-data/v*/tables")]:
        shutil.rmtree(tables, ignore_errors=True)
        log.info("local RocksDB tables reset; recovering from the changelogs", extra={"path": str(tables)})


def run_worker(settings: Settings) -> int:
    import faust

    from driftline.detectors.drift import river_detector_classes
    from driftline.streams.app import DriftlineApp
    from driftline.streams.malloc import tune_allocator

    tune_allocator()

    models = load_models_config(settings.config_path)
    # Import river's detectors before the group join, not inside the first batch that creates one.
    river_detector_classes()

    # The join stage allocates a few objects per event and keeps a million-entry table; with
    # the default thresholds (700 allocations) the cyclic collector ran so often that it showed
    # up inside every envelope decode. The imports above are frozen out of its scans.
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)

    if settings.store.startswith("rocksdb"):
        _reset_local_tables(settings)
    try:
        names = create_topics(settings.bootstrap, settings.topic_prefix, settings.partitions,
                              client_config=dict(settings.kafka))
        # The inputs' actual partition count decides where each prediction id belongs: it is
        # what every record's partition is checked against (misrouted records are forwarded).
        partitions = input_partitions(settings.bootstrap, settings.topic_prefix, dict(settings.kafka))
    except TopicError as exc:
        log.critical("topics refused: %s", exc)
        return 78  # EX_CONFIG
    if partitions != settings.partitions:
        log.info("input topics have their own partition count", extra={"partitions": partitions})
        settings = settings.with_overrides(partitions=partitions)
    log.info("worker starting", extra={"settings": settings.redacted(), "topics": names})
    # Reference profiles published by ``driftline baseline create``: read from the topic's start,
    # applied live by the app's timer, copied into ClickHouse by the sink.
    baselines = BaselineFeed(settings.bootstrap, names["baselines"], dict(settings.kafka)).start()
    runner, query = build_sink(settings, baselines)
    delivery = build_alert_delivery(settings)
    dl = DriftlineApp(settings, models, sink=runner, query=query, baselines=baselines)
    if delivery is not None:
        from driftline.streams.observe import AlertDeliveryCollector

        dl.metrics.registry.register(AlertDeliveryCollector(delivery.stats))
    worker = faust.Worker(dl.app, loglevel=settings.log_level.upper(), quiet=True, redirect_stdouts=False,
                          override_logging=False)
    try:
        worker.execute_from_commandline()
    except SystemExit:
        pass
    finally:
        dl.close()
        if delivery is not None:
            delivery.stop()
        if runner is not None:
            runner.stop()
        baselines.close()
        log.info("worker stopped", extra={"counters": dl.metrics.counters})
    return 0
