-- Driftline schema, version 5: champion / challenger comparisons.
-- One row per (model, champion, challenger, window, metric, revision): the challenger's metric
-- minus the champion's in the same window, its confidence interval and the verdict
-- (detectors/comparison.py). A comparison is redone whenever either window gets a new revision
-- (late labels), with revision = champion window revision + challenger window revision, so
-- revisions only grow. ReplacingMergeTree(revision) keeps the highest revision per sorting key:
-- read with FINAL for the latest verdict of each window (the same comparison re-sent after a
-- crash has the same revision and collapses too). Unlike metrics, older revisions of a
-- comparison are not history anyone needs: the latest one replaces them.

CREATE TABLE IF NOT EXISTS {database}.comparisons
(
    model_id LowCardinality(String),
    champion_version LowCardinality(String),
    challenger_version LowCardinality(String),
    -- 'ab' (traffic split) or 'shadow' (every version scores the same requests)
    mode LowCardinality(String),
    window_start DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    window_end DateTime64(3, 'UTC') CODEC(DoubleDelta, ZSTD(1)),
    metric LowCardinality(String),
    champion Float64 CODEC(Gorilla, ZSTD(1)),
    challenger Float64 CODEC(Gorilla, ZSTD(1)),
    -- challenger - champion, and its two-sided interval at 1 - alpha
    difference Float64 CODEC(ZSTD(1)),
    ci_low Float64 CODEC(ZSTD(1)),
    ci_high Float64 CODEC(ZSTD(1)),
    -- NULL when both arms are constant (the difference is exact)
    z Nullable(Float64),
    p_value Float64 CODEC(ZSTD(1)),
    n_champion UInt64 CODEC(T64, ZSTD(1)),
    n_challenger UInt64 CODEC(T64, ZSTD(1)),
    alpha Float64,
    -- better | worse | no_difference | insufficient_data
    verdict LowCardinality(String),
    revision UInt32 CODEC(T64, ZSTD(1)),
    emitted_at DateTime64(3, 'UTC') CODEC(Delta, ZSTD(1)),
    _topic LowCardinality(String),
    _partition UInt16,
    _offset UInt64 CODEC(Delta, ZSTD(1)),
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3) CODEC(Delta, ZSTD(1))
)
ENGINE = ReplacingMergeTree(revision)
PARTITION BY toYYYYMM(window_start)
ORDER BY (model_id, challenger_version, champion_version, metric, window_start)
TTL toDateTime(window_end) + toIntervalDay({retention_days:UInt32})
SETTINGS non_replicated_deduplication_window = 10000;
