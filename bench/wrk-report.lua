-- Shared by the bench/run.sh scenarios: prints one parseable line at the end of a wrk run.
-- POST scenarios set BENCH_BODY_BYTES (the body is that many 'a' bytes, JSON content type).
local n = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if n > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("a", n)
  wrk.headers["Content-Type"] = "application/json"
end
wrk.headers["Accept"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
