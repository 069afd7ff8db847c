-- 0003: jobs kept in the database (created over the admin API or by `scheduler-daemon jobs
-- apply`) live in `jobs` beside the config file's. `source` says which; an API job's
-- `definition` is the job as written (a secret as an {"env": "NAME"} reference, never its
-- value), `version` counts its changes (the API's If-Match); `created_at` is its creation.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS source text NOT NULL DEFAULT 'config'
    CHECK (source IN ('config', 'api'));
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS definition jsonb;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS version bigint NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now();
UPDATE jobs SET created_at = updated_at;

-- A one-off run of a job that exists nowhere else (`POST /runs` with a whole job): its
-- definition as written; and a run's own priority and retry.
ALTER TABLE runs ADD COLUMN IF NOT EXISTS job jsonb;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS options jsonb;

COMMENT ON TABLE jobs IS 'scheduler_daemon: one row per job, from the config file or the API';
COMMENT ON COLUMN jobs.definition IS 'an API job as written: secrets as {"env": NAME} references';
