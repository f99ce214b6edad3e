-- The analyzer's queries (analyzer/src/traffic/), for profiling with
-- MESHLENS_BENCH_EXPLAIN=bench/analyzer/queries.sql bench/analyzer.sh
-- $WINDOW is replaced by the window condition. Statements starting with SET change the session's
-- DataFusion settings for the statements after them. Keep in step with the analyzer's SQL.

-- pairing::records_sql: the scan the request pairing reads (pairing and tries per request run in Rust
-- over its batches; COUNT(*) stands in for them here)
SELECT COUNT(*) FROM (
    SELECT request_id, direction = 'inbound' AS inbound, timestamp, source_namespace, source_workload,
           downstream_remote_address, destination_service, destination_namespace, destination_workload,
           upstream_cluster, method, mtls, status, duration_ms, attempts
    FROM requests
    WHERE $WINDOW AND (direction = 'inbound' OR (direction = 'outbound' AND destination_service IS NOT NULL)));

-- routes::client_groups: the analyzer groups by the route each request took, computed by its
-- meshlens_route(...) function (the route table of the configuration, which plain SQL cannot call); this
-- stand-in groups by the logged route name instead, the rest is the same.
SELECT reporter, direction, source_namespace, source_workload, authority, method, destination_service,
       destination_subset, status, response_flags, duration_ms, route_name AS attribution,
       CASE WHEN array_has(response_flags, 'NR') THEN path END AS path,
       COUNT(*) AS requests, MAX(timestamp) AS last_seen
FROM requests WHERE $WINDOW AND (direction = 'outbound' OR array_has(response_flags, 'NR'))
GROUP BY reporter, direction, source_namespace, source_workload, authority, method, destination_service,
         destination_subset, status, response_flags, duration_ms, route_name,
         CASE WHEN array_has(response_flags, 'NR') THEN path END;

-- resilience::server_latency
SELECT destination_service, duration_ms, COUNT(*) AS requests FROM requests
WHERE $WINDOW AND direction = 'inbound' AND destination_service IS NOT NULL AND duration_ms IS NOT NULL
GROUP BY destination_service, duration_ms;

-- resilience::bursts
SELECT destination_service, COUNT(*) AS windows, MAX(errors) AS worst
FROM (SELECT destination_service, date_bin(INTERVAL '10 seconds', timestamp) AS bucket, COUNT(*) AS errors
      FROM requests
      WHERE $WINDOW AND direction = 'outbound' AND destination_service IS NOT NULL
        AND (status IS NULL OR status >= 500)
      GROUP BY destination_service, date_bin(INTERVAL '10 seconds', timestamp))
WHERE errors >= 5 GROUP BY destination_service;

-- recommend::endpoints
SELECT destination_service, upstream_host, COUNT(*) AS requests,
       SUM(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors
FROM requests
WHERE $WINDOW AND direction = 'outbound' AND destination_service IS NOT NULL AND upstream_host IS NOT NULL
GROUP BY destination_service, upstream_host;
