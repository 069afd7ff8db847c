-- 0001: the schema as it was before versioned migrations (the schema.sql every earlier version
-- applied at start). Every statement is IF NOT EXISTS / OR REPLACE, so this migration also
-- adopts a database made by an earlier version: its tables and rows stay as they are.

-- One row per attempt of a fire. A fire's attempts share its fire_id; a scheduled fire's id is
-- derived from (job name, scheduled instant), so replays and replicas agree on it.
CREATE TABLE IF NOT EXISTS executions (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    fire_id      uuid        NOT NULL,
    job_name     text        NOT NULL,
    scheduled_at timestamptz NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),   -- 1 = first try
    trigger      text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'catchup')),
    status       text        NOT NULL CHECK (status IN ('running', 'succeeded', 'failed',
                     'timed_out', 'cancelled', 'skipped', 'missed', 'abandoned')),
    started_at   timestamptz,          -- null: the attempt never started (skipped, cancelled first)
    finished_at  timestamptz,
    drift_ms     double precision,     -- started_at - the instant the attempt was due
    duration_ms  double precision,
    http_status  integer,
    exit_code    integer,
    error        text,
    output       text,                 -- head of an HTTP body / tail of a command's output
    node         text        NOT NULL DEFAULT '',
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT executions_fire_attempt_key UNIQUE (fire_id, attempt)
);

-- "The latest runs of job X"; "what finished in the last hour"; "what failed lately" (small:
-- only the rows worth looking at). (fire_id, attempt) lookups use the unique constraint's index.
CREATE INDEX IF NOT EXISTS executions_job_scheduled_idx ON executions (job_name, scheduled_at DESC);
CREATE INDEX IF NOT EXISTS executions_finished_idx ON executions (finished_at DESC);
CREATE INDEX IF NOT EXISTS executions_problems_idx ON executions (status, finished_at DESC)
    WHERE status NOT IN ('succeeded', 'skipped');

-- One row per configured job, synced at start, on reload and after a database outage; a job
-- removed from the configuration loses its row (its executions stay).
CREATE TABLE IF NOT EXISTS jobs (
    name        text PRIMARY KEY,
    spec        jsonb       NOT NULL,  -- the job as configured, secrets redacted
    enabled     boolean     NOT NULL,
    next_run_at timestamptz,
    last_run_at timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Added after version 1 (ALTER ... IF NOT EXISTS keeps older databases working).
-- The newest scheduled instant handled per job: where catch-up starts after downtime.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS last_scheduled_at timestamptz;
-- Set by `pause` (admin API or CLI), cleared by `resume`; survives restarts and reloads.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS paused_at timestamptz;
-- Set when the job leaves the config (cleared when it comes back): its row, with its last
-- instants and its pause, is kept, so a job that comes back catches up on what it missed.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS removed_at timestamptz;

-- One-off runs of configured jobs requested through the admin API (`POST /runs`): kept until
-- they start, so a restart does not lose them. `id` becomes the fire_id of their executions.
CREATE TABLE IF NOT EXISTS runs (
    id           uuid PRIMARY KEY,
    job_name     text        NOT NULL,
    run_at       timestamptz NOT NULL,
    overrides    jsonb,                -- args (python) or params/json (http) for this run only
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,          -- set when the daemon hands it to the runner
    cancelled_at timestamptz
);
CREATE INDEX IF NOT EXISTS runs_pending_idx ON runs (run_at)
    WHERE started_at IS NULL AND cancelled_at IS NULL;

-- Monitoring views (README: "SQL recipes"). A later migration changes one with CREATE OR REPLACE.
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
           percentile_cont(0.95) WITHIN GROUP (ORDER BY e.drift_ms) AS p95_drift_ms_24h,
           percentile_cont(0.95) WITHIN GROUP (ORDER BY e.duration_ms) AS p95_duration_ms_24h
    FROM executions e
    WHERE e.job_name = j.name AND e.scheduled_at > now() - interval '24 hours'
      AND e.status <> 'running'
) s ON true
WHERE j.removed_at IS NULL;

CREATE OR REPLACE VIEW recent_failures AS
SELECT job_name, scheduled_at, attempt, trigger, status, finished_at, http_status, exit_code, error
FROM executions
WHERE status IN ('failed', 'timed_out', 'abandoned', 'missed')
  AND finished_at > now() - interval '7 days'
ORDER BY finished_at DESC;

COMMENT ON TABLE executions IS 'scheduler_daemon: one row per attempt (schema version 1)';
COMMENT ON TABLE jobs IS 'scheduler_daemon: one row per configured job (schema version 1)';
COMMENT ON TABLE runs IS 'scheduler_daemon: one-off runs requested through the admin API';
