"""DuckDB side of the analyzer benchmark (bench/analyzer.sh): the aggregations of `meshlens analyze`
(analyzer/src/traffic/), written as plain SQL over the store's Parquet files.

Usage: python duckdb_analyze.py 'DATA/parquet/requests/**/*.parquet'
Reads one line per round from stdin, `START END` (RFC 3339, the analysis window), runs every query on a
fresh connection, fetches all results into Python, and answers one JSON line:
{"seconds": wall time of connect + queries + fetch, "cpu_seconds": CPU time of the process (all threads)
meanwhile, "figures": totals for the cross-check}.

The queries compute what the analyzer's do, one per analysis input:
- mTLS and the service graph: client and server records paired on (request id, destination service) by a
  full outer join, with errors and a duration histogram per edge;
- routes: client-side requests grouped by the route they took (the attribution written as SQL for the
  benchmark's configuration), with failures, last use and latency percentiles (p50, p95, p99, p99.9) per
  group;
- resilience: failures per service, tries per request as the destination saw them, 10-second 5xx bursts,
  the call graph, and server-side latency percentiles per service;
- recommendations: errors per endpoint.
"""
import json
import sys
import time

import duckdb

FAILURES = """
    sum(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS server_errors,
    sum(CASE WHEN status IN (502, 503, 504) THEN 1 ELSE 0 END) AS gateway_errors,
    sum(CASE WHEN status = 504 OR list_contains(response_flags, 'UT') THEN 1 ELSE 0 END) AS timeouts,
    sum(CASE WHEN list_contains(response_flags, 'URX') THEN 1 ELSE 0 END) AS retries_exhausted,
    sum(CASE WHEN list_contains(response_flags, 'UO') THEN 1 ELSE 0 END) AS overflows,
    sum(CASE WHEN list_contains(response_flags, 'UF') THEN 1 ELSE 0 END) AS connect_failures,
    sum(CASE WHEN list_contains(response_flags, 'UC') THEN 1 ELSE 0 END) AS connection_terminations"""

# Exact percentiles with linear interpolation (quantile_cont), as the analyzer reports them.
PERCENTILES = "quantile_cont(duration_ms, [0.5, 0.95, 0.99, 0.999]) AS percentiles, max(duration_ms) AS max_ms"

QUERIES = {
    "mtls": """
        WITH client AS (
            SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
                   destination_workload, mtls, status, duration_ms, TRUE AS logged
            FROM requests WHERE {w} AND direction = 'outbound' AND destination_service IS NOT NULL
        ), server AS (
            SELECT request_id, source_namespace, source_workload, destination_service, destination_namespace,
                   destination_workload, upstream_cluster, mtls, status, duration_ms,
                   CASE WHEN source_workload IS NULL THEN regexp_replace(downstream_remote_address, ':[0-9]+$', '')
                   END AS source_address
            FROM requests WHERE {w} AND direction = 'inbound'
        )
        SELECT COALESCE(client.source_namespace, server.source_namespace) AS source_namespace,
               COALESCE(client.source_workload, server.source_workload) AS source_workload,
               CASE WHEN client.source_workload IS NULL THEN server.source_address END AS source_address,
               COALESCE(server.destination_service, client.destination_service) AS destination_service,
               COALESCE(server.destination_namespace, client.destination_namespace) AS destination_namespace,
               COALESCE(server.destination_workload, client.destination_workload) AS destination_workload,
               server.upstream_cluster AS server_cluster,
               COALESCE(NULLIF(server.mtls, 'unknown'), NULLIF(client.mtls, 'unknown'), 'unknown') AS mtls,
               sum(CASE WHEN client.mtls = 'unknown' AND server.mtls IN ('mutual', 'plaintext') THEN 1 ELSE 0 END)
                   AS resolved,
               count(*) AS requests,
               sum(CASE WHEN client.logged THEN (CASE WHEN client.status IS NULL OR client.status >= 500 THEN 1 ELSE 0 END)
                        WHEN server.status IS NULL OR server.status >= 500 THEN 1 ELSE 0 END) AS errors,
               COALESCE(client.duration_ms, server.duration_ms) AS duration_ms
        FROM server FULL OUTER JOIN client
          ON server.request_id = client.request_id AND server.destination_service = client.destination_service
        GROUP BY ALL""",
    # Route attribution written as SQL for the benchmark's configuration (bench/analyzer/
    # bookinfo-policies.yaml): the reviews and ratings VirtualServices have one route each and no match
    # conditions, so a request's route follows from its host; every other host takes Istio's default
    # route. Only NR requests are listed by path, as in the analyzer's report.
    "routes": f"""
        SELECT reporter, source_namespace, source_workload, authority, method, destination_service,
               destination_subset, list_contains(response_flags, 'NR') AS no_route,
               CASE WHEN list_contains(response_flags, 'NR') THEN NULL
                    WHEN split_part(authority, ':', 1) IN ('reviews', 'reviews.default',
                         'reviews.default.svc.cluster.local') THEN 'VirtualService default/reviews #0'
                    WHEN split_part(authority, ':', 1) IN ('ratings', 'ratings.default',
                         'ratings.default.svc.cluster.local') THEN 'VirtualService default/ratings "ratings-default"'
                    ELSE 'default' END AS route,
               CASE WHEN list_contains(response_flags, 'NR') THEN path END AS nr_path,
               count(*) AS requests, {FAILURES}, max(timestamp) AS last_seen, {PERCENTILES}
        FROM requests WHERE {{w}} AND (direction = 'outbound' OR list_contains(response_flags, 'NR'))
        GROUP BY ALL""",
    "services": f"""
        SELECT destination_service, count(*) AS requests, {FAILURES}
        FROM requests WHERE {{w}} AND direction = 'outbound' AND destination_service IS NOT NULL
        GROUP BY destination_service""",
    "retries": """
        SELECT destination_service, method, count(*) AS requests,
               sum(CASE WHEN tries > 1 THEN 1 ELSE 0 END) AS retried, max(tries) AS max_tries
        FROM (SELECT destination_service, method, request_id,
                     greatest(count(*), max(COALESCE(attempts, 1))) AS tries
              FROM requests
              WHERE {w} AND direction = 'inbound' AND destination_service IS NOT NULL AND request_id IS NOT NULL
              GROUP BY destination_service, method, request_id)
        GROUP BY destination_service, method""",
    "bursts": """
        SELECT destination_service, count(*) AS windows, max(errors) AS worst
        FROM (SELECT destination_service, time_bucket(INTERVAL '10 seconds', timestamp) AS bucket, count(*) AS errors
              FROM requests
              WHERE {w} AND direction = 'outbound' AND destination_service IS NOT NULL
                AND (status IS NULL OR status >= 500)
              GROUP BY ALL)
        WHERE errors >= 5 GROUP BY destination_service""",
    "calls": """
        SELECT DISTINCT source_namespace, source_workload, destination_service FROM requests
        WHERE {w} AND direction = 'outbound' AND source_namespace IS NOT NULL AND source_workload IS NOT NULL
          AND destination_service IS NOT NULL""",
    "server_latency": f"""
        SELECT destination_service, count(duration_ms) AS samples, {PERCENTILES} FROM requests
        WHERE {{w}} AND direction = 'inbound' AND destination_service IS NOT NULL GROUP BY destination_service""",
    "endpoints": """
        SELECT destination_service, upstream_host, count(*) AS requests,
               sum(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors
        FROM requests
        WHERE {w} AND direction = 'outbound' AND destination_service IS NOT NULL AND upstream_host IS NOT NULL
        GROUP BY destination_service, upstream_host""",
}


def run(glob, start, end):
    con = duckdb.connect()
    con.execute(f"CREATE VIEW requests AS SELECT * FROM read_parquet('{glob}')")
    window = f"timestamp >= TIMESTAMPTZ '{start}' AND timestamp < TIMESTAMPTZ '{end}'"
    results = {name: con.execute(sql.format(w=window)).fetchall() for name, sql in QUERIES.items()}
    con.close()
    return results


def figures(results):
    """Totals the benchmark compares with meshlens' report."""
    mtls = {"mutual": 0, "plaintext": 0, "unknown": 0}
    for row in results["mtls"]:
        # The analyzer skips rows that name neither a destination service nor a workload.
        if row[3] is None and row[5] is None:
            continue
        mtls[row[7]] += row[9]
    return {
        "mtls_requests": sum(mtls.values()),
        **mtls,
        "client_requests": sum(row[1] for row in results["services"]),
        "server_requests": sum(row[2] for row in results["retries"]),
        "retried": sum(row[3] for row in results["retries"]),
    }


def main():
    glob = sys.argv[1]
    con = duckdb.connect()
    threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
    con.close()
    print(f"DuckDB {duckdb.__version__}, {threads} threads", file=sys.stderr)
    for line in sys.stdin:
        start, end = line.split()
        began, cpu = time.perf_counter(), time.process_time()
        results = run(glob, start, end)
        seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - cpu
        print(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds, "figures": figures(results)}), flush=True)


if __name__ == "__main__":
    main()
