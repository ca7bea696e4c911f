-- Driftline schema, version 1.
--
-- Placeholders, substituted by sinks/migrations.py before execution (never from user input):
--   {database}                  identifier, validated against ^[A-Za-z_][A-Za-z0-9_]*$
--   {retention_days:UInt32}     integer, validated to lie in [1, 36500]
-- Every statement is idempotent (IF NOT EXISTS), so re-running this file is harmless.
--
-- Choices that apply to every table:
-- * MergeTree, not ReplacingMergeTree: duplicates from at-least-once delivery are stopped at
--   insert time by insert_deduplication_token (non_replicated_deduplication_window below);
--   ReplacingMergeTree would only collapse them at some later merge, and would also erase the
--   revision history of metrics that analysts want to see.
-- * PARTITION BY toYYYYMM(event time): few, large partitions (monthly) keep part counts low;
--   TTL drops whole months cheaply and queries over a time range prune partitions.
-- * TTL on the event time, not on ingested_at: retention means "how far back can I look";
--   a backfill older than the retention is dropped at the next merge.
-- * LowCardinality(String) for model ids, versions, metric names, rules: a few hundred distinct
--   values at most, so dictionary encoding shrinks them to 1-2 bytes and speeds GROUP BY.
-- * Times are DateTime64(3, 'UTC') with DoubleDelta (regular, monotone-ish series such as window
--   bounds) or Delta (irregular but increasing: emitted_at, ingested_at) followed by ZSTD.
-- * Float metrics use Gorilla (XOR of consecutive values: small for slowly changing series such
--   as accuracy per window); wide-ranging floats (scores, errors, latency) use plain ZSTD.
-- * Source position (_topic, _partition, _offset) on every row: ClickHouse itself records what it
--   has applied, so the sink resumes from max(_offset) + 1 and offsets and data cannot disagree.

CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.schema_version
(
    version UInt32,
    name String,
    applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = MergeTree
ORDER BY version;

-- One row per (window, metric, revision). A window is re-emitted with a higher revision when late
-- labels arrive; all revisions are kept (history), metrics_latest picks the newest.
CREATE TABLE IF NOT EXISTS {database}.metrics
(
    model_id LowCardinality(String),
    model_version LowCardinality(String),
    -- '' for the whole model, else "k=v,k2=v2"; few distinct values per model
    segment LowCardinality(String),
    task LowCardinality(String),
    window_start DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    metric LowCardinality(String),
    value Float64 CODEC(Gorilla, ZSTD(1)),
    -- number of observations behind this metric (counts[metric], else labeled_count)
    count UInt64 CODEC(T64, ZSTD(1)),
    labeled_count UInt64 CODEC(T64, ZSTD(1)),
    revision UInt32 CODEC(T64, ZSTD(1)),
    final Bool,
    emitted_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(window_start)
-- model first: nearly every question filters on one model; metric next so one metric's
-- time series is contiguous on disk
ORDER BY (model_id, metric, model_version, segment, window_start, revision)
TTL toDateTime(window_end) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- One row per alert state change (firing, then resolved) of an incident.
CREATE TABLE IF NOT EXISTS {database}.alerts
(
    alert_id String,
    incident_id String,
    status LowCardinality(String),
    severity LowCardinality(String),
    kind LowCardinality(String),
    rule LowCardinality(String),
    model_id LowCardinality(String),
    model_version LowCardinality(String),
    segment LowCardinality(String),
    metric LowCardinality(String),
    value Nullable(Float64),
    threshold Nullable(Float64),
    window_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    detected_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    emitted_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    message String CODEC(ZSTD(3)),
    -- JSON text: its shape differs per rule; read it with JSONExtract*
    evidence String CODEC(ZSTD(3)),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (model_id, detected_at, rule, incident_id)
TTL toDateTime(detected_at) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

CREATE TABLE IF NOT EXISTS {database}.drift_events
(
    event_id String,
    model_id LowCardinality(String),
    model_version LowCardinality(String),
    partition UInt16,
    detector LowCardinality(String),
    kind LowCardinality(String),
    direction LowCardinality(Nullable(String)),
    position UInt64,
    params String CODEC(ZSTD(3)),
    estimate_before Nullable(Float64),
    estimate_after Nullable(Float64),
    window_start DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    detected_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    emitted_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (model_id, model_version, detected_at, detector)
TTL toDateTime(detected_at) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- Joined prediction + label rows (sampled deterministically by prediction_id). The biggest
-- table by far: the codecs matter most here.
CREATE TABLE IF NOT EXISTS {database}.outcomes
(
    prediction_id String CODEC(ZSTD(1)),
    model_id LowCardinality(String),
    model_version LowCardinality(String),
    segments Map(LowCardinality(String), LowCardinality(String)),
    task LowCardinality(String),
    -- class labels: a handful of distinct values per model
    y_pred LowCardinality(Nullable(String)),
    y_true LowCardinality(Nullable(String)),
    score Nullable(Float64) CODEC(ZSTD(1)),
    value_pred Nullable(Float64) CODEC(ZSTD(1)),
    value_true Nullable(Float64) CODEC(ZSTD(1)),
    latency_ms Nullable(Float32) CODEC(ZSTD(1)),
    prediction_ts DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    label_ts Nullable(DateTime64(3, 'UTC')) CODEC(Delta, ZSTD(1)),
    label_delay_s Nullable(Float64) CODEC(ZSTD(1)),
    correct Nullable(Bool),
    abs_error Nullable(Float64) CODEC(ZSTD(1)),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(prediction_ts)
ORDER BY (model_id, model_version, prediction_ts)
TTL toDateTime(prediction_ts) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- Latest revision of every window's metric. argMax instead of FINAL/ReplacingMergeTree: exact at
-- query time, whatever the state of merges.
CREATE VIEW IF NOT EXISTS {database}.metrics_latest AS
SELECT
    model_id,
    model_version,
    segment,
    window_start,
    window_end,
    metric,
    -- columns qualified with m.: an alias named like a column would otherwise be read back
    -- inside the aggregates (ILLEGAL_AGGREGATION / cyclic alias)
    argMax(m.value, m.revision) AS value,
    argMax(m.count, m.revision) AS count,
    argMax(m.labeled_count, m.revision) AS labeled_count,
    argMax(m.task, m.revision) AS task,
    argMax(m.final, m.revision) AS final,
    max(m.revision) AS revision
FROM {database}.metrics AS m
GROUP BY model_id, model_version, segment, window_start, window_end, metric;

-- Predictions whose label never arrived within the label horizon, per window (latest revision).
CREATE VIEW IF NOT EXISTS {database}.predictions_unlabeled AS
SELECT
    model_id,
    model_version,
    segment,
    window_start,
    window_end,
    toUInt64(argMax(m.value, m.revision)) AS count
FROM {database}.metrics AS m
WHERE m.metric = 'unlabeled_expired'
GROUP BY model_id, model_version, segment, window_start, window_end;
