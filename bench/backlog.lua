-- wrk script for bench/backlog: POST /orders as bench/post.lua does, one
-- request in BACKLOG_KEY_EVERY (default 4) with an Idempotency-Key of its own,
-- and each thread stops sending once it has had BACKLOG_PER_THREAD answers, so
-- a run places a given number of orders (wrk itself waits out its duration:
-- bench/backlog interrupts it once the orders are in).
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local plain, bodies = {}, {}
for i = 1, 8 do
  bodies[i] = string.format('{"customer_id":"bench-%d","items":[{"sku":"sku-%d","quantity":1}]}', i, i)
  plain[i] = wrk.format(nil, nil, nil, bodies[i])
end
local n, answers, quota, every = 0, 0, 0, 4
init = function(args)
  quota = tonumber(os.getenv("BACKLOG_PER_THREAD") or "1000")
  every = tonumber(os.getenv("BACKLOG_KEY_EVERY") or "4")
end
request = function()
  n = n + 1
  local i = (n % 8) + 1
  if every > 0 and n % every == 0 then
    -- Only these are built per request: Lua time is taken from the two cores
    -- the server shares with wrk.
    local headers = { ["Content-Type"] = "application/json", ["Idempotency-Key"] = "backlog-" .. tid .. "-" .. n }
    return wrk.format(nil, nil, headers, bodies[i])
  end
  return plain[i]
end
response = function(status, headers, body)
  answers = answers + 1
  if answers >= quota then wrk.thread:stop() end
end
