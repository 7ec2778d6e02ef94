-- wrk: POST notifications, each with a body and an Idempotency-Key of its own
-- (wrk -s this.lua URL -- TAG [GAP_MS]). Prints one JSON line: requests, accepted (202),
-- seconds, POST latency p50/p99 in ms. With GAP_MS, each connection waits that long after each
-- answer on average (a paced load) and each message carries its send time, "sent_us=<Unix time in µs>",
-- for the sink's side to measure POST -> arrival.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } herald_timespec;
int clock_gettime(int clock_id, herald_timespec *tp);
]]
local clock = ffi.new("herald_timespec")

local function now_us()
  ffi.C.clock_gettime(0, clock)  -- CLOCK_REALTIME: what file times on the sink's side use
  return tonumber(clock.tv_sec) * 1000000 + math.floor(tonumber(clock.tv_nsec) / 1000)
end
local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  tag = args[1] or "bench"
  gap_ms = tonumber(args[2])
  if gap_ms then
    -- Only when pacing (wrk times every request then). Random pauses averaging GAP_MS: equal
    -- ones would keep the connections in step, sending bursts of one request each.
    math.randomseed(id * 7919 + os.time())
    delay = function() return math.random() * 2 * gap_ms end
  end
  sent, accepted, limited, failed = 0, 0, 0, 0
end

function request()
  sent = sent + 1
  local key = tag .. "-" .. id .. "-" .. sent
  local stamp = ""
  if gap_ms then stamp = " sent_us=" .. string.format("%d", now_us()) end
  local body = '{"recipient":"user' .. (sent % 1000) .. '-' .. id .. '@example.com",'
    .. '"subject":"Your code","message":"Hello, your request ' .. key .. ' is ready.'
    .. stamp .. '"}'
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
