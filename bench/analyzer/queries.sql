-- The analyzer's queries (analyzer/src/traffic/), for profiling with
-- MESHLENS_BENCH_EXPLAIN=bench/analyzer/queries.sql bench/analyzer.sh
-- $WINDOW is replaced by the window condition. Statements starting with SET change the session's
-- DataFusion settings for the statements after them. Keep in step with the analyzer's SQL.

-- mtls::pairing_sql
WITH client AS (
    SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
           destination_workload, mtls, status, duration_ms, TRUE AS logged
    FROM requests WHERE $WINDOW AND direction = 'outbound' AND destination_service IS NOT NULL
), server AS (
    SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
           destination_workload, upstream_cluster, mtls, status, duration_ms,
           CASE WHEN source_workload IS NULL THEN regexp_replace(downstream_remote_address, ':[0-9]+$', '')
           END AS source_address
    FROM requests WHERE $WINDOW AND direction = 'inbound'
)
SELECT COALESCE(client.source_namespace, server.source_namespace) AS source_namespace,
       COALESCE(client.source_workload, server.source_workload) AS source_workload,
       CASE WHEN client.source_workload IS NULL THEN server.source_address END AS source_address,
       COALESCE(server.destination_service, client.destination_service) AS destination_service,
       COALESCE(server.destination_namespace, client.destination_namespace) AS destination_namespace,
       COALESCE(server.destination_workload, client.destination_workload) AS destination_workload,
       server.upstream_cluster AS server_cluster,
       COALESCE(NULLIF(server.mtls, 'unknown'), NULLIF(client.mtls, 'unknown'), 'unknown') AS mtls,
       COALESCE(client.duration_ms, server.duration_ms) AS duration_ms,
       SUM(CASE WHEN client.mtls = 'unknown' AND server.mtls IN ('mutual', 'plaintext') THEN 1 ELSE 0 END)
           AS resolved,
       COUNT(*) AS requests,
       SUM(CASE WHEN client.logged THEN (CASE WHEN client.status IS NULL OR client.status >= 500 THEN 1 ELSE 0 END)
                WHEN server.status IS NULL OR server.status >= 500 THEN 1 ELSE 0 END) AS errors
FROM server FULL OUTER JOIN client
  ON server.request_id = client.request_id AND server.destination_service = client.destination_service
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9;

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

-- resilience::retries
SELECT destination_service, method, COUNT(*) AS requests,
       SUM(CASE WHEN tries > 1 THEN 1 ELSE 0 END) AS retried, MAX(tries) AS max_tries
FROM (SELECT destination_service, method, request_id, GREATEST(COUNT(*), MAX(COALESCE(attempts, 1))) AS tries
      FROM requests
      WHERE $WINDOW AND direction = 'inbound' AND destination_service IS NOT NULL AND request_id IS NOT NULL
      GROUP BY destination_service, method, request_id)
GROUP BY destination_service, method;

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
