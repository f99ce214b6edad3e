-- wrk script for bench/proxy.sh.
--
-- Environment:
--   BENCH_PATH  request target; an absolute-form URI ("http://svc:8080/") makes wrk act as an HTTP_PROXY client
--   BENCH_HOST  Host header
--   BENCH_RATE  requests per second for the whole run; 0 or unset = as fast as possible (saturation)
--
-- Fixed-rate mode (BENCH_RATE > 0): wrk 4 has no rate limiter (wrk2 has, but is not packaged by Debian), so
-- this script paces it with wrk's delay() hook. Send slots are 1/RATE apart on one schedule shared by all
-- connections of the thread (CLOCK_MONOTONIC via LuaJIT's FFI); a connection that is free takes the next slot
-- and sleeps until it (wrk's timers have 1 ms resolution, so at 1,000 req/s sends land on every
-- millisecond). With enough connections (bench/proxy.sh uses 16 for 1,000 req/s, i.e. a 16 ms horizon) the
-- schedule is open-loop: a slow response does not delay the next send. Latency is wrk's own measurement, in
-- microseconds, from the write of the request to the end of the response. Unlike wrk2, a send that misses
-- its slot is not corrected for coordinated omission; such sends are counted as "late" (more than 1 ms past
-- the slot) and reported, so a run where they matter is visible.

local path = os.getenv("BENCH_PATH") or "/"
local host = os.getenv("BENCH_HOST")
local rate = tonumber(os.getenv("BENCH_RATE") or "0") or 0

wrk.method = "GET"
wrk.path = path
if host and host ~= "" then
   wrk.headers["Host"] = host
end

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

if rate > 0 then
   local ffi = require("ffi")
   ffi.cdef [[
      typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
      int clock_gettime(int clk_id, bench_timespec *tp);
   ]]
   local ts = ffi.new("bench_timespec")
   local function now_us()
      ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
      return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
   end

   local interval -- microseconds between sends, for this thread's share of the rate
   local next_slot
   late = 0

   function init(args)
      local nthreads = tonumber(args[1] or "1") or 1
      interval = 1e6 * nthreads / rate
   end

   function delay()
      local now = now_us()
      if next_slot == nil then
         next_slot = now
      end
      local slot = next_slot
      next_slot = next_slot + interval
      local wait = slot - now
      if wait < -1000 then
         late = late + 1
      end
      if wait <= 0 then
         return 0
      end
      return math.floor(wait / 1000 + 0.5)
   end
end

function done(summary, latency, requests)
   local late_total = 0
   for _, t in ipairs(threads) do
      late_total = late_total + (tonumber(t:get("late")) or 0)
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d socket_errors=%d non2xx=%d late=%d " ..
      "p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status, late_total,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
      latency.max, latency.mean))
end
