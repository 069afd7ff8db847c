-- 0002: job_health's drift counts scheduled fires only (how late the scheduler is); a catch-up
-- run is late by the downtime, by design, and a manual one has no schedule to be late for.
CREATE OR REPLACE VIEW job_health AS
SELECT j.name AS job_name,
       j.enabled,
       j.paused_at IS NOT NULL AS paused,
       j.next_run_at,
       j.last_run_at,
       s.runs_24h,
       s.failures_24h,
       s.success_rate_24h,
       s.p95_drift_ms_24h,
       s.p95_duration_ms_24h
FROM jobs j
LEFT JOIN LATERAL (
    SELECT count(*) AS runs_24h,
           count(*) FILTER (WHERE e.status IN ('failed', 'timed_out', 'abandoned')) AS failures_24h,
           round((count(*) FILTER (WHERE e.status = 'succeeded'))::numeric
                 / NULLIF(count(*) FILTER (WHERE e.status <> 'skipped'), 0), 4) AS success_rate_24h,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY e.drift_ms)
               FILTER (WHERE e.trigger = 'schedule') AS p95_drift_ms_24h,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY e.duration_ms) AS p95_duration_ms_24h
    FROM executions e
    WHERE e.job_name = j.name AND e.scheduled_at > now() - interval '24 hours'
      AND e.status <> 'running'
) s ON true
WHERE j.removed_at IS NULL;
