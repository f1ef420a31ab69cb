-- wrk script: POST /orders, cycling over a handful of SKUs.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local skus = { "sku-1", "sku-2", "sku-3", "sku-4", "sku-5", "sku-6", "sku-7", "sku-8" }
local bodies = {}
for i, sku in ipairs(skus) do
  bodies[i] = string.format('{"customer_id":"bench-%d","items":[{"sku":"%s","quantity":1}]}', i, sku)
end
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n % #bodies) + 1])
end
