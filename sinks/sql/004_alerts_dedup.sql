-- Driftline schema, version 4: alerts and drift events deduplicated by their ids.
-- The merge stage sends alerts and drift events before it records them in its changelog (so a
-- crash cannot lose one); a crash in between re-sends the same transition, with the same stable
-- alert_id / event_id, as a new Kafka message. A ReplacingMergeTree whose sorting key ends with
-- that id collapses such repeats; queries that must count exactly read the table with FINAL.
-- Same guarded copy-and-swap as migration 3 (ClickHouse cannot ALTER an engine).

CREATE TABLE IF NOT EXISTS {database}.alerts_v4
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
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1)),
    -- migration 2's index, carried over to the rebuilt table
    INDEX idx_incident incident_id TYPE bloom_filter GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (model_id, detected_at, rule, incident_id, alert_id)
TTL toDateTime(detected_at) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'alerts' AND engine = 'MergeTree'
INSERT INTO {database}.alerts_v4 SELECT * FROM {database}.alerts;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'alerts' AND engine = 'MergeTree'
EXCHANGE TABLES {database}.alerts AND {database}.alerts_v4;

DROP TABLE IF EXISTS {database}.alerts_v4;

CREATE TABLE IF NOT EXISTS {database}.drift_events_v4
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(detected_at)
ORDER BY (model_id, model_version, detected_at, detector, event_id)
TTL toDateTime(detected_at) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'drift_events' AND engine = 'MergeTree'
INSERT INTO {database}.drift_events_v4 SELECT * FROM {database}.drift_events;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'drift_events' AND engine = 'MergeTree'
EXCHANGE TABLES {database}.drift_events AND {database}.drift_events_v4;

DROP TABLE IF EXISTS {database}.drift_events_v4;
