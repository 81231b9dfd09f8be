-- wrk script used by scripts/bench-registry.sh.
--
-- It sends wrk's default request (a GET on the URL, plus the -H headers given
-- on the command line) and, when the run ends, prints machine-readable
-- key=value lines after wrk's own human-readable summary.
--
-- wrk's errors.status counts responses with a status code > 399;
-- connect/read/write/timeout are socket-level errors.

done = function(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then
    rps = summary.requests / secs
  end
  io.write(string.format("wrk_requests=%d\n", summary.requests))
  io.write(string.format("wrk_duration_s=%.3f\n", secs))
  io.write(string.format("wrk_rps=%.2f\n", rps))
  io.write(string.format("wrk_bytes=%d\n", summary.bytes))
  io.write(string.format("wrk_err_status=%d\n", e.status))
  io.write(string.format("wrk_err_connect=%d\n", e.connect))
  io.write(string.format("wrk_err_read=%d\n", e.read))
  io.write(string.format("wrk_err_write=%d\n", e.write))
  io.write(string.format("wrk_err_timeout=%d\n", e.timeout))
  io.write(string.format("wrk_lat_mean_ms=%.3f\n", latency.mean / 1000))
  io.write(string.format("wrk_lat_p50_ms=%.3f\n", latency:percentile(50) / 1000))
  io.write(string.format("wrk_lat_p99_ms=%.3f\n", latency:percentile(99) / 1000))
  io.write(string.format("wrk_lat_max_ms=%.3f\n", latency.max / 1000))
end
