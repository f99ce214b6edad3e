-- meshlens-store: catalog of the Parquet files that hold flushed telemetry, and the WAL checkpoint.
-- A Parquet file is visible to queries only once its row here has committed; the same transaction moves
-- the checkpoint, so "in the catalog" and "covered by the checkpoint" never disagree.
-- Times are microseconds since the Unix epoch, UTC (integers compare exactly on every backend).

CREATE TABLE parquet_files (
    id             BIGSERIAL   PRIMARY KEY,
    -- SQL table whose rows the file holds: 'requests' or 'spans'.
    table_name     TEXT        NOT NULL,
    -- Start of the hour partition the file belongs to.
    partition_hour BIGINT      NOT NULL,
    -- Path relative to the data directory: parquet/<table>/<YYYY-MM-DD>/<HH>/<id>.parquet
    path           TEXT        NOT NULL UNIQUE,
    row_count      BIGINT      NOT NULL,
    size_bytes     BIGINT      NOT NULL,
    -- Smallest and largest value of the table's time column in the file.
    min_time       BIGINT      NOT NULL,
    max_time       BIGINT      NOT NULL,
    -- Highest WAL sequence number whose rows the flush that wrote this file covered.
    wal_seq        BIGINT      NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX parquet_files_by_time ON parquet_files (table_name, min_time, max_time);
CREATE INDEX parquet_files_by_hour ON parquet_files (partition_hour);

-- One row: every WAL record with seq <= flushed_seq is in Parquet files listed above.
CREATE TABLE wal_checkpoint (
    id          SMALLINT    PRIMARY KEY CHECK (id = 1),
    flushed_seq BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

INSERT INTO wal_checkpoint (id, flushed_seq) VALUES (1, 0);
