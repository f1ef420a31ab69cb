-- wrk script: POST /orders, cycling over a handful of SKUs and customers.
-- The requests are built once: building one per request in Lua doubled
-- wrk's user CPU time, taken from the two cores orderflow shares with it.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local requests = {}
for i = 1, 8 do
  local body = string.format('{"customer_id":"bench-%d","items":[{"sku":"sku-%d","quantity":1}]}', i, i)
  requests[i] = wrk.format(nil, nil, nil, body)
end
local n = 0
request = function()
  n = n + 1
  return requests[(n % #requests) + 1]
end
