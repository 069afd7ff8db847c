-- 0004: cluster mode (README: Running several replicas). Each replica registers in `nodes` and
-- heartbeats there; each attempt of a fire is claimed in `fire_claims` by the one replica that
-- runs it (a scheduled fire's id is the same on every replica, so the key arbitrates).
CREATE TABLE IF NOT EXISTS nodes (
    name       text PRIMARY KEY,          -- the config's `node`, distinct per replica
    started_at timestamptz NOT NULL,
    last_seen  timestamptz NOT NULL,      -- its heartbeat: its claims' lease runs from here
    stopped_at timestamptz,               -- a clean stop: its fires are the others' at once
    version    text        NOT NULL,      -- the scheduler-daemon version it runs
    host       text        NOT NULL DEFAULT '',
    pid        integer,
    -- Its claims since it started, as its last heartbeat reported them (`status` shows them).
    claims_won  bigint NOT NULL DEFAULT 0,
    claims_lost bigint NOT NULL DEFAULT 0,
    takeovers   bigint NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS fire_claims (
    fire_id      uuid        NOT NULL,
    attempt      integer     NOT NULL CHECK (attempt >= 1),
    job_name     text        NOT NULL,
    scheduled_at timestamptz NOT NULL,
    trigger      text        NOT NULL CHECK (trigger IN ('schedule', 'manual', 'catchup')),
    node         text        NOT NULL,    -- the replica that won it and runs the attempt
    claimed_at   timestamptz NOT NULL DEFAULT now(),
    takeover     boolean     NOT NULL DEFAULT false,  -- won by a replica not its preferred owner
    PRIMARY KEY (fire_id, attempt)
);
-- Old claims are deleted (only recent instants are ever claimed again); a dead node's claims.
CREATE INDEX IF NOT EXISTS fire_claims_claimed_idx ON fire_claims (claimed_at);
CREATE INDEX IF NOT EXISTS fire_claims_node_idx ON fire_claims (node, claimed_at DESC);

COMMENT ON TABLE nodes IS 'scheduler_daemon: the replicas of a cluster and their heartbeats';
COMMENT ON TABLE fire_claims IS 'scheduler_daemon: which replica runs each attempt of a fire';
