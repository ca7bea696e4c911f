-- Driftline schema, version 2: one row per alert incident (its lifecycle folded).
-- The alerts table has one row per state change; most questions ("what is firing now",
-- "how long did incidents last") want one row per incident.

CREATE VIEW IF NOT EXISTS {database}.incidents AS
SELECT
    a.incident_id AS incident_id,
    -- columns qualified with a.: aliases below reuse column names
    any(a.model_id) AS model_id,
    any(a.model_version) AS model_version,
    any(a.rule) AS rule,
    any(a.metric) AS metric,
    any(a.segment) AS segment,
    -- 'critical' if the incident was ever critical (a string max would pick 'warning')
    if(countIf(a.severity = 'critical') > 0, 'critical', 'warning') AS severity,
    argMax(a.status, a.emitted_at) AS status,
    minIf(a.detected_at, a.status = 'firing') AS fired_at,
    -- NULL while unresolved (a bare maxIf would give 1970-01-01)
    if(countIf(a.status = 'resolved') > 0, maxIf(a.detected_at, a.status = 'resolved'), NULL) AS resolved_at,
    countIf(a.status = 'firing') AS firing_updates
FROM {database}.alerts AS a
GROUP BY a.incident_id;

-- The sort key starts with model_id and time; a bloom filter lets "everything about
-- incident X" skip most granules instead of scanning the whole table.
ALTER TABLE {database}.alerts ADD INDEX IF NOT EXISTS idx_incident incident_id TYPE bloom_filter GRANULARITY 4;
