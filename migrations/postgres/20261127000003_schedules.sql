-- meshlens-api: report schedules and the webhook deliveries of their reports. `next_run` is persisted and
-- moved in the same transaction that stores a run's report, so a restart neither loses nor repeats a run.
-- Times are microseconds since the Unix epoch, UTC.

CREATE TABLE schedules (
    id               BIGSERIAL PRIMARY KEY,
    name             TEXT    NOT NULL UNIQUE,
    -- Exactly one of the two: a cron expression (UTC), or a fixed interval in seconds.
    cron             TEXT,
    interval_seconds BIGINT,
    -- Length of the analyzed window, ending at the run time.
    window_seconds   BIGINT NOT NULL,
    -- The policy file's text (YAML), checked when the schedule was created; NULL: no verdict.
    policy           TEXT,
    -- Renderings sent to the webhook, as a JSON array of "json", "html", "md", "csv".
    formats          TEXT    NOT NULL,
    webhook_url      TEXT,
    next_run         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    last_run_at      BIGINT,
    last_report_id   BIGINT,
    -- Why the last run failed to produce a report (it is retried at the next due time).
    last_error       TEXT,
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
);

CREATE INDEX schedules_by_next_run ON schedules (next_run);

CREATE TABLE report_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    schedule_id     BIGINT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    report_id       BIGINT NOT NULL,
    url             TEXT    NOT NULL,
    -- 'pending' (to be tried at next_attempt_at), 'delivered', or 'failed' (attempts exhausted).
    status          TEXT    NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    -- HTTP status of the last answer, when there was one.
    last_status     BIGINT,
    next_attempt_at BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    delivered_at    BIGINT
);

CREATE INDEX report_deliveries_due ON report_deliveries (status, next_attempt_at);
CREATE INDEX report_deliveries_by_schedule ON report_deliveries (schedule_id, id);
