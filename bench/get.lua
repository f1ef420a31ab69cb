-- wrk script: GET /orders/{id} for ids picked at random from the file
-- BENCH_IDS names (one id a line). Each thread reads the file once and draws
-- a sequence of its own, so the reads spread over every order.
local threads = 0

setup = function(thread)
  threads = threads + 1
  thread:set("seed", threads)
end

local paths = {}

init = function(args)
  for line in io.lines(os.getenv("BENCH_IDS")) do
    paths[#paths + 1] = "/orders/" .. line
  end
  math.randomseed(seed)
end

request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
