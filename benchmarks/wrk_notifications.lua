-- wrk: POST notifications, each with a body and an Idempotency-Key of its own
-- (wrk -s this.lua URL -- TAG). Prints one JSON line: requests, accepted (202), seconds,
-- POST latency p50/p99 in ms.
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  tag = args[1] or "bench"
  sent, accepted, limited, failed = 0, 0, 0, 0
end

function request()
  sent = sent + 1
  local key = tag .. "-" .. id .. "-" .. sent
  local body = '{"recipient":"user' .. (sent % 1000) .. '-' .. id .. '@example.com",'
    .. '"subject":"Your code","message":"Hello, your request ' .. key .. ' is ready."}'
  return wrk.format("POST", "/api/v1/notifications",
    {["Content-Type"] = "application/json", ["Idempotency-Key"] = key}, body)
end

function response(status, headers, body)
  if status == 202 then accepted = accepted + 1
  elseif status == 429 then limited = limited + 1
  elseif status >= 500 then failed = failed + 1 end
end

function done(summary, latency, requests)
  local total, total_limited, total_failed = 0, 0, 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("accepted")
    total_limited = total_limited + thread:get("limited")
    total_failed = total_failed + thread:get("failed")
  end
  io.write(string.format(
    '{"requests": %d, "accepted": %d, "limited": %d, "failed": %d, "seconds": %.3f, '
    .. '"p50_ms": %.1f, "p99_ms": %.1f}\n',
    summary.requests, total, total_limited, total_failed, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
