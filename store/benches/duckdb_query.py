"""DuckDB side of the store benchmark: runs the group-by-edge latency query over the store's Parquet
files and prints the median wall time in seconds (last line of stdout).

Usage: python duckdb_query.py 'DIR/parquet/requests/**/*.parquet' RUNS
"""
import statistics
import sys
import time

import duckdb

glob, runs = sys.argv[1], int(sys.argv[2])
# approx_quantile is DuckDB's name for an approximate percentile (t-digest, as DataFusion's
# approx_percentile_cont).
query = f"""
SELECT source_workload, destination_service, count(*) AS requests,
       approx_quantile(duration_ms, 0.5) AS p50, approx_quantile(duration_ms, 0.99) AS p99
FROM read_parquet('{glob}')
GROUP BY 1, 2
"""
con = duckdb.connect()
edges = len(con.execute(query).fetchall())  # warm-up, as on the store side
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(f"  DuckDB {duckdb.__version__}, {threads} threads, {edges} edges", file=sys.stderr)
times = []
for _ in range(runs):
    start = time.perf_counter()
    con.execute(query).fetchall()
    times.append(time.perf_counter() - start)
print(statistics.median(times))
