-- Driftline schema, version 7: reference profiles, readable by analysts.
-- The reference profiles that data drift and data quality compare windows against live as JSON
-- files (<DRIFTLINE_DATA_DIR>/profiles/<model>/profile-v<N>.json, written by `driftline baseline
-- create` or by the worker from the first hours of production). The worker's sink copies each
-- version here (sinks/profiles.py): one row per (model_id, version, feature), the model output
-- being the pseudo-feature '__prediction__'. A saved version never changes, so re-inserting it
-- (a sync repeated after a crash) writes identical rows that ReplacingMergeTree collapses; read
-- with FINAL for exact counts.
-- No TTL: a model may compare against a reference far older than the retention of the metrics.

CREATE TABLE IF NOT EXISTS {database}.reference_profiles
(
    model_id LowCardinality(String),
    version UInt32,
    -- feature name, or '__prediction__' for the score / regression value / predicted label
    feature String,
    -- 'numeric' or 'categorical'
    kind LowCardinality(String),
    -- values seen = present + missing + type_mismatch
    n UInt64,
    present UInt64,
    -- absent key, null, NaN or +-inf
    missing UInt64,
    missing_rate Float64,
    -- a string or bool in a numeric feature; a float, list or dict in a categorical one
    type_mismatch UInt64,
    type_mismatch_rate Float64,
    -- numeric only (NULL otherwise, and when no value was present); quantiles from the profile's
    -- sketch (1% relative accuracy)
    min Nullable(Float64),
    max Nullable(Float64),
    p01 Nullable(Float64),
    p05 Nullable(Float64),
    p25 Nullable(Float64),
    p50 Nullable(Float64),
    p75 Nullable(Float64),
    p95 Nullable(Float64),
    p99 Nullable(Float64),
    -- numeric only: sorted bin edges (quantiles of the reference) and the histogram, whose first and
    -- last bins count values below the first / above the last edge; bin_labels names each bin
    -- ('< 1.5', '[1.5, 3)', ..., '> 9'). Empty for categorical features.
    bin_edges Array(Float64),
    bin_counts Array(UInt64),
    bin_labels Array(String),
    -- categorical only: categories and their counts ('__other__' past max_categories)
    categories Array(String),
    category_counts Array(UInt64),
    -- the same on every row of a profile
    created_at DateTime64(3, 'UTC'),
    -- the input file's name, 'first_hours', or '' (profiles saved before sources were recorded)
    source LowCardinality(String),
    n_events UInt64,
    -- metrics of the labelled reference data (accuracy, f1, mae, ...); empty without labels
    reference_metrics Map(LowCardinality(String), Float64),
    synced_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (model_id, version, feature);
