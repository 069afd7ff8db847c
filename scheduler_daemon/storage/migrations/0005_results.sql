-- 0005: results as data (README: Results as data). An attempt keeps what its job returned as
-- JSON (`result`), the elements a job's `items:` path finds become rows of `job_items`, and a
-- fire started by another job's success (`then:`) names its parent. Columns are added without a
-- default (no table rewrite); the trigger CHECK is replaced NOT VALID and validated apart, which
-- does not block writes on a big table.
ALTER TABLE executions ADD COLUMN IF NOT EXISTS result jsonb;          -- the result, whole
ALTER TABLE executions ADD COLUMN IF NOT EXISTS result_bytes integer;  -- its size, kept or not
ALTER TABLE executions ADD COLUMN IF NOT EXISTS parent_fire_id uuid;   -- trigger 'chain'

ALTER TABLE executions DROP CONSTRAINT IF EXISTS executions_trigger_check;
ALTER TABLE executions ADD CONSTRAINT executions_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'catchup', 'chain')) NOT VALID;
ALTER TABLE executions VALIDATE CONSTRAINT executions_trigger_check;
ALTER TABLE fire_claims DROP CONSTRAINT IF EXISTS fire_claims_trigger_check;
ALTER TABLE fire_claims ADD CONSTRAINT fire_claims_trigger_check
    CHECK (trigger IN ('schedule', 'manual', 'catchup', 'chain'));

-- Retention clears old results first (the row stays): only rows that still have one.
CREATE INDEX IF NOT EXISTS executions_result_finished_idx ON executions (finished_at)
    WHERE result IS NOT NULL;
-- "What did fire X start?"
CREATE INDEX IF NOT EXISTS executions_parent_idx ON executions (parent_fire_id)
    WHERE parent_fire_id IS NOT NULL;

-- One row per element of the list a job's `items.path` found in an attempt's result, written in
-- the same transaction as the attempt's row (a replay writes nothing twice: the primary key).
CREATE TABLE IF NOT EXISTS job_items (
    id           bigint GENERATED ALWAYS AS IDENTITY,  -- write order: the API's cursor
    job_name     text        NOT NULL,
    fire_id      uuid        NOT NULL,
    attempt      integer     NOT NULL,
    scheduled_at timestamptz NOT NULL,
    idx          integer     NOT NULL,   -- the element's place in the list, from 0
    key          text,                   -- `items.key` of the element (text), if configured
    item         jsonb       NOT NULL,
    PRIMARY KEY (fire_id, attempt, idx)
);
-- A job's items in time order (GET /jobs/{name}/items, keyset on (scheduled_at, id)).
CREATE INDEX IF NOT EXISTS job_items_job_idx ON job_items (job_name, scheduled_at, id);
-- Retention deletes by age: rows arrive in time order, so a block range index is enough (and
-- costs next to nothing to keep up at thousands of rows a second).
CREATE INDEX IF NOT EXISTS job_items_scheduled_brin ON job_items USING brin (scheduled_at);

COMMENT ON TABLE job_items IS 'scheduler_daemon: elements extracted from job results (items:)';
