-- Driftline schema, version 9: the incidents view names the feature of a per-feature incident,
-- and a resolved incident reads resolved. Since version 8, data drift is one incident per feature
-- (rule 'feature_drift'), and the view showed several incidents of one rule and model version
-- with nothing to tell them apart.
-- CREATE OR REPLACE: the view of version 2 exists; re-running this file gives the same view.

CREATE OR REPLACE VIEW {database}.incidents AS
SELECT
    a.incident_id AS incident_id,
    -- columns qualified with a.: aliases below reuse column names
    any(a.model_id) AS model_id,
    any(a.model_version) AS model_version,
    any(a.rule) AS rule,
    any(a.metric) AS metric,
    -- the drifting feature ('prediction' for the model output); '' for every other rule
    any(a.feature) AS feature,
    any(a.segment) AS segment,
    -- 'critical' if the incident was ever critical (a string max would pick 'warning')
    if(countIf(a.severity = 'critical') > 0, 'critical', 'warning') AS severity,
    -- resolved is an incident's last state (a new firing is a new incident): a firing and its
    -- resolve emitted by one merge step share emitted_at, and argMax alone picked either one
    if(countIf(a.status = 'resolved') > 0, 'resolved', argMax(a.status, a.emitted_at)) AS status,
    minIf(a.detected_at, a.status = 'firing') AS fired_at,
    -- NULL while unresolved (a bare maxIf would give 1970-01-01)
    if(countIf(a.status = 'resolved') > 0, maxIf(a.detected_at, a.status = 'resolved'), NULL) AS resolved_at,
    countIf(a.status = 'firing') AS firing_updates
FROM {database}.alerts AS a
GROUP BY a.incident_id;
