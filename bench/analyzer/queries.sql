-- The analyzer's queries (analyzer/src/traffic/), for profiling with
-- MESHLENS_BENCH_EXPLAIN=bench/analyzer/queries.sql bench/analyzer.sh
-- $WINDOW is replaced by the window condition. Statements starting with SET change the session's
-- DataFusion settings for the statements after them. Keep in step with the analyzer's SQL.

-- pairing::records_sql: the scan the request pairing reads (pairing, tries per request, server latency,
-- 5xx bursts and errors per endpoint run in Rust over its batches; COUNT(*) stands in for them here)
SELECT COUNT(*) FROM (
    SELECT request_id, direction = 'inbound' AS inbound, timestamp, source_namespace, source_workload,
           downstream_remote_address, destination_service, destination_namespace, destination_workload,
           upstream_cluster, upstream_host, method, mtls, status, duration_ms, attempts
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
