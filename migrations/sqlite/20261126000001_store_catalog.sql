-- meshlens-store: catalog of the Parquet files that hold flushed telemetry, and the WAL checkpoint.
-- A Parquet file is visible to queries only once its row here has committed; the same transaction moves
-- the checkpoint, so "in the catalog" and "covered by the checkpoint" never disagree.
-- Times are microseconds since the Unix epoch, UTC (integers compare exactly on every backend).

CREATE TABLE parquet_files (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    -- SQL table whose rows the file holds: 'requests' or 'spans'.
    table_name     TEXT    NOT NULL,
    -- Start of the hour partition the file belongs to.
    partition_hour INTEGER NOT NULL,
    -- Path relative to the data directory: parquet/<table>/<YYYY-MM-DD>/<HH>/<id>.parquet
    path           TEXT    NOT NULL UNIQUE,
    row_count      INTEGER NOT NULL,
    size_bytes     INTEGER NOT NULL,
    -- Smallest and largest value of the table's time column in the file.
    min_time       INTEGER NOT NULL,
    max_time       INTEGER NOT NULL,
    -- Highest WAL sequence number whose rows the flush that wrote this file covered.
    wal_seq        INTEGER NOT NULL,
    created_at     TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX parquet_files_by_time ON parquet_files (table_name, min_time, max_time);
CREATE INDEX parquet_files_by_hour ON parquet_files (partition_hour);

-- One row: every WAL record with seq <= flushed_seq is in Parquet files listed above.
CREATE TABLE wal_checkpoint (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    flushed_seq INTEGER NOT NULL,
    updated_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

INSERT INTO wal_checkpoint (id, flushed_seq) VALUES (1, 0);
