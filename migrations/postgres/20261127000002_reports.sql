-- meshlens-api: compliance reports with their history. The body is the report as JSON (the format
-- documented in docs/reports.md); every rendering (HTML, Markdown, CSV) is produced from it, so a stored
-- report renders the same way forever. The other columns repeat what listing and trends need without
-- parsing bodies. Times are microseconds since the Unix epoch, UTC.

CREATE TABLE reports (
    id             BIGSERIAL PRIMARY KEY,
    created_at     BIGINT    NOT NULL,
    -- The analyzed window: start inclusive, end exclusive.
    window_start   BIGINT    NOT NULL,
    window_end     BIGINT    NOT NULL,
    -- sha256 of the configuration in force (see docs/reports.md), and its resource counts as JSON.
    config_hash    TEXT      NOT NULL,
    config_summary TEXT      NOT NULL,
    -- The report's summary figures as JSON (mTLS %, findings by level, ...).
    summary        TEXT      NOT NULL,
    -- The policy verdict; NULL when the report was made without a policy.
    passed         BOOLEAN,
    -- The schedule that produced it; NULL for reports made on request.
    schedule_id    BIGINT,
    body           TEXT      NOT NULL
);

CREATE INDEX reports_by_time ON reports (created_at);
CREATE INDEX reports_by_schedule ON reports (schedule_id, id);
