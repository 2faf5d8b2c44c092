-- wrk script for single claims: every request carries a distinct user_id, and done() prints one
-- machine-readable line so bench/wrk.py need not parse wrk's human report.
-- Usage: wrk ... -s claims.lua URL -- RUN_PREFIX
-- RUN_PREFIX keeps user ids distinct across runs against the same list (a repeat would be a
-- cheaper 200, not a fresh claim).

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = (args[1] or "u") .. "-" .. tostring(tid) .. "-"
  headers = {["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  local body = '{"user_id":"' .. prefix .. counter .. '"}'
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeout_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
