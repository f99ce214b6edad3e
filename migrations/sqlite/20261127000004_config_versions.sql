-- Config history (store/src/config_history.rs): one row per change of the mesh configuration in force,
-- from files at start-up or from the cluster watcher. Times are microseconds since the Unix epoch, UTC.

CREATE TABLE config_versions (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    recorded_at    INTEGER NOT NULL,
    -- Where the configuration came from: 'files' or 'kube'.
    source         TEXT    NOT NULL,
    -- SHA-256 over the sorted (resource key, resource hash) pairs: equal hashes, equal configurations.
    content_hash   TEXT    NOT NULL,
    resource_count INTEGER NOT NULL,
    added_count    INTEGER NOT NULL,
    modified_count INTEGER NOT NULL,
    deleted_count  INTEGER NOT NULL,
    -- JSON {"added": [keys], "modified": [keys], "deleted": [keys]}; a key is `Kind namespace/name`.
    changes        TEXT    NOT NULL
);

-- The configuration of the latest version, one row per resource, so the next version's diff survives a
-- restart.
CREATE TABLE config_resources (
    resource_key TEXT    PRIMARY KEY,
    content_hash TEXT    NOT NULL,
    version_id   INTEGER NOT NULL REFERENCES config_versions (id)
);
