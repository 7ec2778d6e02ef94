-- wrk: POST /api/v1/notifications/batch, each request the same batch of N notifications
-- (wrk -s this.lua URL -- N). No Idempotency-Key: every request stores N new notifications.
-- Prints one JSON line: requests, accepted (202 requests), seconds, request latency p50/p99 ms.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(args[1] or "1000")
  local items = {}
  for i = 1, n do
    items[i] = '{"recipient":"user' .. i .. '@example.com","subject":"Your code",'
      .. '"message":"Hello, your request ' .. i .. ' is ready."}'
  end
  body = '{"items":[' .. table.concat(items, ",") .. ']}'
  accepted = 0
end

function request()
  return wrk.format("POST", "/api/v1/notifications/batch",
    {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, b)
  if status == 202 then accepted = accepted + 1 end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do total = total + thread:get("accepted") end
  io.write(string.format(
    '{"requests": %d, "accepted": %d, "seconds": %.3f, "p50_ms": %.1f, "p99_ms": %.1f}\n',
    summary.requests, total, summary.duration / 1e6,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
