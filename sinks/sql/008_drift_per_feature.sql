-- Driftline schema, version 8: per-feature drift incidents and the limits drift is judged against.
-- Data drift is one incident per drifting feature (and one for the model output, feature
-- 'prediction'); the multivariate signal is its own incident with an empty feature. The column is
-- '' for every alert that is not about one feature, and for alerts written before this version.
-- ADD COLUMN IF NOT EXISTS makes a re-run harmless.

ALTER TABLE {database}.alerts ADD COLUMN IF NOT EXISTS feature LowCardinality(String) DEFAULT '' AFTER metric;

-- Reference profiles gain what drift is judged against (profile format 3, `driftline baseline
-- create`): per feature row, the mean and standard deviation over the reference chunks of each
-- statistic ('js_mean', 'js_std', 'psi_mean', 'psi_std'; empty when the reference had fewer than
-- 10 chunks or was built from the first hours), and on every row of a version the multivariate
-- signal's ('reconstruction_error_mean', 'reconstruction_error_std', 'chunk_size', 'components',
-- 'explained_variance'; empty without a PCA). The model output's row is now named 'prediction'
-- (rows synced before this version keep '__prediction__').
ALTER TABLE {database}.reference_profiles ADD COLUMN IF NOT EXISTS drift_limits Map(LowCardinality(String), Float64) AFTER category_counts;
ALTER TABLE {database}.reference_profiles ADD COLUMN IF NOT EXISTS multivariate Map(LowCardinality(String), Float64) AFTER drift_limits;
