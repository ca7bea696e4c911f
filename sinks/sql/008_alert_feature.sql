-- Driftline schema, version 8: the feature an alert is about.
-- Data drift is one incident per drifting feature (and one for the model output, feature
-- 'prediction'); the multivariate signal is its own incident with an empty feature. The column is
-- '' for every alert that is not about one feature, and for alerts written before this version.
-- ADD COLUMN IF NOT EXISTS makes a re-run harmless.

ALTER TABLE {database}.alerts ADD COLUMN IF NOT EXISTS feature LowCardinality(String) DEFAULT '' AFTER metric;
