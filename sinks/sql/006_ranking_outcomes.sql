-- Driftline schema, version 6: ranking outcomes.
-- A ranking prediction's outcome row carries per-list counts instead of a class or a value
-- (y_pred, y_true, value_* stay NULL): enough to recompute CTR, conversion rate, hit rate@K and
-- MRR@K for any K afterwards, without storing the lists themselves (up to 1,000 ids each).
-- NULL for every other task. UInt16: a list holds at most 1,000 ids. ADD COLUMN IF NOT EXISTS is
-- idempotent; old rows read the columns as NULL.

ALTER TABLE {database}.outcomes ADD COLUMN IF NOT EXISTS items_shown Nullable(UInt16) CODEC(ZSTD(1));

ALTER TABLE {database}.outcomes ADD COLUMN IF NOT EXISTS clicked_shown Nullable(UInt16) CODEC(ZSTD(1));

ALTER TABLE {database}.outcomes ADD COLUMN IF NOT EXISTS converted_shown Nullable(UInt16) CODEC(ZSTD(1));

ALTER TABLE {database}.outcomes ADD COLUMN IF NOT EXISTS relevant_count Nullable(UInt16) CODEC(ZSTD(1));

ALTER TABLE {database}.outcomes ADD COLUMN IF NOT EXISTS first_relevant_rank Nullable(UInt16) CODEC(ZSTD(1));
