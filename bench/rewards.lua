-- wrk script for campaign rewards, and for the direct claims they are compared with: every
-- request carries a distinct user_id, as in claims.lua, and each thread counts the replies by
-- status, so a `200` (a repeat, or `{"rewarded": false}`) is seen, not taken for a reward.
-- done() prints the same machine-readable line as claims.lua plus those counts.
-- Usage: wrk ... -s rewards.lua URL -- RUN_PREFIX
-- Both sides of scenario f run this script, so wrk does the same work for each.

local threads = {}
local counter = 1

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  prefix = (args[1] or "u") .. "-" .. tostring(tid) .. "-"
  headers = {["Content-Type"] = "application/json"}
  created = 0 -- 201: a fresh reward or claim
  repeated = 0 -- 200: a repeat, or a reward refused
end

function request()
  counter = counter + 1
  local body = '{"user_id":"' .. prefix .. counter .. '"}'
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status == 201 then
    created = created + 1
  elseif status == 200 then
    repeated = repeated + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local created, repeated = 0, 0
  for _, thread in ipairs(threads) do
    created = created + thread:get("created")
    repeated = repeated + thread:get("repeated")
  end
  io.write(string.format(
    'BENCH_WRK {"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeout_errors":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"status_201":%d,"status_200":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean, created, repeated))
end
