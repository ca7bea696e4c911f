-- Driftline schema, version 3: outcomes deduplicated by prediction.
-- The join stage sends an outcome before the partition record that marks its input as applied
-- (at-least-once): after a crash in between, the replayed input sends the same outcome again, as a
-- new Kafka message that the sink's offset-based deduplication cannot recognise. A
-- ReplacingMergeTree whose sorting key ends with prediction_id collapses such repeats (identical
-- rows) in background merges; queries that must count exactly read it with FINAL.
-- ClickHouse cannot ALTER a table's engine: build the new table, copy, swap, drop the old one.
-- The copy and the swap are guarded ("only if" the old engine is still in place), so a re-run
-- after a crash half-way through neither copies twice nor swaps back.

CREATE TABLE IF NOT EXISTS {database}.outcomes_v3
(
    prediction_id String CODEC(ZSTD(1)),
    model_id LowCardinality(String),
    model_version LowCardinality(String),
    segments Map(LowCardinality(String), LowCardinality(String)),
    task LowCardinality(String),
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
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(prediction_ts)
ORDER BY (model_id, model_version, prediction_ts, prediction_id)
TTL toDateTime(prediction_ts) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'outcomes' AND engine = 'MergeTree'
INSERT INTO {database}.outcomes_v3 SELECT * FROM {database}.outcomes;

-- only if: SELECT count() FROM system.tables WHERE database = '{database}' AND name = 'outcomes' AND engine = 'MergeTree'
EXCHANGE TABLES {database}.outcomes AND {database}.outcomes_v3;

DROP TABLE IF EXISTS {database}.outcomes_v3;
